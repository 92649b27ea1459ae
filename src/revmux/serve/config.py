"""ServeConfig: the server's knobs (docs/serving.md), filled from `--config serve.yaml`, then flags.

What it is: one typed dataclass checked in `__post_init__`, whose errors name the flag
(`--max-queue-delay-ms must be >= 0, got -1`). YAML keys are the field names; `revmux serve` derives one
flag per field (the same name with dashes, help from the field's metadata) through `config_flags`.
What it is not: the adapters' own config (MuxConfig), which the pack supplies.

Width policy: `widths` restricts the pack's widths (None: all of them; `[1]`: never multiplex);
`width_thresholds` maps a width N to the queue depth from which the policy may use it. By default
N is used once the queue holds more than one full forward pass at the next smaller width
(`max_batch_groups * previous N`), so light traffic runs at N = 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revmux.config import config_from_dict, dashed, load_config
from revmux.config import flag_meta as _help
from revmux.errors import ConfigError
from revmux.serve.batcher import ISOLATIONS

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
QUANTIZE_MODES = ("none", "int8", "bf16")  # revmux.backbones.quantize's, without importing torch here


@dataclass
class ServeConfig:
    """Everything `revmux serve` can be told, besides which adapters to load."""

    host: str = field(default="127.0.0.1", metadata=_help("Address to bind"))
    port: int = field(default=8080, metadata=_help("Port"))
    api_key: str | None = field(
        default=None,
        metadata=_help("Require `Authorization: Bearer KEY`", "unset: no key", envvar="REVMUX_API_KEY"),
    )
    max_queue_delay_ms: float = field(
        default=5.0, metadata=_help("How long the oldest request waits for partners")
    )
    max_batch_groups: int = field(default=32, metadata=_help("Composites per forward pass"))
    max_queue_size: int = field(default=1024, metadata=_help("Queued inputs beyond which requests get 429"))
    request_timeout_ms: float = field(
        default=30_000.0, metadata=_help("Per-request deadline, also while a forward pass runs; 504 past it")
    )
    drain_timeout_s: float = field(
        default=30.0, metadata=_help("SIGTERM: answer in-flight work and exit within this")
    )
    max_batch_size: int = field(default=64, metadata=_help("Inputs per /predict request, 413 beyond"))
    max_payload_bytes: int = field(
        default=1_048_576, metadata=_help("Request body size, 413 beyond", "1048576 = 1 MiB")
    )
    max_length: int | None = field(
        default=None, metadata=_help("Tokens per input", "unset: the adapters' max_length")
    )
    widths: list[int] | None = field(
        default=None, metadata=_help("Widths N to use, e.g. 1,2,4 (1: no mux)", "unset: every width loaded")
    )
    width_thresholds: dict[int, int] | None = field(
        default=None,
        metadata=_help(
            "Queue depth from which each N is used, e.g. 2:33,4:65",
            "unset: past a full pass at the next smaller N",
        ),
    )
    fallback_margin: float = field(
        default=0.0, metadata=_help("Re-run at N=1 when top-1 minus top-2 prob is below (0: off)")
    )
    fallback_max_per_step: int | None = field(
        default=None,
        metadata=_help("Fallback re-runs per step at most, lowest margins first", "unset: all of them"),
    )
    isolation: str = field(
        default="none",
        metadata=_help("none or tenant (tenant: a composite only ever holds requests of one tenant)"),
    )
    api_keys_file: str | None = field(
        default=None,
        metadata=_help(
            'One "TENANT KEY" per line: bearer keys, each naming its tenant', "unset: no tenant keys"
        ),
    )
    tenant_header: str | None = field(
        default=None,
        metadata=_help("Without keys: the request header that names the tenant", "unset: no header"),
    )
    length_aware: bool = field(default=True, metadata=_help("Group requests of similar token counts"))
    device: str = field(default="cpu", metadata=_help("cpu or cuda"))
    quantize: str = field(
        default="none",
        metadata=_help("Frozen backbone in none, int8 (torch dynamic, CPU) or bf16; adapters fp32"),
    )
    threads: int | None = field(
        default=None, metadata=_help("torch.set_num_threads", "unset: torch's choice")
    )
    log_level: str = field(default="info", metadata=_help("critical|error|warning|info|debug"))

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
        if self.quantize not in QUANTIZE_MODES:
            raise ConfigError(
                f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {self.quantize!r}. Use int8 (torch "
                "dynamic int8 on the backbone's Linear layers, CPU) or bf16 (the backbone in bfloat16)."
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


def _check_int(value: Any, name: str, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{dashed(name)} must be an integer {bound}, got {value!r}.")


def _check_number(value: Any, name: str, low: float, *, exclusive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < low or (exclusive and value == low):
        raise ConfigError(
            f"{dashed(name)} must be a number {'>' if exclusive else '>='} {low:g}, got {value!r}."
        )
