"""Multiplexing strangers, measured on a trained adapter: adversarial partners and the fallback sweep.

Usage: python benchmarks/partners.py --adapter revmux-demo/adapter-revmux-n2-k2 --task sst2 \
    [--data-dir ../shared/data/glue] --candidates 40 --rows 200 --margins 0,0.1,0.2,0.3,0.4,0.5,0.6 \
    --out docs/results/partners.json
Appends (or replaces, per adapter) one record with the command, machine and date; render_results.py
turns the file into the RESULTS section "Multiplexing strangers" and docs/fallback.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from revmux.adversarial import adversarial_partners
from revmux.data import TaskData, load_task
from revmux.fallback import fallback_sweep
from revmux.model import MuxModel


def unseen_train_rows(adapter: str, task: str, full: TaskData, limit: int) -> tuple[list[int], str]:
    """Rows of `full` (the task's GLUE train split) the adapter did not train on, and where they come from:
    outside the bundled SST-2 sample for adapters trained on it (the demo's, up to `limit`), else the
    adapter's own hold-out (train_log.json's holdout_rows, rows it chose its epoch on, never trained on)."""
    log = json.loads((Path(adapter) / "train_log.json").read_text())
    held, fit = list(log["holdout_rows"]), int(log["train_rows"]) - int(log.get("teacher_labelled_rows", 0))
    bundled = load_task("sst2", "train")
    if task == "sst2" and fit + len(held) == len(bundled):
        order = list(range(len(full)))
        random.Random(0).shuffle(order)
        texts = set(bundled.texts)
        return [i for i in order if full.texts[i] not in texts][
            :limit
        ], "train rows outside the bundled sample"
    if fit + len(held) != len(full) or log["config"].get("max_train_rows") is not None:
        raise SystemExit(
            f"{adapter} did not train on all of {full.source}: its unseen rows are not known here"
        )
    return held, "the adapter's hold-out of the train split"


def choose_margin(model: MuxModel, args: argparse.Namespace, margins: list[float]) -> dict:
    """The smallest margin whose accuracy is within --max-drop points of the teacher on train rows the
    adapter did not train on (else the most accurate one), from a sweep over 3 groupings of that slice."""
    full = load_task(args.task, "train", args.choose_on)
    rows, where = unseen_train_rows(args.adapter, args.task, full, args.choose_rows)
    sweep = fallback_sweep(model, full.subset(rows), margins, groupings=3, seed=1000)
    ok = [f for f in sweep if 100 * (f["teacher_accuracy"] - f["accuracy_mean"]) <= args.max_drop]
    best = ok[0] if ok else max(sweep, key=lambda f: (f["accuracy_mean"], -f["margin"]))
    rule = (
        f"smallest margin within {args.max_drop} pts of the teacher on {len(rows)} train rows not trained on "
        f"({where})"
    )
    return {"margin": best["margin"], "rule": rule, "met": bool(ok), "rows": len(rows), "sweep": sweep}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default=None, help="GLUE download (default: the bundled sst2 sample)")
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--margins", default="0,0.1,0.2,0.3,0.4,0.5,0.6")
    ap.add_argument("--groupings", type=int, default=10)
    ap.add_argument("--out", default="docs/results/partners.json")
    ap.add_argument(
        "--choose-on",
        default=None,
        help="GLUE download: choose the adapter's default margin on rows of its train split it did not train "
        "on (outside the bundled SST-2 sample for adapters trained on it, else its hold-out), never on dev",
    )
    ap.add_argument("--choose-rows", type=int, default=2000)
    ap.add_argument(
        "--max-drop", type=float, default=0.3, help="points below the teacher the margin may leave"
    )
    args = ap.parse_args(argv)
    model = MuxModel.from_pretrained(args.adapter)
    data = load_task(args.task, "dev", args.data_dir)
    adversarial = adversarial_partners(model, data, candidates=args.candidates, rows=args.rows)
    margins = [float(m) for m in args.margins.split(",")]
    sweep = fallback_sweep(model, data, margins, groupings=args.groupings)
    choice = choose_margin(model, args, margins) if args.choose_on else None
    record = {
        "margin_choice": choice,
        "adapter": Path(args.adapter).name,
        "task": args.task,
        "n": model.n,
        "k": model.k,
        "kind": model.config.kind,
        "adversarial": adversarial.to_dict(),
        "fallback": sweep,
        "command": shlex.join(["python", "benchmarks/partners.py", *(argv or sys.argv[1:])]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    records = json.loads(out.read_text()) if out.is_file() else []
    records = [r for r in records if (r["adapter"], r["task"]) != (record["adapter"], record["task"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([*records, record], indent=2) + "\n")
    a = adversarial
    print(
        f"{record['adapter']} ({args.task}): some partner flips {a.flippable_rows:.1%} of rows; "
        f"{a.flip_share:.1%} of candidates flip a row; default margin {choice and choice['margin']}; written to {out}"
    )


if __name__ == "__main__":
    main()
