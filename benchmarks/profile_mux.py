"""Where the time of a multiplexed forward goes, against the length-sorted plain model, in one run.

For each backbone dtype (fp32, bf16), N, k and batch size it times, interleaved (A B C A B C ...):
`plain_sorted` (the plain model on the length-sorted batch in as many runs as the mux path,
`revmux.bench.sorted_plain`), `mux` (`MuxModel.__call__`, length-aware) and `mux_profiled` (the same
forward with a timer around each stage). It reports the medians, the efficiency
(plain_sorted_ms / mux_ms) / bound and the profiled forward's breakdown as shares of its total:
embed, prefill (layers [0, k)), mux adapters, tail (layers [k, L)), demux adapters, head, and
`other` (bucketing, gathers, copies, cats and casts: whatever runs outside the timed stages). Stage
times are exclusive (a stage's time excludes the stages it calls). Fresh adapters: their cost does
not depend on their values. Compare ratios and shares, not absolute times, on a shared machine.

Usage:
    python benchmarks/profile_mux.py --model minilm --n 2,4 --k 1,2 --batch-sizes 32,128 \
        --dtypes fp32,bf16 --repeats 9 [--json out.json] [--torch-profile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import torch

from revmux.backbones import load_backbone
from revmux.bench import DTYPES, bench_texts, sample_requests, sorted_plain
from revmux.bench_timing import PeakMemory, time_interleaved
from revmux.model import MuxModel

STAGES = ("embed", "prefill", "mux", "tail", "demux", "head")


class StageTimers:
    """Exclusive wall-clock time per stage of one forward, from wrappers put on the view and the mux."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._stack: list[float] = []  # time spent in nested stages, per open stage

    def wrap(self, name: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` timed under `name` (or `name(*args)`), excluding the time of stages it calls."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                nested = self._stack.pop()
                key = name(*args) if callable(name) else name
                self.totals[key] += elapsed - nested
                if self._stack:
                    self._stack[-1] += elapsed

        return timed

    def reset(self) -> None:
        self.totals = dict.fromkeys(STAGES, 0.0)


def instrumented(model: MuxModel, batch: dict[str, torch.Tensor]) -> tuple[Callable[[], object], list]:
    """A closure running `model(batch)` with stage timers on, and the list each call appends its totals to."""
    timers = StageTimers()
    view, k = model.view, model.k
    stages = {
        (view, "embed"): "embed",
        (view, "run_layers"): lambda state, start, stop: "prefill" if start < k else "tail",
        (view, "run_packed"): "tail",  # the tail over packed composites (`MuxModel.packs_tail`)
        (view, "head"): "head",
    }
    records: list[dict[str, float]] = []

    def run() -> object:
        with torch.inference_mode():  # the adapters the forward computes with (a bf16 copy made now, if any)
            mux = model.inference_mux() if hasattr(model, "inference_mux") else model.mux
        wrapped = {
            (obj, attr): timers.wrap(name, getattr(obj, attr))
            for (obj, attr), name in (stages | {(mux, "mux"): "mux", (mux, "demux"): "demux"}).items()
        }
        for (obj, attr), fn in wrapped.items():
            obj.__dict__[attr] = fn
        timers.reset()
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                out = model(batch, length_aware=True)
        finally:
            total = time.perf_counter() - start
            for obj, attr in wrapped:
                del obj.__dict__[attr]
        parts = {name: 1e3 * t for name, t in timers.totals.items()}
        parts["other"] = 1e3 * total - sum(parts.values())
        parts["total"] = 1e3 * total
        records.append(parts)
        return out

    return run, records


def profile_one(
    model: MuxModel, texts: list[str], bs: int, *, max_length: int, repeats: int, warmup: int
) -> dict[str, Any]:
    """One (N, k, batch size): interleaved medians, efficiency and the breakdown of the mux forward."""
    batch_texts, _, _ = sample_requests(texts, None, bs, seed=0)
    encoder = model.encoder.replace(max_length=max_length)
    batch = encoder.tokenize(*encoder.render(batch_texts, None))

    def mux() -> object:
        with torch.inference_mode():
            return model(batch, length_aware=True)

    def mux_fp32_adapters() -> object:
        precision, model.adapter_precision = model.adapter_precision, "fp32"
        try:
            return mux()
        finally:
            model.adapter_precision = precision

    profiled, records = instrumented(model, batch)
    fns = {"plain_sorted": sorted_plain(model, batch), "mux": mux, "mux_profiled": profiled}
    if model.view.dtype == torch.bfloat16 and hasattr(model, "inference_mux"):
        fns["mux_fp32_adapters"] = mux_fp32_adapters  # what bf16 adapters save, in the same rounds
    timed = time_interleaved(fns, repeats=repeats, warmup=warmup, memory=PeakMemory(torch.device("cpu")))
    kept = records[warmup:]
    parts = {name: statistics.median(r[name] for r in kept) for name in (*STAGES, "other", "total")}
    total = sum(parts[name] for name in (*STAGES, "other"))
    bound = model.config.speedup_bound
    plain_ms, mux_ms = timed["plain_sorted"].ms, timed["mux"].ms
    return {
        "n": model.n,
        "k": model.k,
        "batch_size": bs,
        "seq_len": int(batch["attention_mask"].shape[1]),
        "plain_sorted_ms": plain_ms,
        "mux_ms": mux_ms,
        "mux_profiled_ms": timed["mux_profiled"].ms,
        "speedup_vs_sorted": plain_ms / mux_ms,
        "bound": bound,
        "efficiency": plain_ms / mux_ms / bound,
        # the fastest rounds: the least disturbed by other work on a shared machine
        "efficiency_min": timed["plain_sorted"].ms_min / timed["mux"].ms_min / bound,
        "breakdown_ms": parts,
        "shares": {name: parts[name] / total for name in (*STAGES, "other")},
    } | ({"mux_fp32_adapters_ms": timed["mux_fp32_adapters"].ms} if "mux_fp32_adapters" in timed else {})


def torch_profile(model: MuxModel, texts: list[str], bs: int, max_length: int, rows: int = 20) -> str:
    """torch.profiler's table of the ops of a few mux forwards (self CPU time), for the largest costs."""
    batch_texts, _, _ = sample_requests(texts, None, bs, seed=0)
    encoder = model.encoder.replace(max_length=max_length)
    batch = encoder.tokenize(*encoder.render(batch_texts, None))
    with torch.inference_mode():
        model(batch, length_aware=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                model(batch, length_aware=True)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--n", default="2,4", help="comma-separated N values")
    ap.add_argument("--k", default="1,2", help="comma-separated k values")
    ap.add_argument("--batch-sizes", default="32,128")
    ap.add_argument("--dtypes", default="fp32,bf16", help="backbone dtypes (the adapters' follow the model)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument(
        "--adapter-precision", default="auto", help="MuxModel.adapter_precision: auto, backbone or fp32"
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--torch-profile", action="store_true", help="also print torch.profiler's op table")
    ap.add_argument("--json", default=None, help="write the rows and metadata to this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    texts, _, source = bench_texts()
    rows = []
    for dtype_name in args.dtypes.split(","):
        view = load_backbone(args.model)
        view.model.to(DTYPES[dtype_name])
        for n in _ints(args.n):
            for k in _ints(args.k):
                model = MuxModel.from_backbone(view, n=n, k=k)
                model.adapter_precision = args.adapter_precision
                for bs in _ints(args.batch_sizes):
                    row = profile_one(
                        model, texts, bs, max_length=args.max_length, repeats=args.repeats, warmup=args.warmup
                    )
                    row["dtype"] = dtype_name
                    rows.append(row)
                    shares = " ".join(f"{name} {share:.0%}" for name, share in row["shares"].items())
                    print(
                        f"{dtype_name} N={n} k={k} bs={bs} T={row['seq_len']}: plain_sorted "
                        f"{row['plain_sorted_ms']:.1f} ms, mux {row['mux_ms']:.1f} ms, speedup "
                        f"{row['speedup_vs_sorted']:.2f}x of {row['bound']:.2f}, efficiency "
                        f"{row['efficiency']:.2f} (fastest rounds {row['efficiency_min']:.2f}) | {shares}"
                        + (
                            f" | fp32 adapters {row['mux_fp32_adapters_ms']:.1f} ms"
                            if "mux_fp32_adapters_ms" in row
                            else ""
                        ),
                        flush=True,
                    )
                    if args.torch_profile:
                        print(torch_profile(model, texts, bs, args.max_length), flush=True)
    meta = {
        "command": shlex.join(["python", "benchmarks/profile_mux.py", *(argv or sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "texts": source,
        "repeats": args.repeats,
    }
    for key in ("efficiency", "efficiency_min"):
        for dtype_name in args.dtypes.split(","):
            effs = [row[key] for row in rows if row["dtype"] == dtype_name]
            print(
                f"{key} {dtype_name}: median {statistics.median(effs):.3f} (min {min(effs):.3f}, max {max(effs):.3f})"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
