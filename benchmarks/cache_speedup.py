"""What the prefill/teacher cache buys: adapter training with the cache vs running the backbone live.

Trains the same adapters (same seed, rows and epochs) twice on the same frozen teacher: once with a
freshly built cache (its build time reported separately, then a second, cached run timing only the
epochs), once with `use_cache=False` (every step runs layers [0, k) and the unmultiplexed teacher
again). Reports seconds per epoch of each and their ratio, plus the cache build time.

Usage:
    python benchmarks/cache_speedup.py --teacher runs/frontier/minilm/sst2/teacher \
        --data-dir ../shared/data/glue --rows 4000 --out docs/results/cache_speedup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from revmux.backbones import load_backbone
from revmux.data import load_task
from revmux.train.trainer import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="Fine-tuned teacher directory.")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--out", default="docs/results/cache_speedup.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = shlex.join(["python", "benchmarks/cache_speedup.py", *(sys.argv[1:] if argv is None else argv)])

    view = load_backbone(args.teacher)
    data = load_task(args.task, "train", args.data_dir)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache_root = Path(tmp) / "cache"
        for name, use_cache in (("build", True), ("cached", True), ("live", False)):
            config = TrainConfig(
                n=args.n,
                k=args.k,
                epochs=args.epochs,
                max_length=args.max_length,
                max_train_rows=args.rows,
                use_cache=use_cache,
            )
            result = train(
                view,
                data,
                config,
                Path(tmp) / name,
                backbone_path=args.teacher,
                task=args.task,
                cache_root=cache_root,
                progress=False,
            )
            results[name] = {
                "train_seconds": result.train_seconds,
                "cache_build_seconds": result.cache_build_seconds,
            }
            print(
                f"{name}: train {result.train_seconds:.1f} s, cache build {result.cache_build_seconds:.1f} s"
            )
    per_epoch_cached = results["cached"]["train_seconds"] / args.epochs
    per_epoch_live = results["live"]["train_seconds"] / args.epochs
    record = {
        "command": command,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": args.task,
        "rows": args.rows,
        "n": args.n,
        "k": args.k,
        "epochs": args.epochs,
        "cache_build_seconds": results["build"]["cache_build_seconds"],
        "epoch_seconds_cached": per_epoch_cached,
        "epoch_seconds_live": per_epoch_live,
        "speedup": per_epoch_live / per_epoch_cached,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
