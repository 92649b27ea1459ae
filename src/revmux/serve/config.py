"""ServeConfig: the server's knobs (docs/serving.md), filled from `--config serve.yaml`, then flags.

What it is: one typed dataclass checked in `__post_init__`, whose errors name the flag
(`--max-queue-delay-ms must be >= 0, got -1`). YAML keys are the field names; flags are the same names
with dashes. What it is not: the adapters' own config (MuxConfig), which the pack supplies.

Width policy: `widths` restricts the pack's widths (None: all of them; `[1]`: never multiplex);
`width_thresholds` maps a width N to the queue depth from which the policy may use it. By default
N is used once the queue holds more than one full forward pass at the next smaller width
(`max_batch_groups * previous N`), so light traffic runs at N = 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revmux.config import config_from_dict, load_config
from revmux.errors import ConfigError
from revmux.serve.batcher import ISOLATIONS

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass
class ServeConfig:
    """Everything `revmux serve` can be told, besides which adapters to load."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_queue_delay_ms: float = 5.0  # how long the oldest request may wait for partners
    max_batch_groups: int = 32  # composites per forward pass
    max_queue_size: int = 1024  # queued inputs beyond which a request gets 429
    request_timeout_ms: float = 30_000.0  # per-request deadline, also while a forward pass runs
    drain_timeout_s: float = 30.0  # SIGTERM: finish in-flight work and exit within this
    max_batch_size: int = 64  # inputs in one /predict request
    max_payload_bytes: int = 1_048_576  # request body size
    max_length: int | None = None  # tokens per input; None: the adapters' max_length
    widths: list[int] | None = None  # None: every width of the pack
    width_thresholds: dict[int, int] | None = None  # width -> queue depth from which it may be used
    fallback_margin: float = 0.0  # re-run at N = 1 when top-1 minus top-2 probability < this (0: off)
    fallback_max_per_step: int | None = None  # re-runs per step at most, lowest margins first (None: all)
    isolation: str = "none"  # "tenant": a composite only ever holds requests of one tenant
    api_keys_file: str | None = None  # one "TENANT KEY" per line: bearer keys, each naming its tenant
    tenant_header: str | None = None  # without keys: the request header that names the tenant
    length_aware: bool = True  # group requests of similar token counts
    device: str = "cpu"
    threads: int | None = None  # torch.set_num_threads
    log_level: str = "info"

    def __post_init__(self) -> None:
        _check_int(self.port, "port", 0, 65535)
        for name in ("max_batch_groups", "max_queue_size", "max_batch_size", "max_payload_bytes"):
            _check_int(getattr(self, name), name, 1)
        for name in ("max_queue_delay_ms", "fallback_margin"):
            _check_number(getattr(self, name), name, 0.0)
        for name in ("request_timeout_ms", "drain_timeout_s"):
            _check_number(getattr(self, name), name, 0.0, exclusive=True)
        if self.fallback_margin > 1.0:
            raise ConfigError(
                f"--fallback-margin is a probability margin in [0, 1], got {self.fallback_margin}."
            )
        if self.fallback_max_per_step is not None:
            _check_int(self.fallback_max_per_step, "fallback_max_per_step", 0)
        if self.max_batch_size > self.max_queue_size:
            raise ConfigError(
                f"--max-batch-size {self.max_batch_size} is above --max-queue-size {self.max_queue_size}: "
                "a request that large could never be queued (every one would get 429). Lower "
                "--max-batch-size or raise --max-queue-size."
            )
        if self.max_length is not None:
            _check_int(self.max_length, "max_length", 2)
        if self.threads is not None:
            _check_int(self.threads, "threads", 1)
        if self.widths is not None:
            if not isinstance(self.widths, list) or not self.widths:
                raise ConfigError(f"--widths takes widths like 1,2,4; got {self.widths!r}.")
            for w in self.widths:
                _check_int(w, "widths", 1)
        if self.width_thresholds is not None:
            if not isinstance(self.width_thresholds, dict):
                raise ConfigError(
                    f"--width-thresholds takes N:depth pairs like 2:32,4:64; got {self.width_thresholds!r}."
                )
            for w, depth in self.width_thresholds.items():
                _check_int(w, "width_thresholds", 1)
                _check_int(depth, "width_thresholds", 0)
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"--host must be an address like 127.0.0.1, got {self.host!r}.")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigError("--api-key must be a non-empty string (or leave it unset).")
        if self.isolation not in ISOLATIONS:
            raise ConfigError(f"--isolation must be one of {', '.join(ISOLATIONS)}, got {self.isolation!r}.")
        if self.api_key is not None and self.api_keys_file is not None:
            raise ConfigError("pass --api-key (one key) or --api-keys-file (a key per tenant), not both.")
        if self.isolation == "tenant" and self.api_keys_file is None and not self.tenant_header:
            raise ConfigError(
                "--isolation tenant needs to know who sent each request: pass --api-keys-file FILE (one "
                "'TENANT KEY' per line) or --tenant-header NAME (a header clients set)."
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}; got {self.log_level!r}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "serve config") -> ServeConfig:
        """Build from a mapping (YAML, builder arguments); strings such as "2", "1,2,4" or "2:32,4:64" are
        converted to the fields' types by the shared loader."""
        return config_from_dict(cls, data, source=source)

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> ServeConfig:
        """The YAML file's values, then `overrides` (flags given, None meaning not given)."""
        return load_config(cls, path, overrides)

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The knobs as a JSON-able dict; the API key is never echoed."""
        data = dataclasses.asdict(self)
        if redact:
            data["api_key"] = "***" if self.api_key else None
        return data


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_int(value: Any, name: str, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{_flag(name)} must be an integer {bound}, got {value!r}.")


def _check_number(value: Any, name: str, low: float, *, exclusive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < low or (exclusive and value == low):
        raise ConfigError(
            f"{_flag(name)} must be a number {'>' if exclusive else '>='} {low:g}, got {value!r}."
        )
