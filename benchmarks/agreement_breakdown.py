"""Where a multiplexed model disagrees with its teacher: agreement by slot, by the teacher's confidence and by
request length, on a task's dev split over random groupings (the groupings of `revmux eval`).

Usage: python benchmarks/agreement_breakdown.py --adapter runs/grid/minilm/sst2/revmux-n4-k2-default-seed0 \\
    --task sst2 --data-dir ../shared/data/glue --out docs/results/agreement_breakdown.json
Appends (or replaces, per adapter) one record with the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from revmux.data import TaskData, load_task
from revmux.evaluate import grouping_outputs, grouping_permutation
from revmux.model import MuxModel

MARGINS = (0.0, 0.2, 0.5, 0.8, 0.95, 1.01)  # bucket edges of the teacher's top-1 minus top-2 probability
LENGTHS = (0, 16, 24, 32, 48, 10_000)  # bucket edges of the request's token count


def buckets(values: torch.Tensor, hits: torch.Tensor, edges: tuple[float, ...]) -> list[dict]:
    """Rows and mean of `hits` per [edges[i], edges[i + 1]) bucket of `values` (empty buckets left out)."""
    out = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        sel = (values >= lo) & (values < hi)
        if sel.any():
            out.append({"from": lo, "to": hi, "rows": int(sel.sum()), "agreement": float(hits[sel].mean())})
    return out


def breakdown(model: MuxModel, data: TaskData, groupings: int, seed: int = 0) -> dict:
    """Agreement overall, per slot, by teacher margin and by length, over the groupings of `revmux eval`
    (`evaluate.grouping_outputs`: the same groupings, teacher and states)."""
    states, probs, preds = grouping_outputs(model, data, groupings=groupings, seed=seed)
    teacher = probs.argmax(-1)
    N, M = model.n, len(data)
    per_slot = torch.zeros(N)
    for r, pred in enumerate(preds):  # grouping r is grouping_permutation(M, seed + r)
        perm = grouping_permutation(M, seed + r)[: M // N * N]
        for s in range(N):
            rows = perm[s::N]
            per_slot[s] += float((pred[rows] == teacher[rows]).float().mean()) / groupings
    top = probs.topk(2, dim=-1).values
    hits = torch.stack([(p == teacher).float() for p in preds]).mean(0)  # per row, over the groupings
    return {
        "agreement": float(hits.mean()),
        "per_slot": [float(a) for a in per_slot],
        "by_teacher_margin": buckets(top[:, 0] - top[:, 1], hits, MARGINS),
        "by_length": buckets(states.mask.sum(1).float().cpu(), hits, LENGTHS),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--groupings", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="Grouping r is drawn with seed + r (revmux eval: 0).")
    ap.add_argument(
        "--select-rows",
        type=int,
        default=None,
        help="Score the selection slice of benchmarks/select_recipe.py (this many train rows outside the bundled "
        "sample) instead of dev.",
    )
    ap.add_argument("--out", default="docs/results/agreement_breakdown.json")
    args = ap.parse_args()
    model = MuxModel.from_pretrained(args.adapter).eval()
    if args.select_rows is None:
        split, data = "dev", load_task(args.task, "dev", args.data_dir)
    else:
        from select_recipe import slices

        split = f"selection slice ({args.select_rows} train rows)"
        data = slices(args.task, args.data_dir, "bundled", args.select_rows, 0)[1]
    record = {
        "adapter": args.adapter, "task": args.task, "kind": model.config.kind, "n": model.n, "k": model.k,
        "groupings": args.groupings, "split": split, **breakdown(model, data, args.groupings, args.seed),
        "command": shlex.join(["python", "benchmarks/agreement_breakdown.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, torch threads {torch.get_num_threads()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }  # fmt: skip
    out = Path(args.out)
    records = [
        r for r in (json.loads(out.read_text()) if out.exists() else []) if r["adapter"] != args.adapter
    ]
    out.write_text(json.dumps([*records, record], indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
