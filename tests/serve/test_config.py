"""config.py: the shipped serve.yaml parses, flags override it, and bad knobs name their flag."""

from __future__ import annotations

from pathlib import Path

import pytest

import revmux
from revmux.errors import ConfigError
from revmux.serve.config import ServeConfig

SHIPPED = sorted((Path(revmux.__file__).parent / "configs").glob("serve*.yaml"))


def test_a_serve_yaml_is_shipped():
    assert SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_serve_yaml_parses(path):
    cfg = ServeConfig.from_yaml(path)
    assert cfg.host == "127.0.0.1" and cfg.api_key is None


def test_flags_override_the_yaml(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("port: 9000\nmax_queue_delay_ms: 2\nwidths: [1, 2]\nwidth_thresholds: {'2': 5}\n")
    cfg = ServeConfig.from_yaml(path, {"port": 9100, "max_batch_groups": None, "widths": "1,4"})
    assert (cfg.port, cfg.max_queue_delay_ms, cfg.widths, cfg.width_thresholds) == (9100, 2.0, [1, 4], {2: 5})
    assert cfg.max_batch_groups == ServeConfig().max_batch_groups


def test_defaults_bind_loopback_and_redact_the_key():
    assert ServeConfig().host == "127.0.0.1"
    assert ServeConfig(api_key="k").to_dict()["api_key"] == "***"


@pytest.mark.parametrize(
    ("knobs", "flag"),
    [
        ({"max_queue_delay_ms": -1.0}, "--max-queue-delay-ms"),
        ({"max_batch_groups": 0}, "--max-batch-groups"),
        ({"max_queue_size": 0}, "--max-queue-size"),
        ({"request_timeout_ms": 0.0}, "--request-timeout-ms"),
        ({"drain_timeout_s": -1.0}, "--drain-timeout-s"),
        ({"max_batch_size": 0}, "--max-batch-size"),
        ({"max_payload_bytes": 0}, "--max-payload-bytes"),
        ({"port": 70000}, "--port"),
        ({"fallback_margin": 2.0}, "--fallback-margin"),
        ({"widths": "1,x"}, "--widths"),
        ({"width_thresholds": "2=5"}, "--width-thresholds"),
        ({"log_level": "loud"}, "--log-level"),
        ({"api_key": " "}, "--api-key"),
        ({"max_length": 1}, "--max-length"),
    ],
)
def test_bad_knobs_name_the_flag(knobs, flag):
    with pytest.raises(ConfigError, match=flag):
        ServeConfig.from_dict(knobs)


def test_unknown_and_missing_config_files(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("max_queue_delay: 5\n")
    with pytest.raises(ConfigError, match="unknown keys \\['max_queue_delay'\\]"):
        ServeConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        ServeConfig.from_yaml(tmp_path / "missing.yaml")


def test_max_batch_size_above_the_queue_is_refused():
    with pytest.raises(ConfigError, match="--max-batch-size 64 is above --max-queue-size 32"):
        ServeConfig(max_queue_size=32)
    assert ServeConfig(max_queue_size=32, max_batch_size=32).max_batch_size == 32
    with pytest.raises(ConfigError, match="--fallback-max-per-step"):
        ServeConfig(fallback_max_per_step=-1)
