"""docs/results as data: targets.yaml names known things, every published row names a shipped recipe
whose TrainConfig it reproduces exactly, and benchmarks/render_results.py only reads its inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from revmux.backbones.zoo import ZOO
from revmux.data import TASKS
from revmux.grid import GridRow
from revmux.recipes import list_recipes, load_recipe
from revmux.train import TrainConfig
from tests.scripts import benchmark_script
from tests.train import row_steps_per_epoch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
ROW_FILES = ("frontier.json", "smollm2_trained.json")
CHECKS = {
    "drop_within": {"n", "max_k", "max_points"},
    "beats": {"baselines"},
    "partner_sensitivity": {"n", "max_percent"},
    "train_minutes": {"max_minutes"},
    "adapter_share": {"max_share"},
    "efficiency": {"min_batch_size", "ks", "min_efficiency"},
    "fidelity": {"backbone", "task", "n", "k", "recipes", "max_points", "min_agreement", "max_sensitivity"},
    "vs_best_plain": {"n", "k", "batch_sizes", "min_ratio"},
    "int8_accuracy": {"max_points"},
}
OPTIONAL = {"fidelity": {"max_minutes"}}  # keys a check may leave out


def _rows(name: str) -> list[dict]:
    return json.loads((RESULTS / name).read_text())


def test_targets_name_a_known_backbone_task_recipe_and_check():
    spec = yaml.safe_load((RESULTS / "targets.yaml").read_text())
    assert spec["backbone"] in ZOO and spec["task"] in TASKS
    assert spec["baseline_recipe"] in list_recipes()
    rows = _rows("frontier.json")
    assert any(
        (r["backbone"], r["task"], r["recipe"]) == (spec["backbone"], spec["task"], spec["baseline_recipe"])
        for r in rows
    )
    kinds = {r["mux"] for r in rows}
    for target in spec["targets"]:
        check = target["check"]
        assert check in CHECKS, f"unknown check {check!r}; known: {sorted(CHECKS)}"
        assert set(target) - {"check"} - OPTIONAL.get(check, set()) == CHECKS[check], target
        assert set(target.get("baselines", [])) <= kinds
        if check == "fidelity":
            assert target["backbone"] in ZOO and target["task"] in TASKS
            assert set(target["recipes"]) <= set(list_recipes()), target


@pytest.mark.parametrize("name", ROW_FILES)
def test_every_row_names_a_recipe_that_reproduces_its_train_config(name):
    for row in _rows(name):
        parsed = GridRow.from_dict(row)  # the grid runner's schema, no key missing or extra
        assert parsed.recipe in list_recipes(), parsed.recipe
        if parsed.n == 1:  # the teacher alone: no adapters, the recipe says how the teacher was made
            assert parsed.train_config is None and parsed.teacher_config["style"] == "finetune"
            continue
        cell = {"kind": parsed.mux, "n": parsed.n, "k": parsed.k, "seed": parsed.seed}  # the row's own seed
        saved = TrainConfig.from_saved(parsed.train_config)  # rows predating a field: its old value
        recipe = TrainConfig.from_dict(load_recipe(parsed.recipe) | cell)
        if (
            saved.min_steps != recipe.min_steps
        ):  # a later default: the same run where min_steps does not decide
            assert saved.epochs_for(row_steps_per_epoch(row, saved)) == recipe.epochs_for(
                row_steps_per_epoch(row, recipe)
            ), (parsed.recipe, row["task"], row["train_rows"])
            saved = dataclasses.replace(saved, min_steps=recipe.min_steps)
        if saved.steps_at_n != recipe.steps_at_n:  # a later default: the same run at N = 2
            assert saved.epochs_for(row_steps_per_epoch(row, saved)) == recipe.epochs_for(
                row_steps_per_epoch(row, recipe)
            ), (parsed.recipe, parsed.n, row["task"])
            saved = dataclasses.replace(saved, steps_at_n=recipe.steps_at_n)
        assert saved.to_dict() == recipe.to_dict()
        epochs, min_steps = parsed.train_config["epochs"], parsed.train_config.get("min_steps", 0)
        epochs = math.ceil(epochs * saved.width_scale)  # steps counted at a narrower width
        assert (
            parsed.epochs == epochs if not min_steps else parsed.epochs >= epochs
        )  # --min-steps adds epochs


def _digest(path: Path) -> dict[str, str]:
    """Every file under `path` (sub-folders such as results/vnni/ included), by relative path."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_render_results_only_reads_its_inputs(tmp_path, monkeypatch):
    shutil.copytree(RESULTS, tmp_path / "docs" / "results")
    before = _digest(tmp_path / "docs" / "results")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("render_results", ROOT / "benchmarks" / "render_results.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "render_results", module)
    spec.loader.exec_module(module)
    module.main()
    assert _digest(tmp_path / "docs" / "results") == before
    doc = (tmp_path / "docs" / "RESULTS.md").read_text()
    for name in ROW_FILES:
        for recipe in {r["recipe"] for r in _rows(name)}:
            assert f"[{recipe}](../src/revmux/configs/recipes/{recipe}.yaml)" in doc
    assert (ROOT / "src" / "revmux" / "configs" / "recipes").is_dir()


def test_fidelity_targets_judge_the_default_recipes_rows_and_say_what_is_not_measured(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from result_targets import targets_section

    target = {"check": "fidelity", "backbone": "minilm", "task": "mrpc", "n": 2, "k": 2}
    target |= {"recipes": ["default-pairs"], "max_points": 2.0, "min_agreement": 97, "max_sensitivity": 2}
    spec = {"backbone": "minilm", "task": "sst2", "baseline_recipe": "16k-rows-3ep", "targets": [target]}
    row = {"backbone": "minilm", "task": "mrpc", "mux": "revmux", "n": 2, "k": 2, "recipe": "default-pairs"}
    close = row | {
        "teacher_accuracy": 0.80,
        "accuracy_mean": 0.79,
        "agreement": 0.98,
        "partner_sensitivity": 0.01,
    }
    far = close | {"agreement": 0.90}
    other = close | {"recipe": "16k-rows-5ep-len128"}
    assert targets_section([close], None, spec)[2].endswith(
        "1.00 pts, 98.0%, 1.0% (recipe default-pairs, 1 seed) | yes |"
    )
    assert targets_section([far], None, spec)[2].endswith("| no |")
    assert "not measured yet" in targets_section([other], None, spec)[2]
    demo_target = target | {"task": "sst2", "recipes": ["demo"], "max_points": 1.0}
    demo = {"model": "minilm", "task": "sst2 (bundled sample)", "n": 2, "k": 2}
    demo |= {"teacher_accuracy": 0.83, "accuracy_mean": 0.82}
    demo |= {"agreement": 0.92, "partner_sensitivity": 0.065}
    line = targets_section([], None, spec | {"targets": [demo_target]}, demo)[2]
    assert "1.00 pts, 92.0%, 6.5% (recipe demo, 1 seed) | no |" in line
    timed = spec | {"targets": [target | {"max_minutes": 30}]}
    line = targets_section([close | {"train_seconds": 1700}], None, timed)[2]
    assert "training <= 30 min |" in line and line.endswith(
        "1.0%, 28 min (recipe default-pairs, 1 seed) | yes |"
    )
    assert targets_section([close | {"train_seconds": 1900}], None, timed)[2].endswith("| no |")  # 32 min
    assert targets_section([close], None, timed)[2].endswith(
        "time not recorded (recipe default-pairs, 1 seed) | no |"
    )
    demo |= {
        "accuracy_mean": 0.825,
        "agreement": 0.98,
        "partner_sensitivity": 0.01,
        "adapter_train_seconds": 95.0,
    }
    line = targets_section([], None, spec | {"targets": [demo_target | {"max_minutes": 30}]}, demo)[2]
    assert line.endswith("0.50 pts, 98.0%, 1.0%, 2 min (recipe demo, 1 seed) | yes |")


def test_speed_targets_read_the_honest_benches_fastest_configuration(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from result_targets import targets_section

    def report(n, k, quantize, ratios, efficiency=0.95, isa=None):
        runs = [
            {"batch_size": b, "n": n, "k": k, "speedup_vs_best_plain": r, "best_plain": "ort_int8_sorted"}
            | {"efficiency": efficiency, "efficiency_baseline": "plain_sorted"}
            for b, r in zip((32, 128), ratios, strict=True)
        ]
        machine = {} if isa is None else {"machine": {"cpu_isa": isa}}
        return {"quantize": quantize, "backend": "torch", "runs": runs} | machine

    honest = [
        report(4, 1, "none", (1.2, 1.4)),
        report(4, 2, "int8", (1.6, 1.45), 0.85),
        report(2, 2, "int8", (1.0, 1.2)),
        report(2, 1, "bf16", (1.3, 0.9), 0.8, isa=["AVX512", "AMX-BF16"]),  # another machine's bench, named
    ]
    spec = {"backbone": "minilm", "task": "sst2", "baseline_recipe": "16k-rows-3ep"}
    spec["targets"] = [
        {"check": "vs_best_plain", "n": 4, "k": None, "batch_sizes": [32, 128], "min_ratio": 1.5},
        {"check": "vs_best_plain", "n": 2, "k": 2, "batch_sizes": [32], "min_ratio": 1.1},
        {"check": "vs_best_plain", "n": 2, "k": 1, "batch_sizes": [32], "min_ratio": 1.1},
        {"check": "efficiency", "min_batch_size": 64, "ks": [2], "min_efficiency": 0.9},
    ]
    lines = targets_section([], None, spec, honest=honest)
    assert (
        "fastest N=4 (any k), any backend, on the AVX2 CPU, >= 1.5x the best plain variant, batch 32 | 1.60x "
        "(k=2, int8, vs ort_int8_sorted)" in lines[2]
    )
    assert lines[2].endswith("| yes |")
    assert "batch 128 | 1.45x (k=2, int8" in lines[3] and lines[3].endswith("| no |")  # 1.45 beats fp32's 1.4
    assert "1.00x (k=2, int8" in lines[4] and lines[4].endswith("| no |")
    assert (  # only the AMX CPU timed N=2, k=1: one row, named by its CPU; the AVX2 CPU gets none
        "N=2, k=1, any backend, on the AMX CPU, >=" in lines[5]
        and "1.30x (k=1, bf16, vs" in lines[5]
        and lines[5].endswith("| yes |")
    )
    assert "bench efficiency" in lines[6]
    # each CPU is checked on its own: a slower CPU's shortfall is not hidden by a faster one's best
    zen = report(4, 1, "bf16", (1.4, 1.7), isa=["AVX512", "AVX512-VNNI", "AVX512-BF16"])
    lines = targets_section([], None, spec, honest=[*honest, zen])
    n4 = [line for line in lines if "fastest N=4" in line]
    assert len(n4) == 4 and "on the AVX-512 CPU without AMX" in n4[1]
    assert n4[1].endswith("1.40x (k=1, bf16, vs ort_int8_sorted) | no |") and n4[3].endswith("| yes |")
    none = targets_section([], None, spec | {"targets": spec["targets"][:1]}, honest=[])
    assert none[2].endswith("batch 32 | not measured yet | no |")
    eff = [line for line in lines if "bench efficiency" in line]
    assert len(eff) == 2  # k=2 at batch 128 only: the int8 N=4 run and the int8 N=2 run
    assert all("batch 128" in line for line in eff) and sum(line.endswith("| yes |") for line in eff) == 1


def test_agreement_breakdown_buckets_rows_and_renders_them(monkeypatch):
    import torch

    breakdown = benchmark_script("agreement_breakdown", monkeypatch)
    margin = torch.tensor([0.1, 0.3, 0.97, 0.99, 1.0])
    hits = torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0])
    got = breakdown.buckets(margin, hits, breakdown.MARGINS)
    assert [(b["from"], b["rows"]) for b in got] == [(0.0, 1), (0.2, 1), (0.95, 3)]
    assert [b["agreement"] for b in got] == pytest.approx([0.0, 0.5, 2 / 3])
    record = {
        "adapter": "a", "task": "sst2", "kind": "revmux", "n": 2, "k": 2, "groupings": 3, "agreement": 0.5,
        "per_slot": [0.4, 0.6], "by_teacher_margin": got, "by_length": breakdown.buckets(
            torch.tensor([3.0, 60.0]), torch.tensor([1.0, 0.0]), breakdown.LENGTHS
        ), "command": "python benchmarks/agreement_breakdown.py --adapter a", "machine": "m", "date": "d",
    }  # fmt: skip
    text = "\n".join(benchmark_script("render_results", monkeypatch).agreement_section([record]))
    assert "by slot 40.0%, 60.0%" in text and "| [0.95, 1.00] | 3 | 66.7% |" in text
    assert "| 0-15 | 1 | 100.0% |" in text and "| 48- | 1 | 0.0% |" in text


def test_int8_accuracy_target_compares_the_same_adapter_on_both_backbones(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from result_targets import targets_section

    spec = {"backbone": "minilm", "task": "sst2", "baseline_recipe": "16k-rows-3ep"}
    spec["targets"] = [{"check": "int8_accuracy", "max_points": 0.3}]
    fp32 = {"task": "sst2", "n": 2, "k": 2, "accuracy_mean": 0.8208}
    near, far = fp32 | {"accuracy_mean": 0.8190}, fp32 | {"accuracy_mean": 0.8170}
    (row,) = [line for line in targets_section([], None, spec, quantized=(fp32, near)) if "int8" in line]
    assert "| 0.18 pts (SST-2, N=2, k=2, the demo adapter) | yes |" in row
    (row,) = [line for line in targets_section([], None, spec, quantized=(fp32, far)) if "int8" in line]
    assert row.endswith("| 0.38 pts (SST-2, N=2, k=2, the demo adapter) | no |")
    (row,) = [line for line in targets_section([], None, spec) if "int8" in line]
    assert "not measured yet | no |" in row


def test_grid_commands_keep_each_rows_data_bundled_sample_or_glue(monkeypatch):
    """A row trained on the bundled sample (its command has no --data-dir) is rerun without one."""
    render = benchmark_script("render_results", monkeypatch)
    rows = [
        {"backbone": "mpnet", "task": "sst2", "recipe": "default", "mux": "revmux", "n": 2, "k": 3,
         "command": "python benchmarks/grid.py --backbone mpnet --task sst2 --recipe default --grid revmux:2:3"},
        {"backbone": "mpnet", "task": "sst2", "recipe": "default", "mux": "revmux", "n": 4, "k": 3,
         "command": "python benchmarks/grid.py --grid revmux:4:3 --data-dir ../shared/data/glue"},
    ]  # fmt: skip
    bundled, glue = render.grid_commands(rows, "out.json")
    assert "--grid revmux:2:3 --out out.json" in bundled and "--data-dir" not in bundled
    assert "--grid revmux:4:3 --data-dir ../shared/data/glue --out out.json" in glue


def test_selection_rows_scored_at_another_epoch_say_so(monkeypatch, tmp_path):
    """A row of `select_recipe.py --reuse --epoch E` scores a checkpoint the run did not keep: its table row
    says which, so it cannot be read as the recipe's own result."""
    render = benchmark_script("render_results", monkeypatch)
    row = {
        "candidate": "lw1", "recipe": "default", "overrides": {"length_weight": "1"}, "task": "sst2", "n": 2,
        "k": 2, "seed": 0, "train_rows": 3800, "select_rows": 2000, "select_min_words": 15, "groupings": 3,
        "accuracy": 0.84, "teacher_accuracy": 0.86, "drop_pts": 2.0, "agreement": 0.9,
        "partner_sensitivity": 0.05, "best_epoch": 4, "epochs": 16, "seconds": 60.0, "command": "c",
        "machine": "m", "date": "d",
    }  # fmt: skip
    path = tmp_path / "selection.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row | {"scored_epoch": 16, "best_epoch": 16}) + "\n")
    kept, other = [line for line in render.selection_section(path) if line.startswith("| lw1")]
    assert "--epoch" not in kept and "| 4/16 |" in kept
    assert "`--epoch 16` (that epoch's checkpoint, not the one kept)" in other and "| 16/16 |" in other


def test_cpu_sentence_says_what_the_benches_cpu_runs_bf16_on(monkeypatch):
    render = benchmark_script("render_results", monkeypatch)
    assert "AVX2, no AVX512 or AMX" in render.cpu_sentence({None})  # benches made before `cpu_isa`
    amx = render.cpu_sentence({("AVX2", "AVX512", "AMX-BF16", "AMX-INT8")})
    assert "AVX2, AVX512, AMX-BF16, AMX-INT8" in amx and "native here" in amx
    assert "emulated here" in render.cpu_sentence({("AVX2",), ("AVX2", "AMX-BF16")})  # one machine without


def test_fidelity_targets_read_the_decoder_rows(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from result_targets import targets_section

    target = {"check": "fidelity", "backbone": "smollm2", "task": "sst2", "n": 4, "k": 15}
    target |= {
        "recipes": ["default", "prompt-x"],
        "max_points": 3.0,
        "min_agreement": 95,
        "max_sensitivity": 4,
    }
    spec = {"backbone": "minilm", "task": "sst2", "baseline_recipe": "16k-rows-3ep", "targets": [target]}
    row = {"backbone": "smollm2", "task": "sst2", "mux": "revmux", "n": 4, "k": 15, "recipe": "prompt-x"}
    row |= {
        "teacher_accuracy": 0.757,
        "accuracy_mean": 0.682,
        "agreement": 0.666,
        "partner_sensitivity": 0.252,
    }
    assert "not measured yet" in targets_section([], None, spec)[2]
    line = targets_section([], None, spec, llm_rows=[row])[2]
    assert line.endswith("7.50 pts, 66.6%, 25.2% (recipe prompt-x, 1 seed) | no |")
