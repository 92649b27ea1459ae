"""`revmux serve` flags come from ServeConfig's fields (config_flags); the cli package stays thin."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest
import typer
import yaml
from typer.main import get_command
from typer.testing import CliRunner

import revmux.cli
from revmux.cli import app
from revmux.config import config_from_dict
from revmux.config_flags import config_flags, flag_names
from revmux.serve.config import ServeConfig

# field -> (flag value as typed, the field's value): one non-default setting per ServeConfig knob
SETTINGS = {
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("9100", 9100),
    "api_key": ("secret", "secret"),
    "max_queue_delay_ms": ("2", 2.0),
    "max_batch_groups": ("8", 8),
    "max_queue_size": ("99", 99),
    "request_timeout_ms": ("1500", 1500.0),
    "drain_timeout_s": ("3", 3.0),
    "max_batch_size": ("16", 16),
    "max_payload_bytes": ("2048", 2048),
    "max_length": ("32", 32),
    "widths": ("1,2", [1, 2]),
    "width_thresholds": ("2:33,4:65", {2: 33, 4: 65}),
    "fallback_margin": ("0.1", 0.1),
    "fallback_max_per_step": ("3", 3),
    "isolation": ("tenant", "tenant"),
    "api_keys_file": ("keys.txt", "keys.txt"),
    "tenant_header": ("X-Tenant", "X-Tenant"),
    "length_aware": (False, False),
    "device": ("cuda", "cuda"),
    "quantize": ("int8", "int8"),
    "threads": ("2", 2),
    "log_level": ("debug", "debug"),
}
COMPANIONS = {"isolation": {"tenant_header": "X-Tenant"}}  # knobs that need another one to be valid


def _serve_options() -> dict[str, list[str]]:
    """param name -> its option strings, read from the click command typer builds for `revmux serve`."""
    serve = get_command(app).commands["serve"]
    return {p.name: [*p.opts, *p.secondary_opts] for p in serve.params}


def test_every_serve_config_field_is_a_serve_flag():
    options = _serve_options()
    for name, flag in flag_names(ServeConfig).items():
        assert flag in options.get(name, []), f"ServeConfig.{name} has no {flag} on `revmux serve`"
    assert set(SETTINGS) == {f.name for f in dataclasses.fields(ServeConfig)}  # a new knob needs a row here


def test_the_flags_users_rely_on_keep_their_names():
    flags = {opt for opts in _serve_options().values() for opt in opts}
    for flag in ("--max-queue-delay-ms", "--widths", "--width-thresholds", "--api-key", "--no-length-aware"):
        assert flag in flags
    assert {"--adapter", "--pack", "--model", "--config", "--ray", "--replicas", "--max-replicas"} <= flags


@pytest.fixture
def started(monkeypatch):
    """The ServeConfig `revmux serve` would start with (the engine and the server are stubbed)."""
    import revmux.serve.server as server

    seen: list[ServeConfig] = []
    monkeypatch.setattr(server, "build_engine", lambda cfg, **kw: seen.append(cfg))
    monkeypatch.setattr(server, "run_server", lambda engine, cfg: {"accepted": 0, "answered": 0})
    monkeypatch.delenv("REVMUX_API_KEY", raising=False)

    def run(*args: str) -> ServeConfig:
        result = CliRunner().invoke(app, ["serve", "--adapter", "ADAPTER", *args])
        assert result.exit_code == 0, result.output
        return seen.pop()

    return run


def _as_flag(name: str, typed) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(typed, bool):
        return [flag if typed else "--no-" + flag[2:]]
    return [flag, typed]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_yaml_key_and_its_flag_set_the_same_field(name, started, tmp_path):
    typed, value = SETTINGS[name]
    companions = COMPANIONS.get(name, {})
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({name: typed} | companions))
    from_yaml = started("--config", str(path))
    from_flag = started(*_as_flag(name, typed), *[a for k, v in companions.items() for a in _as_flag(k, v)])
    assert getattr(from_yaml, name) == getattr(from_flag, name) == value
    assert value != getattr(ServeConfig(), name)


def test_flags_override_the_yaml_and_the_api_key_reads_its_env_var(started, tmp_path, monkeypatch):
    path = tmp_path / "serve.yaml"
    path.write_text("port: 9000\nwidths: [1, 4]\nmax_batch_groups: 4\n")
    cfg = started("--config", str(path), "--widths", "1,2", "--port", "9001")
    assert (cfg.port, cfg.widths, cfg.max_batch_groups) == (9001, [1, 2], 4)
    monkeypatch.setenv("REVMUX_API_KEY", "from-env")
    assert started().api_key == "from-env"


def test_a_bad_list_flag_names_itself():
    result = CliRunner().invoke(app, ["serve", "--adapter", "A", "--widths", "1,x"])
    assert result.exit_code == 2 and "--widths" in result.output


@dataclass
class _Knobs:
    """A test-only config: a scalar, a list and a dict field, one with an env var and a spelled default."""

    rate: float = field(default=0.5, metadata={"help": "a rate"})
    sizes: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "sizes"})
    table: dict[int, int] | None = field(default=None, metadata={"help": "n:depth", "default": "unset: auto"})
    token: str | None = field(default=None, metadata={"help": "a token", "envvar": "REVMUX_TEST_TOKEN"})


def test_config_flags_offers_lists_and_dicts_as_text_the_loader_converts(monkeypatch):
    got: list[_Knobs] = []
    demo = typer.Typer()

    @demo.command()
    @config_flags(_Knobs)
    def run(name: Annotated[str, typer.Option()] = "x", overrides: dict | None = None) -> None:
        got.append(config_from_dict(_Knobs, overrides or {}, source="flags"))

    @demo.command()
    def other() -> None:  # two commands: `run` is a subcommand, as in `revmux`
        """Unused."""

    monkeypatch.delenv("REVMUX_TEST_TOKEN", raising=False)
    result = CliRunner().invoke(demo, ["run", "--sizes", "4,8", "--table", "2:3"])
    assert result.exit_code == 0, result.output
    assert (got[-1].sizes, got[-1].table, got[-1].rate, got[-1].token) == ([4, 8], {2: 3}, 0.5, None)
    monkeypatch.setenv("REVMUX_TEST_TOKEN", "t")
    assert CliRunner().invoke(demo, ["run"]).exit_code == 0 and got[-1].token == "t"
    text = " ".join(CliRunner().invoke(demo, ["run", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "(default 1,2)" in text and "(default unset: auto)" in text and "(default 0.5)" in text


CLI_DIR = Path(revmux.cli.__file__).parent


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*.py")), ids=lambda p: p.name)
def test_cli_modules_and_functions_stay_short(path):
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") < 400
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef):
            assert node.end_lineno - node.lineno + 1 <= 80, f"{path.name}:{node.name} is long"


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "revmux.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == revmux.__version__


def test_train_summary_names_the_kept_epochs_hold_out_measures(tmp_path):
    from revmux.cli.train import _kept_summary
    from revmux.train.trainer import TrainResult

    history = [
        {"epoch": 1, "holdout_accuracy": 0.5, "holdout_agreement": 0.6, "holdout_kl": 0.25},
        {"epoch": 2, "holdout_accuracy": 0.75, "holdout_agreement": 0.875, "holdout_kl": 0.0625},
    ]
    result = TrainResult(tmp_path, 2, 0.75, history, 2, 12.0, 1.0, 1234)
    line = _kept_summary(result)
    assert "kept epoch 2 of 2: hold-out accuracy 75.00%" in line
    assert "agreement with the teacher 87.50%, KL to the teacher 0.0625" in line and "1,234 adapter" in line
    older = TrainResult(tmp_path, 1, 0.5, [{"epoch": 1, "holdout_accuracy": 0.5}], 1, 1.0, 0.0, 10)
    assert "agreement" not in _kept_summary(older) and "KL" not in _kept_summary(older)
