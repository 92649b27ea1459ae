"""Choose a training recipe on text held out from TRAIN: train candidates, score them on a selection slice.

Each candidate is a recipe plus field overrides (`name=recipe:field=value;field=value`). Every candidate
trains on the same rows with the same teacher and is scored on the same selection slice: rows of the
task's GLUE train split that are not among the training rows (never dev). Reported per candidate:
accuracy (gold), the teacher's accuracy, agreement with the teacher and partner sensitivity over
--groupings random groupings, the hold-out epoch chosen and the training seconds. Rows are appended to
--out (JSON lines), with the command, machine and date; GLUE dev is reported only for the winner, by
benchmarks/grid.py.

Usage (the demo-scale selection of docs/RESULTS.md):
    python benchmarks/select_recipe.py --teacher runs/demo/teacher --task sst2 \\
        --data-dir ../shared/data/glue --train-rows bundled --select-rows 2000 \\
        --candidate "base=demo" --candidate "state4=demo:lambda_state=4" --out docs/results/selection.jsonl
With --reuse --repick MEASURE a finished run first keeps its epoch by another hold-out measure (it resumes
the run with that --select-on: saved epochs are scored, nothing is trained), then that epoch is scored.
With --reuse --epoch E the checkpoint of epoch E is scored instead of the kept one (a diagnostic; the row
says so in `scored_epoch`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from revmux.backbones import load_backbone
from revmux.data import TaskData, load_task
from revmux.evaluate import evaluate
from revmux.model import MuxModel
from revmux.recipes import load_recipe
from revmux.train.config import SELECT_ON, TrainConfig
from revmux.train.extra import read_unlabeled
from revmux.train.trainer import train


def candidate(spec: str) -> tuple[str, str, dict[str, Any]]:
    """'name=recipe:field=value;field=value' -> (name, recipe, overrides as strings)."""
    name, _, rest = spec.partition("=")
    recipe, _, fields = rest.partition(":")
    overrides = dict(f.split("=", 1) for f in fields.split(";") if f)
    return name, recipe, overrides


def slices(
    task: str, data_dir: str, train_rows: str, select_rows: int, seed: int, min_words: int = 0
) -> tuple[TaskData, TaskData]:
    """(training rows, selection rows): 'bundled' trains on the bundled SST-2 sample, an integer on that many
    rows of the GLUE train split; selection rows are other rows of the GLUE train split (texts disjoint),
    of at least `min_words` words (SST-2 train is mostly short phrases; its dev and test, full sentences)."""
    full = load_task(task, "train", data_dir)
    rng = random.Random(seed)
    order = list(range(len(full)))
    rng.shuffle(order)
    if train_rows == "bundled":
        fit = load_task("sst2", "train")
        rest = order
    else:
        n = int(train_rows)
        fit, rest = full.subset(order[:n]), order[n:]
    seen = set(zip(fit.texts, fit.pairs or [None] * len(fit), strict=True))
    pairs = full.pairs or [None] * len(full)
    pick = [
        i for i in rest if (full.texts[i], pairs[i]) not in seen and len(full.texts[i].split()) >= min_words
    ][:select_rows]
    return fit, full.subset(pick)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="Fine-tuned teacher directory.")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", required=True, help="GLUE download (the selection slice comes from train).")
    ap.add_argument("--train-rows", default="bundled", help="'bundled' or a number of GLUE train rows.")
    ap.add_argument("--select-rows", type=int, default=2000)
    ap.add_argument(
        "--select-min-words", type=int, default=0, help="Score only on selection rows this long (words)."
    )
    ap.add_argument(
        "--serve-window",
        type=int,
        default=None,
        help="Also score with groups drawn as the server draws them (arrival windows of this many).",
    )
    ap.add_argument(
        "--reuse", action="store_true", help="Score a candidate's adapter already in --work-dir, untrained."
    )
    ap.add_argument(
        "--repick",
        choices=SELECT_ON,
        default=None,
        help="With --reuse: first keep the run's epoch by this hold-out measure (revmux train --resume "
        "--select-on; no training), then score it.",
    )
    ap.add_argument(
        "--epoch",
        type=int,
        default=None,
        help="With --reuse: score the run's checkpoint of this epoch instead of the epoch it kept (a diagnostic: "
        "what the run reached there, not a choice a recipe makes).",
    )
    ap.add_argument(
        "--unlabeled",
        default=None,
        help="Extra text for every candidate, labelled by the teacher (one per line).",
    )
    ap.add_argument("--candidate", action="append", required=True, help="name=recipe:field=value;...")
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--groupings", type=int, default=3)
    ap.add_argument("--work-dir", default="runs/select")
    ap.add_argument("--out", default="docs/results/selection.jsonl")
    args = ap.parse_args(argv)
    if args.epoch is not None and not args.reuse:
        ap.error("--epoch scores a finished run: pass --reuse too")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = shlex.join(["python", "benchmarks/select_recipe.py", *(sys.argv[1:] if argv is None else argv)])
    view = load_backbone(args.teacher)
    fit, select = slices(
        args.task, args.data_dir, args.train_rows, args.select_rows, args.seed, args.select_min_words
    )
    extra = args.unlabeled and read_unlabeled(args.unlabeled, label_names=fit.label_names, pair=fit.is_pair)
    for spec in args.candidate:
        name, recipe, overrides = candidate(spec)
        out_dir = Path(args.work_dir) / f"{args.task}-{name}-n{args.n}-k{args.k}-s{args.seed}"
        if args.reuse and (out_dir / "train_log.json").exists():  # scored again, on another slice
            log = json.loads((out_dir / "train_log.json").read_text())
            if args.repick:
                config = TrainConfig.from_saved(
                    log["config"] | {"select_on": args.repick}, source=str(out_dir)
                )
                train(
                    view, fit, config, out_dir, backbone_path=args.teacher, task=args.task, progress=False,
                    resume=True, unlabeled=extra or None,
                )  # fmt: skip
                log = json.loads((out_dir / "train_log.json").read_text())
            best_epoch, epochs, seconds = log["best_epoch"], log["epochs"], log["train_seconds"]
            resolved = log["config"]
        else:
            values = load_recipe(recipe) | overrides | {"n": args.n, "k": args.k, "seed": args.seed}
            values.pop("teacher", None)
            values.pop("description", None)
            config = TrainConfig.from_dict(values, source=spec)
            resolved = config.to_dict()
            start = time.perf_counter()
            result = train(
                view, fit, config, out_dir, backbone_path=args.teacher, task=args.task, progress=False,
                unlabeled=extra or None,
            )  # fmt: skip
            best_epoch, epochs, seconds = result.best_epoch, result.epochs, time.perf_counter() - start
        scored = out_dir
        if args.epoch is not None:
            scored = out_dir / "checkpoints" / f"epoch-{args.epoch}"
            if not scored.is_dir():
                raise SystemExit(f"{scored} does not exist: {out_dir} saved epochs 1 to {epochs}.")
            best_epoch = args.epoch
        model = MuxModel.from_pretrained(scored, view)
        report = evaluate(model, select, groupings=args.groupings, seed=1000, serve_window=args.serve_window)
        row = {
            "candidate": name, "recipe": recipe, "overrides": overrides, "task": args.task, "n": args.n,
            "k": args.k, "seed": args.seed, "train_rows": len(fit), "select_rows": len(select),
            "select_min_words": args.select_min_words, "unlabeled": args.unlabeled, "repick": args.repick,
            "scored_epoch": args.epoch,
            "groupings": args.groupings,
            "accuracy": report.accuracy_mean, "accuracy_std": report.accuracy_std,
            "teacher_accuracy": report.teacher_accuracy,
            "drop_pts": 100 * (report.teacher_accuracy - report.accuracy_mean),
            "agreement": report.agreement, "partner_sensitivity": report.partner_sensitivity,
            "best_epoch": best_epoch, "epochs": epochs, "seconds": seconds,
            "served": report.extra.get("served"),
            "config": resolved, "command": command, "machine": platform.node(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        }  # fmt: skip
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{name:>24}: acc {row['accuracy']:.4f} (teacher {row['teacher_accuracy']:.4f}, "
            f"drop {row['drop_pts']:.2f} pts) agree {row['agreement']:.4f} sens "
            f"{row['partner_sensitivity']:.4f} best ep {best_epoch}/{epochs} {seconds:.0f}s",
            flush=True,
        )
        if row["served"]:
            sv = row["served"]
            print(
                f"{'served':>24}: acc {sv['accuracy_mean']:.4f} (drop "
                f"{100 * (row['teacher_accuracy'] - sv['accuracy_mean']):.2f} pts) agree {sv['agreement']:.4f} "
                f"sens {sv['partner_sensitivity']:.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
