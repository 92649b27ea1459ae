"""Training recipes as data: `src/revmux/configs/recipes/<name>.yaml`, one file per recipe.

What it is: a recipe names the training fields of a run (epochs, lr, batch_groups, max_train_rows,
pca_composite, ...; every key a `TrainConfig` field) plus a one-line `description` and, for the grid
runner (`revmux.grid`), an optional `teacher:` mapping that says how its teacher is made. The grid or
the command line supplies the mux kind, N and k, so a recipe never holds them. `revmux train --recipe
NAME` and `revmux.grid` read recipes through `load_recipe`; every result row stores its recipe's name
and the TrainConfig it resolved to.
What it is not: a config system (TrainConfig checks the values) or a registry of results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revmux.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "configs" / "recipes"
GRID_FIELDS = ("kind", "n", "k")  # supplied by the grid or the command line, never by a recipe
TEACHER_STYLES = ("finetune", "prompt")


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe file: `train` holds TrainConfig fields, `teacher` how the grid makes the teacher."""

    name: str
    description: str
    train: dict[str, Any]
    teacher: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def list_recipes() -> list[str]:
    """Names of the recipes shipped with revmux, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def read_recipe(name_or_path: str | Path) -> Recipe:
    """The recipe named `name_or_path` (a shipped name, or a path to a YAML file), checked for its keys."""
    from revmux.config import load_yaml

    path = _path_of(name_or_path)
    data = dict(load_yaml(path))
    description = data.pop("description", "")
    teacher = data.pop("teacher", None) or {}
    grid = sorted(set(data) & set(GRID_FIELDS))
    if grid:
        raise ConfigError(
            f"recipe {path} sets {grid}; a recipe holds training fields only. Remove them and pass --mux, "
            "--n and --k (or the grid's kind:N:k cells) instead."
        )
    if not isinstance(teacher, dict):
        raise ConfigError(f"recipe {path}: `teacher` must be a mapping, got {teacher!r}.")
    style = teacher.get("style", "finetune")
    if style not in TEACHER_STYLES:
        raise ConfigError(
            f"recipe {path}: teacher style must be one of {list(TEACHER_STYLES)}, got {style!r}."
        )
    return Recipe(path.stem, str(description), data, teacher, path)


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """The TrainConfig fields of a recipe (a shipped name or a YAML path), ready for `TrainConfig.from_dict`."""
    return dict(read_recipe(name_or_path).train)


def recipe_name(name_or_path: str | Path) -> str:
    """The name a recipe is recorded under: a shipped recipe's name, or a YAML file's stem."""
    return (
        Path(str(name_or_path)).stem if str(name_or_path).endswith((".yaml", ".yml")) else str(name_or_path)
    )


def _path_of(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(
                f"recipe file {path} not found; pass a shipped name ({_known()}) or a YAML path."
            )
        return path
    path = RECIPES_DIR / f"{text}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown recipe {text!r}; known recipes: {_known()} (or pass a path to a YAML file)."
        )
    return path


def _known() -> str:
    return ", ".join(list_recipes()) or "none shipped"
