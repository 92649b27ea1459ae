"""Score every saved epoch of a training run on a selection slice of TRAIN: which epoch should be kept?

For each `checkpoints/epoch-i` of --run: accuracy and teacher agreement on the run's own train hold-out,
and the drop below the teacher and agreement on the selection slice of `select_recipe.py` (other train
rows, never dev), so that rules for picking the kept epoch can be compared on text the run never saw.
Rows are appended to --out (JSON lines) with the command, machine and date.

Usage (the demo-scale study in docs/RESULTS.md's notes):
    python benchmarks/epoch_picks.py --run runs/select-1201/sst2-n4base-n4-k2-s0 --teacher runs/demo/teacher \\
        --data-dir ../shared/data/glue --seed 0 --select-min-words 15 --out runs/epoch_picks.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from select_recipe import slices

from revmux.backbones import load_backbone
from revmux.evaluate import evaluate
from revmux.model import MuxModel
from revmux.train import TrainConfig, select_rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="A training run directory (with checkpoints/).")
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--train-rows", default="bundled")
    ap.add_argument("--select-rows", type=int, default=2000)
    ap.add_argument("--select-min-words", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="The slice's seed (select_recipe.py --seed).")
    ap.add_argument("--epochs", default=None, help="Only these epochs (e.g. 2,5; default every saved one).")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    command = shlex.join(["python", "benchmarks/epoch_picks.py", *(sys.argv[1:] if argv is None else argv)])
    run = Path(args.run)
    view = load_backbone(args.teacher)
    fit, select = slices(
        args.task, args.data_dir, args.train_rows, args.select_rows, args.seed, args.select_min_words
    )
    config = TrainConfig.from_saved(
        json.loads((run / "train_log.json").read_text())["config"], source=str(run)
    )
    held = select_rows(fit, config)[1]
    epochs = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("epoch-*"))
    wanted = {int(e) for e in args.epochs.split(",")} if args.epochs else set(epochs)
    for epoch in (e for e in epochs if e in wanted):
        model = MuxModel.from_pretrained(run / "checkpoints" / f"epoch-{epoch}", view)
        h = evaluate(model, held, groupings=3, seed=1000)
        s = evaluate(model, select, groupings=3, seed=1000)
        row = {
            "run": str(run), "epoch": epoch, "holdout_rows": len(held), "holdout_accuracy": h.accuracy_mean,
            "holdout_agreement": h.agreement, "select_rows": len(select),
            "select_min_words": args.select_min_words, "slice_drop_pts": 100 * (s.teacher_accuracy - s.accuracy_mean),
            "slice_agreement": s.agreement, "command": command, "machine": platform.node(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        }  # fmt: skip
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
