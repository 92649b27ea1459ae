"""Configuration dataclasses saved as JSON beside the weights (`mux_config.json`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revmux.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1
CONFIG_NAME = "mux_config.json"
WEIGHTS_NAME = "mux_model.safetensors"


@dataclass
class MuxConfig:
    """What an adapter checkpoint is: the mux kind, N, k, widths, and the backbone it was trained on.

    `d_sub` = hidden_size // n is the width of one request's slot in the composite.
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
    f_hidden: int | None = None
    up_hidden: int | None = None
    up_norm: bool = False
    pca_composite: bool = False
    shared_prefix: bool = False  # causal views: a group's common prefix enters the tail as is (see MuxModel)
    max_length: int = 128
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
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(f"{source} has unknown keys {unknown}; expected only {sorted(names)}.")
        try:
            return cls(**data)
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
