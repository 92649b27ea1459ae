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

from revmux.config import load_yaml
from revmux.errors import ConfigError

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
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}; got {self.log_level!r}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "serve config") -> ServeConfig:
        """Build from a mapping (YAML); width_thresholds keys and widths may be strings ("2")."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source} has unknown keys {unknown}; expected only {sorted(names)}.")
        values = dict(data)
        if isinstance(values.get("widths"), str):
            values["widths"] = parse_widths(values["widths"])
        if isinstance(values.get("width_thresholds"), str):
            values["width_thresholds"] = parse_thresholds(values["width_thresholds"])
        elif isinstance(values.get("width_thresholds"), dict):
            values["width_thresholds"] = {
                _to_int(k, "width_thresholds"): _to_int(v, "width_thresholds")
                for k, v in values["width_thresholds"].items()
            }
        for name in ("max_queue_delay_ms", "request_timeout_ms", "drain_timeout_s", "fallback_margin"):
            if isinstance(values.get(name), int) and not isinstance(values[name], bool):
                values[name] = float(values[name])
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from {source})") from exc

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> ServeConfig:
        """The YAML file's values, then `overrides` (flags given, None meaning not given)."""
        values = load_yaml(path) if path else {}
        values |= {k: v for k, v in (overrides or {}).items() if v is not None}
        return cls.from_dict(values, source=f"--config {path}" if path else "flags")

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The knobs as a JSON-able dict; the API key is never echoed."""
        data = dataclasses.asdict(self)
        if redact:
            data["api_key"] = "***" if self.api_key else None
        return data


def parse_widths(text: str) -> list[int]:
    """ "1,2,4" -> [1, 2, 4], or ConfigError naming --widths."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--widths takes comma-separated integers like 1,2,4; got {text!r}.") from None


def parse_thresholds(text: str) -> dict[int, int]:
    """ "2:32,4:64" -> {2: 32, 4: 64}, or ConfigError naming --width-thresholds."""
    out: dict[int, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        width, sep, depth = part.partition(":")
        if not sep:
            raise ConfigError(f"--width-thresholds takes N:depth pairs like 2:32,4:64; got {text!r}.")
        out[_to_int(width, "width_thresholds")] = _to_int(depth, "width_thresholds")
    return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _to_int(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{_flag(name)} takes integers; got {value!r}.") from None


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
