"""Regenerate the accuracy frontier (docs/results/frontier.json) on real GLUE data.

For each task: fine-tune a teacher once (full fine-tuning of backbone + head), then for each
(mux, N, k) train adapters only on the frozen teacher and evaluate on dev over R random groupings.
Rows already present in the output JSON are kept and skipped, so an interrupted run resumes.

QNLI: only its dev split exists here, so it is split with a fixed seed into 4,463 train rows and
1,000 held-out rows that are reported; those numbers are not comparable to full-QNLI results.

Usage (the exact commands behind docs/RESULTS.md are written there):
    python benchmarks/frontier.py --backbone minilm --task sst2 --grid revmux:2:2,adapter:2:2 \
        --data-dir ../shared/data/glue --out docs/results/frontier.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

from revmux.backbones import load_backbone
from revmux.data import TaskData, load_task, split_fixed
from revmux.evaluate import evaluate
from revmux.model import MuxModel
from revmux.train.finetune import finetune
from revmux.train.trainer import TrainConfig, train


def task_splits(task: str, data_dir: str | None, seed: int) -> tuple[TaskData, TaskData]:
    """(train, reported eval) for a task; QNLI's dev is split with a fixed seed (see module docstring)."""
    if task == "qnli":
        dev = load_task("qnli", "dev", data_dir)
        return split_fixed(dev, 1000, seed=seed)
    return load_task(task, "train", data_dir), load_task(task, "dev", data_dir)


def parse_grid(text: str) -> list[tuple[str, int, int]]:
    """'revmux:2:2,adapter:4:1' -> [(kind, n, k), ...]."""
    rows = []
    for item in text.split(","):
        kind, n, k = item.split(":")
        rows.append((kind, int(n), int(k)))
    return rows


def machine() -> str:
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch threads default"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--grid", default="revmux:2:2")
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--out", default="docs/results/frontier.json")
    ap.add_argument("--work-dir", default="runs/frontier")
    ap.add_argument("--teacher-epochs", type=int, default=1)
    ap.add_argument("--teacher-rows", type=int, default=16000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-rows", type=int, default=16000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--groupings", type=int, default=10)
    ap.add_argument("--lambda-kd", type=float, default=1.0)
    ap.add_argument("--lambda-cos", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--up-norm", action="store_true", help="LayerNorm after Up (recipe experiment).")
    ap.add_argument(
        "--pca-composite", action="store_true", help="revmux: composite in the layer-k PCA basis (recipe)."
    )
    ap.add_argument("--batch-groups", type=int, default=32, help="Groups per optimizer step.")
    ap.add_argument("--lr", type=float, default=1e-3, help="Peak learning rate of the adapters.")
    ap.add_argument("--f-hidden", type=int, default=None, help="Width of F_n (default d).")
    ap.add_argument("--up-hidden", type=int, default=None, help="Hidden width of Up (default 2d).")
    ap.add_argument(
        "--recipe",
        default="default",
        help="Name of this recipe; rows are keyed by (task, backbone, mux, N, k, recipe).",
    )
    args = ap.parse_args()

    out = Path(args.out)
    rows: list[dict] = json.loads(out.read_text()) if out.is_file() else []
    work = Path(args.work_dir) / args.backbone / args.task
    train_data, eval_data = task_splits(args.task, args.data_dir, args.seed)
    command = "python " + " ".join(sys.argv)

    teacher_dir = work / "teacher"
    if not (teacher_dir / "config.json").is_file():
        finetune(
            args.backbone,
            train_data,
            teacher_dir,
            epochs=args.teacher_epochs,
            max_train_rows=args.teacher_rows,
            max_length=args.max_length,
            seed=args.seed,
        )
    view = load_backbone(teacher_dir)

    for kind, n, k in parse_grid(args.grid):
        key = (args.task, args.backbone, kind, n, k, args.recipe)
        if any(
            (r["task"], r["backbone"], r["mux"], r["n"], r["k"], r.get("recipe", "default")) == key
            for r in rows
        ):
            print(f"skip {key}: already in {out}")
            continue
        suffix = "" if args.recipe == "default" else f"-{args.recipe}"
        adapter_dir = work / f"{kind}-n{n}-k{k}{suffix}"
        config = TrainConfig(
            kind=kind,
            n=n,
            k=k,
            epochs=args.epochs,
            max_length=args.max_length,
            max_train_rows=args.train_rows,
            lambda_kd=args.lambda_kd,
            lambda_cos=args.lambda_cos,
            seed=args.seed,
            up_norm=args.up_norm,
            pca_composite=args.pca_composite,
            batch_groups=args.batch_groups,
            lr=args.lr,
            f_hidden=args.f_hidden,
            up_hidden=args.up_hidden,
        )
        resume = (adapter_dir / "checkpoints").is_dir()  # an interrupted run continues where it stopped
        result = train(
            view,
            train_data,
            config,
            adapter_dir,
            backbone_path=str(teacher_dir),
            task=args.task,
            resume=resume,
        )
        model = MuxModel.from_pretrained(adapter_dir, view)
        report = evaluate(
            model, eval_data, groupings=args.groupings, seed=args.seed, max_length=args.max_length
        )
        row = {
            **report.to_dict(),
            "task": args.task,
            "backbone": args.backbone,
            "mux": kind,
            "recipe": args.recipe,
            "train_seconds": result.train_seconds,
            "cache_build_seconds": result.cache_build_seconds,
            "trainable_params": result.trainable_params,
            "drop_points": 100 * (report.teacher_accuracy - report.accuracy_mean),
            "train_rows": min(args.train_rows, len(train_data)),
            "epochs": args.epochs,
            "eval_split": "qnli dev held-out 1000 (seed split)" if args.task == "qnli" else "dev",
            "command": command,
            "machine": machine(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        }
        rows.append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")
        print(
            f"{args.task} {args.backbone} {kind} N={n} k={k}: {100 * row['accuracy_mean']:.1f} +- "
            f"{100 * row['accuracy_std']:.1f} (teacher {100 * row['teacher_accuracy']:.1f}, "
            f"drop {row['drop_points']:.1f} pts, bound {row['bound']:.2f}x, train {row['train_seconds']:.0f}s)"
        )


if __name__ == "__main__":
    main()
