"""Trained SmolLM2-135M-Instruct rows for docs/RESULTS.md: both teacher styles and RevMUX adapters on them.

For each task:
- the sequence-classification teacher (`--seqcls`): SmolLM2 with a new classification head
  (LlamaForSequenceClassification), fully fine-tuned on `--teacher-rows` training rows, then its accuracy on
  the GLUE dev split at N = 1;
- for each N:k in `--grid`: RevMUX adapters trained on the frozen prompt + verbalizer teacher (chat
  template, answer read from the LM head restricted to the verbalizer tokens at each request's last real
  token), `--train-rows` rows and `--epochs` epochs from the layer-k prefill cache, evaluated on dev over
  `--groupings` random groupings (accuracy mean and std, teacher accuracy, agreement, partner sensitivity).

Rows go to `--out` (default docs/results/smollm2_trained.json), keyed by (task, teacher, N, k, recipe); rows
already there are skipped and an interrupted adapter run resumes from its last epoch, so the script can be
rerun until it finishes. Speeds of the same (N, k) come from benchmarks/llm_rows.py (docs/results/smollm2.json).

Usage:
    python benchmarks/llm_frontier.py --tasks sst2,rte --grid 2:8,4:8,2:15,4:15 --seqcls \
        --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from llm_rows import parse_pairs  # the sibling script (benchmarks/ is on sys.path when run as a script)

from revmux.backbones import load_backbone
from revmux.data import load_task
from revmux.evaluate import evaluate
from revmux.model import MuxModel
from revmux.prompting import default_prompt, load_prompted_backbone
from revmux.train.finetune import finetune
from revmux.train.trainer import TrainConfig, train


def _save(out: Path, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


def _has(rows: list[dict], task: str, teacher: str, n: int, k: int, recipe: str = "default") -> bool:
    key = (task, teacher, n, k, recipe)
    return any((r["task"], r["teacher"], r["n"], r["k"], r.get("recipe", "default")) == key for r in rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="Decoder LM directory or zoo name.")
    ap.add_argument("--tasks", default="sst2,rte")
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--grid", default="2:8,4:8,2:15,4:15", help="N:k pairs to train, comma-separated.")
    ap.add_argument("--train-rows", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-groups", type=int, default=8, help="Groups per optimizer step.")
    ap.add_argument("--lr", type=float, default=1e-3, help="Peak learning rate of the adapters.")
    ap.add_argument("--groupings", type=int, default=10)
    ap.add_argument("--eval-rows", type=int, default=None, help="Evaluate on the first rows of dev only.")
    ap.add_argument("--max-length", type=int, default=256, help="Tokens per prompted request.")
    ap.add_argument("--seqcls", action="store_true", help="Also fine-tune and evaluate the seq-cls teacher.")
    ap.add_argument("--teacher-rows", type=int, default=2000)
    ap.add_argument("--teacher-epochs", type=int, default=1)
    ap.add_argument("--teacher-lr", type=float, default=3e-5)
    ap.add_argument("--teacher-max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pca-composite", action="store_true", help="Composite in the layer-k PCA basis (see RevMUX)."
    )
    ap.add_argument(
        "--shared-prefix", action="store_true", help="The common prompt prefix enters the tail as is."
    )
    ap.add_argument("--recipe", default="default", help="Name of this recipe; part of each row's key.")
    ap.add_argument("--work-dir", default="runs/llm")
    ap.add_argument("--out", default="docs/results/smollm2_trained.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    command = shlex.join(["python", "benchmarks/llm_frontier.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out)
    rows: list[dict] = json.loads(out.read_text()) if out.is_file() else []
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    common = {"model": args.model, "command": command, "machine": machine}
    for task in args.tasks.split(","):
        train_data = load_task(task, "train", args.data_dir)
        dev = load_task(task, "dev", args.data_dir)
        if args.eval_rows is not None:
            dev = dev.subset(list(range(min(args.eval_rows, len(dev)))))
        work = Path(args.work_dir) / args.model / task
        if args.seqcls and not _has(rows, task, "seqcls", 1, 0):
            teacher_dir = work / "seqcls-teacher"
            start = time.perf_counter()
            if not (teacher_dir / "config.json").is_file():
                finetune(
                    args.model,
                    train_data,
                    teacher_dir,
                    epochs=args.teacher_epochs,
                    lr=args.teacher_lr,
                    batch_size=16,
                    max_length=args.teacher_max_length,
                    max_train_rows=args.teacher_rows,
                    seed=args.seed,
                )
            seconds = time.perf_counter() - start
            view = load_backbone(teacher_dir)
            teacher = MuxModel.from_backbone(view, n=1, k=0, backbone_path=str(teacher_dir))
            report = evaluate(teacher, dev, groupings=1, max_length=args.teacher_max_length, task=task)
            rows.append(
                {
                    **report.to_dict(),
                    **common,
                    "task": task,
                    "teacher": "seqcls",
                    "mux": None,
                    "n": 1,
                    "k": 0,
                    "train_rows": min(args.teacher_rows, len(train_data)),
                    "epochs": args.teacher_epochs,
                    "eval_rows": len(dev),
                    "train_seconds": seconds,
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
            _save(out, rows)
            print(
                f"{task}: seq-cls teacher {100 * report.teacher_accuracy:.1f}% ({seconds:.0f} s)", flush=True
            )

        spec = default_prompt("chat", task, dev.label_names, is_pair=dev.is_pair)
        view = load_prompted_backbone(args.model, spec)
        for n, k in parse_pairs(args.grid):
            if _has(rows, task, "prompt", n, k, args.recipe):
                print(f"skip {task} prompt N={n} k={k} ({args.recipe}): already in {out}")
                continue
            suffix = "" if args.recipe == "default" else f"-{args.recipe}"
            adapter_dir = work / f"revmux-n{n}-k{k}{suffix}"
            config = TrainConfig(
                kind="revmux",
                n=n,
                k=k,
                epochs=args.epochs,
                batch_groups=args.batch_groups,
                lr=args.lr,
                max_length=args.max_length,
                max_train_rows=args.train_rows,
                seed=args.seed,
                pca_composite=args.pca_composite,
                shared_prefix=args.shared_prefix,
            )
            result = train(
                view,
                train_data,
                config,
                adapter_dir,
                backbone_path=args.model,
                task=task,
                resume=(adapter_dir / "checkpoints").is_dir(),
                prompt=spec,
            )
            model = MuxModel.from_pretrained(adapter_dir, view)
            report = evaluate(
                model, dev, groupings=args.groupings, seed=args.seed, max_length=args.max_length, task=task
            )
            row = {
                **report.to_dict(),
                **common,
                "task": task,
                "teacher": "prompt",
                "prompt": spec.to_dict(),
                "mux": "revmux",
                "recipe": args.recipe,
                "trainable_params": result.trainable_params,
                "train_seconds": result.train_seconds,
                "cache_build_seconds": result.cache_build_seconds,
                "train_rows": min(args.train_rows, len(train_data)),
                "epochs": args.epochs,
                "batch_groups": args.batch_groups,
                "eval_rows": len(dev),
                "drop_points": 100 * (report.teacher_accuracy - report.accuracy_mean),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            rows.append(row)
            _save(out, rows)
            print(
                f"{task} prompt teacher, revmux N={n} k={k}: {100 * row['accuracy_mean']:.1f} +- "
                f"{100 * row['accuracy_std']:.1f} (teacher {100 * row['teacher_accuracy']:.1f}, agreement "
                f"{100 * row['agreement']:.1f}, train {row['train_seconds']:.0f} s)",
                flush=True,
            )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
