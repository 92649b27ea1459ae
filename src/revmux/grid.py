"""The grid runner: for one (backbone, task, recipe), make or reuse the teacher, then train and evaluate
each (kind, N, k) cell and return one typed row per cell and seed.

What it is: the one orchestration of finetune -> train -> evaluate behind every accuracy row in
docs/results (benchmarks/grid.py is its command line) and behind `revmux demo`. A recipe
(`revmux.recipes`) gives the TrainConfig fields and how the teacher is made: fully fine-tuned
(`teacher.style: finetune`, a classification head) or a frozen zero-shot prompt + verbalizer teacher
(`teacher.style: prompt`, decoders). A cell with N = 1 evaluates the teacher alone. Rows already in
the output JSON under the same key are skipped, and an interrupted adapter run resumes from its last
epoch, so a grid can be rerun until it finishes.
What it is not: a scheduler or a results renderer (benchmarks/render_results.py reads the rows).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from revmux.data import TaskData, load_task, split_fixed
from revmux.errors import ConfigError
from revmux.recipes import Recipe, read_recipe

QNLI_HELDOUT_ROWS = 1000  # QNLI: only its dev file exists here; 1,000 of its rows are held out and reported
SPLIT_SEED = 0  # the QNLI split is fixed, whatever the seeds of the runs


@dataclass(frozen=True)
class GridCell:
    """One point of a grid: mux kind, N requests per group, k prefill layers (N = 1: the teacher alone)."""

    kind: str | None
    n: int
    k: int

    @classmethod
    def parse(cls, text: str) -> list[GridCell]:
        """'revmux:2:2,adapter:4:1,teacher:1:0' -> cells; ConfigError naming a malformed item."""
        cells = []
        for item in (part.strip() for part in text.split(",") if part.strip()):
            parts = item.split(":")
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
                raise ConfigError(
                    f"--grid item {item!r} must be kind:N:k, e.g. revmux:2:2 (teacher:1:0 alone)."
                )
            kind, n, k = parts[0], int(parts[1]), int(parts[2])
            if (kind == "teacher") != (n == 1):
                raise ConfigError(
                    f"--grid item {item!r}: write the teacher alone as teacher:1:0, N >= 2 otherwise."
                )
            cells.append(cls(None if n == 1 else kind, n, 0 if n == 1 else k))
        if not cells:
            raise ConfigError("--grid is empty; pass cells as kind:N:k, e.g. revmux:2:2,revmux:4:2.")
        return cells


@dataclass
class GridRow:
    """One measured row: what was run (recipe, resolved TrainConfig, seed, command) and what it measured."""

    backbone: str
    task: str
    teacher: str  # "seqcls" (a fine-tuned classification head) or "prompt" (zero-shot prompt + verbalizer)
    mux: str | None  # None: the teacher alone (N = 1)
    n: int
    k: int
    recipe: str
    train_config: dict[str, Any] | None  # the full resolved TrainConfig (None for teacher-only rows)
    teacher_config: dict[str, Any]
    seed: int
    groupings: int
    accuracy_mean: float
    accuracy_std: float
    teacher_accuracy: float
    agreement: float
    partner_sensitivity: float | None
    per_class_accuracy: dict[str, float | None]
    teacher_per_class_accuracy: dict[str, float | None]
    bound: float
    drop_points: float
    trainable_params: int
    num_examples: int
    eval_split: str
    train_rows: int
    epochs: int
    train_seconds: float | None  # teacher-only rows: None when the teacher was reused, not made here
    cache_build_seconds: float | None
    command: str
    machine: str
    date: str
    prompt: dict[str, Any] | None = None

    def key(self) -> tuple[Any, ...]:
        return row_key(dataclasses.asdict(self))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridRow:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"grid row has unknown keys {unknown}; expected {sorted(names)}.")
        return cls(**data)


@dataclass
class Teacher:
    """The frozen teacher of a grid: its view, where it came from, and how it was made."""

    view: Any
    backbone_path: str
    style: str  # "seqcls" | "prompt"
    config: dict[str, Any]
    prompt: dict[str, Any] | None = None
    train_seconds: float | None = None  # None: not fine-tuned by this run (a prompt, or reused)
    holdout_accuracy: float | None = None


@dataclass
class GridSpec:
    """What benchmarks/grid.py asks for: one backbone, task and recipe over cells and seeds."""

    backbone: str
    task: str
    recipe: str
    cells: list[GridCell]
    data_dir: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    groupings: int = 10
    work_dir: Path = Path("runs/grid")


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """The key a row is resumed by: backbone, task, teacher, mux, N, k, recipe, seed."""
    return tuple(row.get(name) for name in ("backbone", "task", "teacher", "mux", "n", "k", "recipe", "seed"))


def machine() -> str:
    """Platform, CPU count and torch threads, as every row records them."""
    import torch

    return f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"


def task_splits(task: str, data_dir: str | None) -> tuple[TaskData, TaskData, str]:
    """(train, reported eval, eval split name); QNLI's dev is split with a fixed seed (see QNLI_HELDOUT_ROWS)."""
    if task == "qnli":
        train, held = split_fixed(load_task("qnli", "dev", data_dir), QNLI_HELDOUT_ROWS, seed=SPLIT_SEED)
        return train, held, f"qnli dev held-out {QNLI_HELDOUT_ROWS} (seed split)"
    return load_task(task, "train", data_dir), load_task(task, "dev", data_dir), "dev"


