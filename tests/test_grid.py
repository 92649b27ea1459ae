"""The grid runner (revmux.grid, benchmarks/grid.py) end to end on a tiny random BERT: one adapter row and
one teacher row, their JSON shape, and a rerun that skips them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from revmux.data import load_task, tokenize
from revmux.errors import ConfigError
from revmux.grid import GridCell, GridRow, GridSpec, row_key, run_grid
from revmux.model import MuxModel
from revmux.prompting import PromptSpec, apply_prompt, load_prompted_backbone
from revmux.recipes import load_recipe
from revmux.train import TrainConfig
from tests.test_prompting import llama_dir  # noqa: F401  (a fixture: a tiny LlamaForCausalLM + BPE tokenizer)
from tests.train import toy_task
from tests.train.test_finetune import _save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("grid_script", ROOT / "benchmarks" / "grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _glue(directory: Path) -> Path:
    """A GLUE-shaped SST-2 folder of toy rows: 64 train, 16 dev."""
    data = toy_task(rows=80)
    (directory / "SST-2").mkdir(parents=True)
    for split, rows in (("train", range(64)), ("dev", range(64, 80))):
        lines = ["sentence\tlabel"] + [f"{data.texts[i]}\t{data.labels[i]}" for i in rows]
        (directory / "SST-2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return directory


def _recipe(path: Path) -> Path:
    fields = load_recipe("default") | {"epochs": 1, "min_steps": 0, "batch_groups": 4, "max_length": 24}
    teacher = {"style": "finetune", "epochs": 1, "batch_size": 16, "max_length": 24, "max_train_rows": 48}
    path.write_text(yaml.safe_dump({"description": "tiny", **fields, "teacher": teacher}))
    return path


def test_grid_cells_parse_and_refuse_malformed_items():
    assert GridCell.parse("revmux:2:2, adapter:4:1,teacher:1:0") == [
        GridCell("revmux", 2, 2), GridCell("adapter", 4, 1), GridCell(None, 1, 0)
    ]  # fmt: skip
    for bad in ("revmux:2", "revmux:x:2", "teacher:2:0", "revmux:1:2", ""):
        with pytest.raises(ConfigError, match="--grid"):
            GridCell.parse(bad)


def test_grid_runs_a_row_end_to_end_and_resume_skips_it(tmp_path, minilm_path, monkeypatch, capsys):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    backbone = _save_tiny(tmp_path / "tiny", minilm_path)
    recipe, out = _recipe(tmp_path / "tiny-recipe.yaml"), tmp_path / "rows.json"
    argv = [
        "--backbone", str(backbone), "--task", "sst2", "--recipe", str(recipe), "--grid",
        "revmux:2:1,teacher:1:0", "--data-dir", str(_glue(tmp_path / "glue")), "--out", str(out),
        "--groupings", "2", "--work-dir", str(tmp_path / "work"),
    ]  # fmt: skip
    script = _script()
    assert script.main(argv) == 0
    rows = json.loads(out.read_text())
    assert [(r["mux"], r["n"], r["k"]) for r in rows] == [("revmux", 2, 1), (None, 1, 0)]
    adapter, teacher = (GridRow.from_dict(r) for r in rows)  # every key is a GridRow field, none missing
    want = TrainConfig.from_dict(load_recipe(recipe) | {"kind": "revmux", "n": 2, "k": 1}).to_dict()
    assert adapter.train_config == want and adapter.recipe == "tiny-recipe" and adapter.seed == 0
    assert adapter.backbone == str(backbone) and adapter.task == "sst2" and adapter.teacher == "seqcls"
    assert adapter.groupings == 2 and adapter.num_examples == 16 and adapter.train_rows == 64
    assert 0 <= adapter.accuracy_mean <= 1 and adapter.train_seconds > 0 and adapter.trainable_params > 0
    assert (
        adapter.command.startswith("python benchmarks/grid.py --backbone") and "--recipe" in adapter.command
    )
    assert adapter.machine and adapter.date[:2] == "20"
    assert teacher.train_config is None and teacher.teacher_config["max_train_rows"] == 48
    assert teacher.accuracy_mean == teacher.teacher_accuracy == adapter.teacher_accuracy
    log = json.loads(
        (
            tmp_path / "work" / "tiny" / "sst2" / "revmux-n2-k1-tiny-recipe-seed0" / "train_log.json"
        ).read_text()
    )
    assert log["recipe"] == "tiny-recipe" and log["config"] == want
    before = out.read_text()
    capsys.readouterr()
    assert script.main(argv) == 0  # resume: both rows are there, nothing is trained again
    assert out.read_text() == before
    printed = capsys.readouterr().out
    assert printed.count("skip sst2") == 2 and "0 new row(s)" in printed
    assert {row_key(r) for r in rows} == {GridRow.from_dict(r).key() for r in rows}
    assert script.main([*argv, "--grid", "revmux:2"]) == 2  # a malformed cell: refused before any work


def test_grid_prompt_teacher_rows(tmp_path, llama_dir, monkeypatch):  # noqa: F811
    """A prompted decoder (SmolLM2's setting): the zero-shot chat prompt + verbalizer teacher, frozen."""
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    fields = load_recipe("prompt-pca-shared-prefix") | {"epochs": 1, "batch_groups": 8, "max_length": 64}
    recipe = tmp_path / "tiny-prompt.yaml"
    teacher = {"style": "prompt", "prompt_style": "chat"}
    recipe.write_text(yaml.safe_dump({"description": "tiny", **fields, "teacher": teacher}))
    spec = GridSpec(
        backbone=str(llama_dir), task="sst2", recipe=str(recipe), cells=GridCell.parse("revmux:2:1,teacher:1:0"),
        data_dir=str(_glue(tmp_path / "glue")), groupings=2, work_dir=tmp_path / "work",
    )  # fmt: skip
    row, alone = run_grid(spec, tmp_path / "rows.json", command="test", progress=False)
    assert alone.teacher == "prompt" and alone.train_seconds is None and alone.train_config is None
    assert alone.accuracy_mean == alone.teacher_accuracy == row.teacher_accuracy
    assert (
        row.teacher == "prompt"
        and row.prompt["style"] == "chat"
        and row.prompt["words"] == ["negative", "positive"]
    )
    assert (
        row.train_config["shared_prefix"]
        and row.train_config["mux_options"]["pca_composite"]
        and row.recipe == "tiny-prompt"
    )
    assert row.teacher_config == teacher and row.backbone == str(llama_dir)
    # the adapters trained on the prompted rows and keep the prompt, so eval, predict and serve apply it
    (saved,) = (tmp_path / "work").rglob("revmux-n2-k1-*/mux_config.json")
    assert PromptSpec.from_dict(json.loads(saved.read_text())["prompt"]).words == ["negative", "positive"]
    view = load_prompted_backbone(str(llama_dir), PromptSpec.from_dict(row.prompt))
    assert MuxModel.from_pretrained(saved.parent, view).encoder.prompt is not None
    # the teacher row is the prompted teacher's own accuracy, not that of the raw texts
    dev = load_task("sst2", "dev", str(tmp_path / "glue"))
    prompted = apply_prompt(view.tokenizer, PromptSpec.from_dict(row.prompt), dev, 64)
    with torch.no_grad():
        logits = view.forward_unsplit(tokenize(view.tokenizer, prompted, 64))
    assert alone.teacher_accuracy == pytest.approx(
        float((logits.argmax(-1) == torch.tensor(dev.labels)).float().mean())
    )
    assert run_grid(spec, tmp_path / "rows.json", command="test", progress=False) == []


def test_append_row_keeps_rows_another_grid_wrote_since_this_one_started(tmp_path):
    from revmux.grid import append_row, row_key

    out = tmp_path / "rows.json"
    key = {
        "backbone": "minilm",
        "teacher": "seqcls",
        "mux": "revmux",
        "n": 2,
        "k": 2,
        "recipe": "r",
        "seed": 0,
    }
    first, second = key | {"task": "rte", "accuracy_mean": 0.6}, key | {"task": "mrpc", "accuracy_mean": 0.7}
    append_row(out, first)  # written by one grid run while another was still training
    append_row(out, second)
    append_row(out, second | {"accuracy_mean": 0.75})  # the same key again: replaced, not duplicated
    rows = json.loads(out.read_text())
    assert [row_key(r) for r in rows] == [row_key(first), row_key(second)] and rows[1][
        "accuracy_mean"
    ] == 0.75
    assert not list(tmp_path.glob(".*.tmp"))


def test_merge_seeds_averages_a_cell_over_its_seeds_and_keeps_single_rows():
    from revmux.grid import merge_seeds

    def row(seed, acc, recipe="default", n=2):
        return {
            "backbone": "minilm", "task": "sst2", "teacher": "seqcls", "mux": "revmux", "n": n, "k": 2,
            "recipe": recipe, "seed": seed, "accuracy_mean": acc, "accuracy_std": 0.01 * (seed + 1),
            "teacher_accuracy": 0.9, "agreement": acc + 0.05, "partner_sensitivity": 0.05,
            "drop_points": 100 * (0.9 - acc), "train_seconds": 100.0 * (seed + 1), "command": f"cmd {seed}",
            "date": f"2026-12-0{seed + 1}",
        }  # fmt: skip

    rows = [row(0, 0.80), row(0, 0.70, n=4), row(1, 0.84), row(2, 0.82)]
    merged = merge_seeds(rows)
    assert [(m["n"], m["seeds"]) for m in merged] == [(2, [0, 1, 2]), (4, [0])]
    three, one = merged
    assert three["accuracy_mean"] == pytest.approx(0.82) and three["seed_std"] == pytest.approx(0.02)
    assert three["accuracy_std"] == pytest.approx(0.02)  # the grouping spread, averaged over seeds
    assert three["agreement"] == pytest.approx(0.87) and three["train_seconds"] == pytest.approx(200.0)
    assert three["commands"] == ["cmd 0", "cmd 1", "cmd 2"]
    assert three["dates"] == ["2026-12-01", "2026-12-02", "2026-12-03"]  # every seed's run is dated
    assert one["seed_std"] is None and one["accuracy_mean"] == 0.70
    assert rows[0]["accuracy_mean"] == 0.80 and "seeds" not in rows[0]  # the inputs are not changed
