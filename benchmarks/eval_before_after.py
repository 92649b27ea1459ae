"""How much the evaluation fix of 2026-11-30 moves an adapter's accuracy.

Before that fix, `revmux eval` prefilled rows in length-sorted chunks and left zeros past each chunk's last
real column, so a short request grouped with a longer one was mixed with zeros where serving and training
give it its padding states. This script evaluates one adapter both ways on the same 10 groupings and prints
both accuracies (mean and std over groupings), so rows measured before the fix can be read against it.

Usage: python benchmarks/eval_before_after.py --adapter runs/demo/adapter-revmux-n2-k2 [--task sst2 --data-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from revmux.data import load_task
from revmux.evaluate import Prefilled, grouping_permutation, predict_grouping, prefill_rows, prepared
from revmux.model import MuxModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--groupings", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    model = MuxModel.from_pretrained(args.adapter).eval()
    data = prepared(model, load_task(args.task, "dev", args.data_dir), None)
    N, M, chunk = model.n, len(data), args.batch_size * model.n
    labels = torch.tensor(data.labels)
    acc: dict[str, list[float]] = {"now": [], "before": []}
    with torch.inference_mode():
        states, probs = prefill_rows(model, data, chunk, None)
        teacher = probs.argmax(-1)
        before = states.hidden.clone()  # the earlier evaluation: zeros past each chunk's last real column
        order = torch.argsort(states.mask.sum(1), stable=True)
        for s in range(0, M, chunk):
            idx = order[s : s + chunk]
            before[idx, int(states.mask[idx].sum(1).max()) :] = 0
        ways = {"now": states, "before": Prefilled(before, states.mask)}
        for r in range(args.groupings):
            perm = grouping_permutation(M, r)
            for name, st in ways.items():
                pred = teacher.clone()
                predict_grouping(
                    model, lambda i, st=st: st.rows(model.view, i), perm[: (M // N) * N], chunk, pred
                )
                acc[name].append(float((pred == labels).float().mean()))
    for name, values in acc.items():
        print(f"{name}: {100 * statistics.fmean(values):.2f} +- {100 * statistics.pstdev(values):.2f}")


if __name__ == "__main__":
    main()
