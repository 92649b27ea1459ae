"""Recipes as data (revmux.recipes): every shipped recipe parses into a TrainConfig, unknown names fail
clearly, and `revmux train --recipe` resolves exactly the recipe's TrainConfig, flags overriding it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from revmux.cli import app
from revmux.errors import ConfigError
from revmux.mux import MUX_KINDS
from revmux.recipes import RECIPES_DIR, list_recipes, load_recipe, read_recipe, recipe_name
from revmux.train import TrainConfig
from revmux.train.trainer import LOG_NAME
from tests.train import one_thread, row_steps_per_epoch, toy_task, toy_view
from tests.train.test_trainer import _cli_train_args

FRONTIER = Path(__file__).resolve().parents[1] / "docs" / "results" / "frontier.json"
GRID_FIELDS = {"kind", "n", "k"}


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_parses_into_a_train_config(name):
    recipe = read_recipe(name)
    config = TrainConfig.from_dict(recipe.train, source=name)
    assert recipe.description and recipe.name == name
    assert not GRID_FIELDS & set(recipe.train)
    # a recipe spells out every training field, so a later change of a default cannot change what it means
    every = {f.name for f in dataclasses.fields(TrainConfig)} - GRID_FIELDS
    assert set(recipe.train) == every, sorted(every ^ set(recipe.train))
    assert recipe.teacher.get("style") in ("finetune", "prompt")
    assert (
        config.to_dict() | {"kind": "revmux", "n": 2, "k": 2}
        == TrainConfig(**(recipe.train | {"kind": "revmux", "n": 2, "k": 2})).to_dict()
    )


@pytest.mark.parametrize("kind", sorted(MUX_KINDS))
def test_default_recipe_is_train_config_defaults(kind):
    assert (
        TrainConfig.from_dict(load_recipe("default") | {"kind": kind}).to_dict()
        == TrainConfig(kind=kind).to_dict()
    )


def test_recipes_are_package_data():
    assert len(list_recipes()) >= 16
    assert "default" in list_recipes() and "pca-bg8-8ep-lr3e-4" in list_recipes()
    assert all(p.parent == RECIPES_DIR for p in RECIPES_DIR.glob("*.yaml"))


def test_unknown_recipe_names_the_known_ones(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown recipe 'pca-typo'; known recipes: .*16k-rows-3ep.*default"
    ):
        load_recipe("pca-typo")
    with pytest.raises(ConfigError, match="recipe file .*missing.yaml not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\nn: 4\nepochs: 1\n")
    with pytest.raises(ConfigError, match=r"sets \['n'\]; a recipe holds training fields only"):
        load_recipe(bad)
    bad.write_text("description: x\nteacher:\n  style: distilled\n")
    with pytest.raises(ConfigError, match="teacher style must be one of"):
        load_recipe(bad)


def test_recipe_from_a_path_is_named_by_its_stem(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("description: mine\nepochs: 1\nlr: 3.0e-4\n")
    assert load_recipe(path) == {"epochs": 1, "lr": 3e-4}
    assert recipe_name(str(path)) == "mine" and recipe_name("pca-composite") == "pca-composite"


@pytest.fixture(scope="module")
def teacher_view(minilm_path):
    with one_thread():
        yield toy_view(minilm_path)


def _train(teacher_view, tmp_path, monkeypatch, extra: list[str]) -> tuple[CliRunner, dict]:
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    _, args = _cli_train_args(teacher_view, toy_task(), tmp_path, rows=48)
    out = tmp_path / "adapter"
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--k", "1", *extra])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / LOG_NAME).read_text())


def test_cli_train_recipe_resolves_the_recipe_and_flags_override_it(teacher_view, tmp_path, monkeypatch):
    recipe = tmp_path / "tiny-recipe.yaml"
    fields = load_recipe("pca-bg8-8ep-lr3e-4") | {"epochs": 1, "max_length": 24, "max_train_rows": None}
    recipe.write_text(yaml.safe_dump({"description": "tiny", **fields}))
    _, log = _train(teacher_view, tmp_path / "a", monkeypatch, ["--recipe", str(recipe)])
    assert log["config"] == TrainConfig.from_dict(fields | {"k": 1}).to_dict()
    assert log["recipe"] == "tiny-recipe"
    # a shipped recipe, flags overriding it: everything else is the recipe's
    over = [
        "--recipe",
        "pca-bg8-8ep-lr3e-4",
        "--epochs",
        "1",
        "--min-steps",
        "0",
        "--max-length",
        "24",
        "--batch-groups",
        "4",
    ]
    _, log = _train(teacher_view, tmp_path / "b", monkeypatch, over)
    want = load_recipe("pca-bg8-8ep-lr3e-4") | {"k": 1, "epochs": 1, "max_length": 24, "batch_groups": 4}
    assert log["config"] == TrainConfig.from_dict(want).to_dict() and log["recipe"] == "pca-bg8-8ep-lr3e-4"
    assert log["config"]["lr"] == 3e-4 and log["config"]["mux_options"]["pca_composite"] is True


def test_cli_train_unknown_recipe_fails_with_the_known_names(teacher_view, tmp_path, monkeypatch):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    _, args = _cli_train_args(teacher_view, toy_task(), tmp_path, rows=8)
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o"), "--recipe", "nope"])
    assert result.exit_code != 0 and "unknown recipe 'nope'" in result.output and "default" in result.output


def test_default_recipe_trains_pairs_as_default_pairs_aug():
    auto = {"augment": None, "augment_copies": None}
    default = load_recipe("default")
    # only the teacher, the spelled-out augmentation, the epochs, the epoch-picking measure (it picks among
    # the same checkpoints) and the minimum steps (the default doubled them later) differ; the pair sets are
    # small enough for min_steps to decide, so the pair recipes' 2 epochs made the same run as the default's 4
    same = {"epochs": default["epochs"], "select_on": default["select_on"], "min_steps": default["min_steps"]}
    same |= {"steps_at_n": default["steps_at_n"]}  # counted at N=2 later: the same runs at N=2
    assert load_recipe("default-pairs-aug") | auto | same == default
    assert load_recipe("default-pairs") | auto | same == default
    assert load_recipe("default-2ep") | same == default
    assert load_recipe("default-pairs-940") | same == default  # the default of its day, with the pair teacher
    aug, plain = (TrainConfig.from_dict(load_recipe(n)) for n in ("default-pairs-aug", "default-pairs"))
    assert TrainConfig.from_dict(default).augmentation(is_pair=True) == aug.augmentation(is_pair=True)
    assert TrainConfig.from_dict(default).augmentation(is_pair=False) == ([], 0)
    assert plain.augmentation(is_pair=True) == ([], 0)


@pytest.mark.parametrize("name", ["default-pairs-aug", "default-pairs", "default-2ep"])
def test_two_epoch_recipes_make_the_default_run_on_the_pair_sets(name):
    """Every stored row of the 2-epoch recipes on a set small enough for min_steps to decide made as many
    epochs as the 4-epoch default of the day (its minimum steps) would have made of the same rows."""
    two = TrainConfig.from_dict(load_recipe(name))
    default = TrainConfig.from_dict(load_recipe("default") | {"min_steps": two.min_steps})
    rows = [r for r in json.loads(FRONTIER.read_text()) if r.get("recipe") == name and r["n"] > 1]
    small = [r for r in rows if r["train_rows"] < 7_000]
    assert rows and (small or name == "default-2ep")
    for row in small:
        steps = row_steps_per_epoch(row, two)
        assert two.epochs_for(steps) == default.epochs_for(steps) == row["epochs"], row["task"]