SEED_AVERAGED = ("accuracy_mean", "accuracy_std", "teacher_accuracy", "agreement", "partner_sensitivity")
SEED_AVERAGED += ("drop_points", "train_seconds")


def merge_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell (the row key without the seed), in first-seen order: a cell measured with several
    seeds gets the mean over seeds of each SEED_AVERAGED value (accuracy_std stays the spread over
    groupings, averaged), `seeds` (the list), `commands` and `dates` (each seed's) and `seed_std` (the sample std of the per-seed accuracy
    means; None for one seed). The rows themselves are not changed."""
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault(row_key(row)[:-1], []).append(row)
    out = []
    for group in cells.values():
        merged = dict(group[-1])
        merged["seeds"] = sorted(r.get("seed", 0) for r in group)
        merged["commands"] = sorted({r["command"] for r in group})
        merged["dates"] = sorted({str(r["date"]) for r in group if r.get("date")})
        merged["seed_std"] = statistics.stdev(r["accuracy_mean"] for r in group) if len(group) > 1 else None
        for name in SEED_AVERAGED:
            values = [r.get(name) for r in group]
            if len(group) > 1 and all(v is not None for v in values):
                merged[name] = statistics.fmean(values)
        out.append(merged)
    return out


def append_row(out_path: Path, row: dict[str, Any]) -> None:
    """Append `row` to the JSON list in `out_path` as it is now (another grid may have written rows since
    this one started), replacing a row with the same key, atomically."""
    rows = json.loads(out_path.read_text()) if out_path.is_file() else []
    rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    os.replace(tmp, out_path)


def run_grid(
    spec: GridSpec, out: str | Path | None = None, *, command: str, progress: bool = True
) -> list[GridRow]:
    """Run every (cell, seed) of `spec` not already in `out` (a JSON list of rows); append each new row to
    `out` as soon as it is measured. Returns the new rows."""
    recipe = read_recipe(spec.recipe)
    out_path = Path(out) if out is not None else None
    rows: list[dict[str, Any]] = json.loads(out_path.read_text()) if out_path and out_path.is_file() else []
    done = {row_key(r) for r in rows}
    style = "prompt" if recipe.teacher.get("style") == "prompt" else "seqcls"
    todo = [
        (cell, seed)
        for seed in spec.seeds
        for cell in spec.cells
        if (spec.backbone, spec.task, style, cell.kind, cell.n, cell.k, recipe.name, seed) not in done
    ]
    for cell, seed in ((c, s) for c in spec.cells for s in spec.seeds if (c, s) not in todo):
        print(f"skip {spec.task} {spec.backbone} {cell.kind} N={cell.n} k={cell.k} {recipe.name} seed {seed}")
    if not todo:
        return []
    train_data, eval_data, split = task_splits(spec.task, spec.data_dir)
    work = Path(spec.work_dir) / Path(spec.backbone).name / spec.task
    teacher = make_teacher(spec.backbone, spec.task, recipe, train_data, eval_data, work, progress=progress)
    new = []
    for cell, seed in todo:
        adapter_dir = work / f"{cell.kind}-n{cell.n}-k{cell.k}-{recipe.name}-seed{seed}"
        row = run_cell(
            teacher, cell, recipe, train_data, eval_data, adapter_dir, task=spec.task, seed=seed,
            groupings=spec.groupings, backbone=spec.backbone, eval_split=split, command=command,
            progress=progress,
        )  # fmt: skip
        new.append(row)
        if out_path is not None:
            append_row(out_path, row.to_dict())
        print(summary(row), flush=True)
    return new


def make_teacher(
    backbone: str,
    task: str,
    recipe: Recipe,
    train_data: TaskData,
    eval_data: TaskData,
    work: Path,
    *,
    progress: bool = True,
) -> Teacher:
    """The recipe's teacher: a prompt + verbalizer view of `backbone`, or `backbone` fine-tuned on
    `train_data` into `work/teacher-<hash of its settings>` (reused when that directory is complete)."""
    from revmux.backbones import load_backbone

    settings = {"style": "finetune", **recipe.teacher}
    if settings["style"] == "prompt":
        from revmux.prompting import default_prompt, load_prompted_backbone

        prompt = default_prompt(
            settings.get("prompt_style", "chat"), task, eval_data.label_names, is_pair=eval_data.is_pair
        )
        view = load_prompted_backbone(backbone, prompt)
        return Teacher(view, backbone, "prompt", settings, prompt=prompt.to_dict())
    from revmux.train.finetune import finetune

    options = {key: v for key, v in settings.items() if key != "style"}
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    teacher_dir = work / f"teacher-{digest}"
    seconds, holdout = None, None
    if not (teacher_dir / "config.json").is_file():
        start = time.perf_counter()
        result = finetune(backbone, train_data, teacher_dir, **options, progress=progress)
        seconds, holdout = time.perf_counter() - start, result.holdout_accuracy
    view = load_backbone(teacher_dir)
    return Teacher(view, str(teacher_dir.resolve()), "seqcls", settings, None, seconds, holdout)


def run_cell(
    teacher: Teacher,
    cell: GridCell,
    recipe: Recipe,
    train_data: TaskData,
    eval_data: TaskData,
    adapter_dir: Path,
    *,
    task: str,
    seed: int = 0,
    groupings: int = 10,
    backbone: str,
    eval_split: str = "dev",
    command: str = "",
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> GridRow:
    """Train the cell's adapters with the recipe (resuming an interrupted run in `adapter_dir`) and evaluate
    them on `eval_data` over `groupings` groupings; N = 1 evaluates the teacher alone (at its teacher
    max_length, a prompt teacher at the recipe's)."""
    from revmux.evaluate import evaluate
    from revmux.model import MuxModel
    from revmux.prompting import PromptSpec
    from revmux.train.trainer import TrainConfig, train

    common = {"backbone": backbone, "task": task, "teacher": teacher.style, "recipe": recipe.name}
    common |= {"mux": cell.kind, "n": cell.n, "k": cell.k, "seed": seed}
    common |= {"teacher_config": teacher.config, "prompt": teacher.prompt, "eval_split": eval_split}
    common |= {"command": command, "machine": machine()}
    # a prompt teacher reads prompted requests: the adapters train on them and save the prompt, and the
    # model's encoder applies it when the cell is evaluated (the N = 1 teacher row too)
    prompt = PromptSpec.from_dict(teacher.prompt) if teacher.prompt else None
    if cell.n == 1:
        max_length = int(teacher.config.get("max_length") or recipe.train.get("max_length", 64))
        model = MuxModel.from_backbone(
            teacher.view, n=1, k=0, backbone_path=teacher.backbone_path, prompt=prompt
        )
        report = evaluate(model, eval_data, groupings=1, seed=seed, max_length=max_length, task=task)
        rows = teacher.config.get("max_train_rows") or len(train_data)
        trained = {"train_config": None, "train_rows": min(rows, len(train_data))}
        trained |= {"epochs": teacher.config.get("epochs", 0), "train_seconds": teacher.train_seconds}
        trained |= {"cache_build_seconds": None}
        return _row(report.to_dict(), common | trained)
    values = recipe.train | {"kind": cell.kind, "n": cell.n, "k": cell.k, "seed": seed} | (overrides or {})
    config = TrainConfig.from_dict(values, source=f"recipe {recipe.name}")
    result = train(
        teacher.view, train_data, config, adapter_dir, backbone_path=teacher.backbone_path, task=task,
        resume=(adapter_dir / "checkpoints").is_dir(), progress=progress, recipe=recipe.name, prompt=prompt,
    )  # fmt: skip
    model = MuxModel.from_pretrained(adapter_dir, teacher.view)
    report = evaluate(
        model, eval_data, groupings=groupings, seed=seed, max_length=config.max_length, task=task,
        progress=progress,
    )  # fmt: skip
    trained = {"train_config": config.to_dict(), "epochs": result.epochs}
    trained |= {"train_rows": min(config.max_train_rows or len(train_data), len(train_data))}
    trained |= {"train_seconds": result.train_seconds, "cache_build_seconds": result.cache_build_seconds}
    return _row(report.to_dict(), common | trained)


def summary(row: GridRow) -> str:
    """One line a person reads after each row."""
    what = "teacher alone" if row.n == 1 else f"{row.mux} N={row.n} k={row.k}"
    return (
        f"{row.task} {row.backbone} {what} ({row.recipe}, seed {row.seed}): {100 * row.accuracy_mean:.1f} +- "
        f"{100 * row.accuracy_std:.1f} (teacher {100 * row.teacher_accuracy:.1f}, agreement "
        f"{100 * row.agreement:.1f}, train {'reused' if row.train_seconds is None else f'{row.train_seconds:.0f} s'})"
    )


def _row(report: dict[str, Any], facts: dict[str, Any]) -> GridRow:
    report = dict(report)
    report.pop("backbone", None)  # the grid names the backbone as it was asked for
    drop = 100 * (report["teacher_accuracy"] - report["accuracy_mean"])
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return GridRow.from_dict(report | facts | {"drop_points": drop, "date": date})
