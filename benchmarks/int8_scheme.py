"""Which int8 scheme the backbone gets (weight scales, input smoothing), chosen on train rows, reported on dev.

Usage: python benchmarks/int8_scheme.py --adapter runs/demo/adapter-revmux-n2-k2 --task sst2 \
    --choose-on ../shared/data/glue --out docs/results/int8_scheme.json
For each scheme (torch dynamic int8 on every nn.Linear of the backbone, one weight scale per tensor or per
output channel, the layers' inputs smoothed or not (revmux.backbones.quantize.smooth_linears); adapters
fp32) and for fp32, the
adapter is evaluated on train rows it did not train on (benchmarks/partners.py `unseen_train_rows`), and on
the dev split. The scheme whose multiplexed accuracy is closest to the fp32 multiplexed model's on the train
rows is the one `revmux.backbones.quantize` uses; dev is reported once, never used to choose. Writes one
record with the command, machine and date; render_results.py turns it into a RESULTS table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from partners import unseen_train_rows
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

from revmux.backbones.quantize import QUANTIZE_ATTR, smooth_linears
from revmux.data import TaskData, load_task
from revmux.evaluate import evaluate
from revmux.model import MuxModel

SCHEMES = {  # name: (weight qconfig, smoothing alpha or None)
    "per-tensor": (default_dynamic_qconfig, None),
    "per-channel": (per_channel_dynamic_qconfig, None),
    "per-channel, smoothed 0.5": (per_channel_dynamic_qconfig, 0.5),
    "per-channel, smoothed 0.8": (per_channel_dynamic_qconfig, 0.8),
}


def load(adapter: str, scheme: str) -> MuxModel:
    """The adapter's model, its backbone converted to int8 with `scheme` ("fp32": left as it is)."""
    model = MuxModel.from_pretrained(adapter)
    if scheme != "fp32":
        hf = model.view.model
        qconfig, alpha = SCHEMES[scheme]
        if alpha is not None:
            smooth_linears(model.view, alpha)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(hf, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
        setattr(hf, QUANTIZE_ATTR, "int8")
        hf.eval()
    return model


def scores(adapter: str, data: TaskData, groupings: int) -> dict[str, dict[str, float]]:
    """Teacher and multiplexed accuracy (percent), agreement, per scheme and fp32, on `data`."""
    out = {}
    for scheme in ("fp32", *SCHEMES):
        r = evaluate(load(adapter, scheme), data, groupings=groupings)
        out[scheme] = {
            "teacher": 100 * r.teacher_accuracy,
            "mux": 100 * r.accuracy_mean,
            "mux_std": 100 * r.accuracy_std,
            "agreement": 100 * r.agreement,
        }
        print(scheme, {k: round(v, 2) for k, v in out[scheme].items()}, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--task", default="sst2")
    ap.add_argument(
        "--choose-on", required=True, help="GLUE download whose train split holds the unseen rows"
    )
    ap.add_argument("--choose-rows", type=int, default=2000)
    ap.add_argument(
        "--data-dir", default=None, help="GLUE download for dev (default: the bundled sst2 sample)"
    )
    ap.add_argument("--groupings", type=int, default=10)
    ap.add_argument("--out", default="docs/results/int8_scheme.json")
    args = ap.parse_args(argv)
    full = load_task(args.task, "train", args.choose_on)
    rows, where = unseen_train_rows(args.adapter, args.task, full, args.choose_rows)
    chosen = scores(args.adapter, full.subset(rows), args.groupings)
    gap = {s: abs(chosen["fp32"]["mux"] - chosen[s]["mux"]) for s in SCHEMES}
    winner = min(gap, key=gap.get)
    record = {
        "adapter": Path(args.adapter).name,
        "task": args.task,
        "choose": {"rows": len(rows), "where": where, "scores": chosen, "winner": winner},
        "dev": scores(args.adapter, load_task(args.task, "dev", args.data_dir), args.groupings),
        "command": shlex.join(["python", "benchmarks/int8_scheme.py", *(argv or sys.argv[1:])]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"closest to fp32 on {len(rows)} {where}: {winner}; written to {out}")


if __name__ == "__main__":
    main()
