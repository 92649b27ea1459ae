"""How a multiplexed model's run cut moves its speed, against the fastest length-sorted plain model, in one run.

For each N, k and batch size it times, interleaved (A B C A B C ...): the mux (`MuxModel.__call__`,
length-aware) at every run cut given (`max_runs,min_rows_per_run`: the two knobs of `revmux.runs`, as
attributes of the model), and the length-sorted plain model of the same backend and precision at every
run count of `plain_run_choices` (the bench's "best" rule). It reports the medians and, per cut, the
speedup against the fastest plain run count and the efficiency (that speedup / bound). Fresh adapters:
their cost does not depend on their values. Run it on an otherwise idle machine.

Usage:
    python benchmarks/run_cut_grid.py --model minilm --n 2,4 --k 2,1 --quantize int8 --backend onnx \
        --cuts 4,16/8,8/16,8/4,8 --batch-sizes 32,128 --repeats 9 --threads 2 --json out.json
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
from typing import Any

import torch

from revmux.backbones import load_backbone
from revmux.bench import sorted_plain
from revmux.bench_baselines import plain_run_choices, prepare_baselines, sorted_ort
from revmux.bench_inputs import bench_texts, sample_requests
from revmux.bench_timing import PeakMemory, time_interleaved
from revmux.model import MuxModel


def _cuts(text: str) -> list[tuple[int, int]]:
    """'4,16/8,8' -> [(4, 16), (8, 8)]."""
    cuts = []
    for part in text.split("/"):
        max_runs, min_rows = (int(x) for x in part.split(","))
        if max_runs < 1 or min_rows < 1:
            raise SystemExit(f"--cuts takes max_runs,min_rows_per_run pairs >= 1 like 4,16/8,8; got {text!r}")
        cuts.append((max_runs, min_rows))
    return cuts


def cell(model: MuxModel, texts: list[str], args: argparse.Namespace, workdir: str) -> list[dict[str, Any]]:
    """The rows of one (N, k): per batch size, the mux at each cut against the plain runs, interleaved."""
    base, mux_model, eff = prepare_baselines(
        model, texts, None, args.max_length, [], args.quantize, workdir, args.backend
    )
    rows = []
    for bs in args.batch_sizes:
        batch_texts, _, _ = sample_requests(texts, None, bs, seed=0)
        batch = mux_model.encoder.replace(max_length=args.max_length).tokenize(batch_texts, None)
        fns = {}
        for runs in plain_run_choices(bs):
            if eff in base.sessions:
                fns[f"plain{runs}"] = sorted_ort(model, batch, base.sessions[eff], runs)
            else:
                fns[f"plain{runs}"] = sorted_plain(model, batch, base.views.get(eff), runs)
        for cut in args.cuts:

            def mux(cut: tuple[int, int] = cut, batch: dict = batch) -> object:
                mux_model.max_runs, mux_model.min_rows_per_run = cut
                with torch.inference_mode():
                    return mux_model(batch, length_aware=True)

            fns[f"mux{cut[0]},{cut[1]}"] = mux
        timed = time_interleaved(
            fns, repeats=args.repeats, warmup=args.warmup, memory=PeakMemory(torch.device("cpu"))
        )
        ms = {name: t.ms for name, t in timed.items()}
        plain = {name: v for name, v in ms.items() if name.startswith("plain")}
        best = min(plain, key=plain.get)
        bound = model.config.speedup_bound
        for cut in args.cuts:
            mux_model.max_runs, mux_model.min_rows_per_run = cut
            name = f"mux{cut[0]},{cut[1]}"
            rows.append(
                {
                    "n": model.n,
                    "k": model.k,
                    "batch_size": bs,
                    "cut": list(cut),
                    "mux_runs": mux_model.run_count(bs // model.n),
                    "mux_ms": ms[name],
                    "plain_variant": eff,
                    "plain_ms": plain,
                    "best_plain_runs": int(best.removeprefix("plain")),
                    "speedup_vs_best_plain": plain[best] / ms[name],
                    "bound": bound,
                    "efficiency": plain[best] / ms[name] / bound,
                }  # fmt: skip
            )
            r = rows[-1]
            print(
                f"N={model.n} k={model.k} batch {bs} cut {cut}: {r['mux_runs']} runs, {ms[name]:.1f} ms, "
                f"{r['speedup_vs_best_plain']:.2f}x {eff} at {r['best_plain_runs']} runs "
                f"({plain[best]:.1f} ms), efficiency {r['efficiency']:.2f}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--n", default="2,4", help="comma-separated N values (paired with --k)")
    ap.add_argument("--k", default="2,1", help="comma-separated k values, one per N")
    ap.add_argument(
        "--quantize", default="int8", help="none or int8 (the mux's and the plain model's backbone)"
    )
    ap.add_argument("--backend", default="onnx", help="torch or onnx")
    ap.add_argument("--cuts", type=_cuts, default=_cuts("4,16/8,8/16,8/4,8"))
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[32, 128])
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the rows and metadata to this file")
    args = ap.parse_args(argv)
    ns, ks = [int(x) for x in args.n.split(",")], [int(x) for x in args.k.split(",")]
    if len(ns) != len(ks):
        raise SystemExit(f"--n and --k pair up: give as many of each (got {args.n!r} and {args.k!r})")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    texts, _, source = bench_texts()
    view = load_backbone(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="revmux-cuts-") as workdir:
        for n, k in zip(ns, ks, strict=True):
            model = MuxModel.from_backbone(
                view, n=n, k=k, backbone_path=args.model, max_length=args.max_length
            )
            rows += cell(model, texts, args, f"{workdir}/n{n}k{k}")
    if args.json:
        meta = {
            "command": shlex.join(["python", "benchmarks/run_cut_grid.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "texts": source, "repeats": args.repeats, "warmup": args.warmup,
        }  # fmt: skip
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
