"""MuxConfig (saved as `mux_config.json` beside the weights) and the one loader every config uses.

`config_from_dict` builds any config dataclass (MuxConfig, TrainConfig, ServeConfig, the Ray options)
from YAML, JSON or `key=value` strings: unknown keys are refused, values converted to the fields'
types, and errors name the flag.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from revmux.errors import CheckpointError, ConfigError, RevmuxError

T = TypeVar("T")

FORMAT_VERSION = 1
CONFIG_NAME = "mux_config.json"
WEIGHTS_NAME = "mux_model.safetensors"
# One default per knob, shared by the library, `revmux train`, `revmux bench` and the server.
DEFAULT_KIND = "revmux"
DEFAULT_N = 2
DEFAULT_K = 2
DEFAULT_MAX_LENGTH = 128  # tokens per request (longer ones are truncated)


@dataclass
class MuxConfig:
    """What an adapter checkpoint is: the mux kind and its options, N, k, and the backbone it was trained on.

    `d_sub` = hidden_size // n is the width of one request's slot in the composite. `options` holds every
    field of the kind's options dataclass (e.g. `RevMUX.Options`), resolved when the adapter was made, so a
    later change of a default never changes a saved adapter.
    """

    kind: str
    n: int
    k: int
    hidden_size: int
    num_layers: int
    backbone_model_type: str
    backbone_path: str = ""
    backbone_hash: str = ""
    label_names: list[str] = field(default_factory=list)
    verbalizer_ids: list[int] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the mux kind's resolved options (see revmux.mux)
    shared_prefix: bool = False  # causal views: a group's common prefix enters the tail as is (see MuxModel)
    max_length: int = DEFAULT_MAX_LENGTH
    task: str | None = None
    prompt: dict[str, Any] | None = None  # revmux.prompting.PromptSpec.to_dict() of a prompted teacher
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"n must be an integer >= 1, got {self.n!r}. Use --n 1 for plain inference.")
        if not isinstance(self.num_layers, int) or self.num_layers < 1:
            raise ConfigError(f"num_layers must be an integer >= 1, got {self.num_layers!r}.")
        if not isinstance(self.k, int) or not 0 <= self.k < self.num_layers:
            raise ConfigError(
                f"k must be an integer with 0 <= k < {self.num_layers} (the backbone's layer count), "
                f"got {self.k!r}. Choose --k between 0 and {self.num_layers - 1}."
            )
        if not isinstance(self.hidden_size, int) or self.hidden_size < self.n:
            raise ConfigError(f"hidden_size must be an integer >= n={self.n}, got {self.hidden_size!r}.")
        if self.format_version != FORMAT_VERSION:
            raise CheckpointError(
                f"mux config format_version is {self.format_version}, this revmux reads version "
                f"{FORMAT_VERSION}. Re-train the adapter or install a matching revmux version."
            )

    @property
    def d_sub(self) -> int:
        """Width of one request's slot: d // N (the composite is zero-padded to d when N does not divide d)."""
        return self.hidden_size // self.n

    @property
    def speedup_bound(self) -> float:
        """The cost-model bound S(k, N) = L / (k + (L - k) / N)."""
        return speedup_bound(self.num_layers, self.k, self.n)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "mux config") -> MuxConfig:
        """Build from a saved mapping; configs written before `options` existed are migrated."""
        data = _migrate_mux_config(dict(data), source)
        try:
            return config_from_dict(cls, data, source=source, error=CheckpointError)
        except TypeError as exc:
            raise CheckpointError(f"{source} is incomplete: {exc}. Re-save the adapter with revmux.") from exc

    @classmethod
    def load(cls, directory: str | Path) -> MuxConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise CheckpointError(
                f"no {CONFIG_NAME} in {directory}. Pass the directory written by `revmux train` "
                "(it holds mux_config.json and mux_model.safetensors)."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupted.") from exc
        if not isinstance(data, dict):
            raise CheckpointError(f"{path} must hold a JSON object, got {type(data).__name__}.")
        return cls.from_dict(data, source=str(path))


def speedup_bound(num_layers: int, k: int, n: int) -> float:
    """S(k, N) = L / (k + (L - k) / N): the best speedup the cost model allows."""
    return num_layers / (k + (num_layers - k) / n)


# The flat adapter keys of configs written before mux options existed, by the kinds that took them.
LEGACY_OPTIONS: dict[str, tuple[str, ...]] = {
    "revmux": ("f_hidden", "up_hidden", "pca_composite"),
    "ora": ("f_hidden", "up_hidden"),
    "adapter": ("f_hidden", "up_hidden"),
    "datamux": ("up_hidden",),
}
LEGACY_OPTIONS |= {"reversible": LEGACY_OPTIONS["revmux"], "vanilla": LEGACY_OPTIONS["adapter"]}


def legacy_mux_options(
    data: dict[str, Any], kind: str | None, *, up_norm: RevmuxError
) -> dict[str, Any] | None:
    """Pop the flat adapter keys (f_hidden, up_hidden, pca_composite, up_norm) of an older config from
    `data`: the options `kind` took, unset ones dropped; None when there were none. Raises `up_norm` for a
    config built with up_norm, which revmux no longer builds."""
    legacy = {key: data.pop(key) for key in (*LEGACY_OPTIONS["revmux"], "up_norm") if key in data}
    if not legacy:
        return None
    if legacy.pop("up_norm", False):
        raise up_norm
    takes = LEGACY_OPTIONS.get(kind or "", ())
    return {key: value for key, value in legacy.items() if key in takes and value is not None}


def _migrate_mux_config(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Fold the flat adapter keys of older configs into `options`, spelling out what they were built with."""
    if "options" in data:
        return data
    stale = CheckpointError(
        f"{source} was trained with up_norm (a LayerNorm after Up), which revmux no longer builds (it did "
        "not help: see docs/results/notes.md). Re-train the adapter with this revmux."
    )
    options = legacy_mux_options(data, data.get("kind"), up_norm=stale)
    if options is not None:
        if data.get("kind") == "revmux":
            options.setdefault("pca_composite", False)  # off in every adapter saved before options
        data["options"] = options
    return data


# ------------------------------------------------------------------------------ one loader for every config


def dashed(name: str) -> str:
    """The flag of a config field: `max_queue_delay_ms` -> `--max-queue-delay-ms`."""
    return "--" + name.replace("_", "-")


def flag_meta(
    text: str,
    default: str | None = None,
    envvar: str | None = None,
    *,
    check: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Field metadata read by `revmux.config_flags`: the flag's help, how its default reads in the help, the
    environment variable the flag also reads, and a check run on the value when the flag is parsed."""
    meta: dict[str, Any] = {"help": text}
    if default is not None:
        meta["default"] = default
    if envvar is not None:
        meta["envvar"] = envvar
    if check is not None:
        meta["check"] = check
    return meta


def is_int(value: Any) -> bool:
    """An int that is not a bool (config checks: True is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_config(cls: type[T], config: Any, knobs: Mapping[str, Any], *, source: str) -> T:
    """`config` (an instance of `cls`, or None for its defaults) with `knobs` (field name -> value) over it,
    built by `config_from_dict`."""
    base = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)} if config is not None else {}  # type: ignore[arg-type]
    return config_from_dict(cls, base | dict(knobs), source=source)


def config_from_dict(
    cls: type[T],
    data: Mapping[str, Any],
    *,
    source: str,
    flag: Callable[[str], str] = dashed,
    error: type[RevmuxError] = ConfigError,
) -> T:
    """`cls(**data)` for a config dataclass, with unknown keys refused and values converted to the fields'
    types (YAML, JSON, `key=value` strings: "1e-3" -> 1e-3, "true" -> True, "1,2,4" -> [1, 2, 4],
    "2:32,4:64" -> {2: 32, 4: 64}, "none" -> None). Errors name the key as a flag and the source;
    the dataclass's own `__post_init__` checks ranges."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise error(f"{source} has unknown keys {unknown}; expected only {sorted(names)}.")
    values = {name: coerce(value, hints[name], flag(name)) for name, value in data.items()}
    try:
        return cls(**values)
    except RevmuxError as exc:
        raise type(exc)(f"{exc} (from {source})") from exc


def load_config(
    cls: type[T], path: str | Path | None, overrides: Mapping[str, Any] | None = None, **kwargs: Any
) -> T:
    """A config dataclass from a YAML file's values, then `overrides` (None meaning not given)."""
    values = load_yaml(path) if path else {}
    values |= {k: v for k, v in (overrides or {}).items() if v is not None}
    return config_from_dict(cls, values, source=f"--config {path}" if path else "flags", **kwargs)


def coerce(value: Any, hint: Any, flag: str) -> Any:
    """`value` converted to the type `hint` when it is spelled as a string (or an int for a float);
    anything else is returned unchanged for the dataclass to check."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        spelled_none = isinstance(value, str) and value.strip().lower() in ("none", "null")
        if value is None or spelled_none or (value == "" and inner != [str]):
            return None
        return coerce(value, inner[0], flag) if len(inner) == 1 else value
    if hint is bool and isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{flag} takes true or false, got {value!r}.")
    if hint in (int, float) and isinstance(value, str):
        try:
            return hint(value.strip())
        except ValueError:
            kind = "an integer" if hint is int else "a number"
            raise ConfigError(f"{flag} takes {kind}, got {value!r}.") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is list and args:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            return [coerce(v, args[0], flag) for v in value]
    if origin is dict and len(args) == 2:
        if isinstance(value, str):
            pairs = [p.partition(":") for p in value.split(",") if p.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ConfigError(f"{flag} takes key:value pairs like 2:32,4:64, got {value!r}.")
            value = {a: b for a, _, b in pairs}
        if isinstance(value, dict):
            return {coerce(a, args[0], flag): coerce(b, args[1], flag) for a, b in value.items()}
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding one mapping (a `--config` file), or ConfigError naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config file {path} not found.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config file {path} must hold a mapping of keys to values, got {type(data).__name__}."
        )
    return data
