"""Benchmark a grid of (N, k) with fresh adapters and write one JSON file plus a markdown table for docs/RESULTS.md.

Usage:
    python benchmarks/bench_grid.py --model minilm --out docs/results/bench_minilm.json

Each (N, k) is one `revmux.bench.run_bench` call (plain, pipeline and mux timed interleaved on the same
SST-2 dev sentences). Speed does not depend on trained weights, so adapters are freshly initialised.
Run it on an otherwise idle machine: the numbers are only as good as the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 2,4; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1; got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm", help="Backbone directory or zoo name.")
    p.add_argument("--out", required=True, help="JSON file to write (all reports).")
    p.add_argument("--mux", default="revmux", help="Mux kind.")
    p.add_argument("--ns", type=_ints, default=[2, 4], help="Mux widths N, comma-separated.")
    p.add_argument("--ks", type=_ints, default=[1, 2], help="Split layers k, comma-separated.")
    p.add_argument("--batch-sizes", type=_ints, default=[8, 32, 128], help="Batch sizes, comma-separated.")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="Backbone dtype on the device: fp32, bf16, fp16.")
    p.add_argument("--no-pipeline", action="store_true", help="Skip timing transformers.pipeline.")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the backbone layers (plain and mux)."
    )
    p.add_argument(
        "--no-length-aware", action="store_true", help="Group requests in arrival order, not by length."
    )
    return p.parse_args(argv)


def markdown_table(reports: Sequence[dict[str, Any]]) -> str:
    """One row per (N, k, batch size): req/s, speedup, bound, efficiency, adapter share, peak MB plain/mux."""
    from revmux.bench import fmt_mb, fmt_share, fmt_sorted, peak_mb

    lines = [
        "| N | k | batch | plain req/s | mux req/s | speedup | bound | efficiency | vs sorted plain "
        "| adapters % of mux | peak MB plain | peak MB mux |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for report in reports:
        for r in report["runs"]:
            lines.append(
                f"| {r['n']} | {r['k']} | {r['batch_size']} | {r['plain_rps']:.1f} | {r['mux_rps']:.1f} | "
                f"{r['speedup']:.2f}x | {r['bound']:.2f}x | {r['efficiency']:.0%} | {fmt_sorted(r)} | {fmt_share(r)} | "
                f"{fmt_mb(peak_mb(r, 'plain'))} | {fmt_mb(peak_mb(r, 'mux'))} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.backbones import load_backbone
    from revmux.bench import bench_texts, run_bench
    from revmux.model import MuxModel

    command = shlex.join(["python", "benchmarks/bench_grid.py", *(sys.argv[1:] if argv is None else argv)])
    view = load_backbone(args.model)
    texts, pairs, source = bench_texts()
    reports = []
    for n in args.ns:
        for k in args.ks:
            print(f"== N={n} k={k}", file=sys.stderr, flush=True)
            model = MuxModel.from_backbone(view, kind=args.mux, n=n, k=k, backbone_path=args.model)
            report = run_bench(
                model,
                texts,
                pairs=pairs,
                batch_sizes=args.batch_sizes,
                max_length=args.max_length,
                device=args.device,
                dtype=args.dtype,
                threads=args.threads,
                repeats=args.repeats,
                warmup=args.warmup,
                pipeline=not args.no_pipeline,
                length_aware=not args.no_length_aware,
                progress=True,
                compile=args.compile,
            )
            report.meta["texts"] = source
            reports.append(report.to_dict())
    first = reports[0]
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine = (
        f"{platform.platform()}, {os.cpu_count()} CPUs, {first['threads']} torch threads, {first['device']}"
    )
    out = {"command": command, "machine": machine, "date": date, "reports": reports}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"Command: `{command}`  ")
    print(f"Machine: {machine}; torch {first['torch_version']}, {first['dtype']}  ")
    print(
        f"Date: {date}; model {first['model']} (L={first['num_layers']}), {first['mux']}, texts: {source}  "
    )
    print(f"Median of {args.repeats} interleaved repeats after {args.warmup} warm-up rounds.\n")
    print(markdown_table(reports))
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
