"""What `revmux bench` reports: a typed result per batch size, its JSON form, and cells for tables.

What it is: `BenchRun` holds one batch size's measurements (each variant's `Timing`, the adapters'
share, padding waste, the bound S(k, N)) and derives the rest (requests/s, speedups, efficiency);
`BenchRun.to_dict()` writes the flat JSON keys that `revmux bench --out`, the plots and the results
tables read. `BenchReport` is the meta of a run_bench call plus its runs. `peak_mb` and the `fmt_*`
helpers read those JSON dicts, including older ones that lack a key. What it is not: the timing
(`revmux.bench_timing`) or the choice of variants (`revmux.bench`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from revmux.bench_inputs import PaddingWaste
from revmux.bench_timing import Timing

# in JSON key order; the baselines and "pipeline" may be absent (their keys are then null)
BASELINES = ("plain_int8_sorted", "plain_bf16_sorted", "ort_fp32_sorted", "ort_int8_sorted")
VARIANTS = ("plain", "plain_sorted", *BASELINES, "pipeline", "mux", "mux_fallback")
PLAIN_VARIANTS = ("plain", "plain_sorted", *BASELINES)  # the candidates for best_plain (not pipeline)
SORTED_VARIANTS = ("plain_sorted", *BASELINES)  # cut into runs; each reports <name>_runs


@dataclass(frozen=True)
class BenchRun:
    """One batch size of a benchmark: the batch, each variant's timing, padding and the cost-model bound.

    timings: by variant name (VARIANTS); pipeline and the baselines are absent when not timed.
    adapters: the mux and demux of one batch alone (None at N = 1). bound: S(k, N) (docs/method.md).
    length_aware: which grouping the mux variant used, i.e. which of the two wastes is the mux's.
    memory_key: JSON key prefix of the peak memory readings (peak_rss_mb on CPU, peak_mem_mb on CUDA).
    efficiency_baseline: the length-sorted plain variant in the mux's own precision (plain_sorted, or
    plain_int8_sorted / plain_bf16_sorted when the mux runs on a quantized backbone).
    runs: how many runs each length-sorted variant and the mux cut the batch into.
    fallback_margin, fallback_rerun_share: with a `mux_fallback` timing, its margin and the share re-run.
    """

    batch_size: int
    n: int
    k: int
    device: str
    threads: int
    seq_len: int  # T of the padded batch
    mean_length: float  # real tokens per request, on average
    texts_repeated: bool  # fewer texts than batch_size: the sample cycled
    timings: dict[str, Timing]
    adapters: Timing | None
    bound: float
    padding_waste_plain: float
    waste_length_aware: PaddingWaste
    waste_input_order: PaddingWaste
    length_aware: bool = True
    memory_key: str = "peak_rss_mb"
    efficiency_baseline: str = "plain_sorted"
    runs: dict[str, int] = field(default_factory=dict)  # runs the batch was cut into, per variant
    fallback_margin: float | None = None  # mux_fallback: the mux with the confidence fallback at this margin
    fallback_rerun_share: float | None = None  # the share of the batch's answers that fallback re-ran

    def ms(self, variant: str) -> float | None:
        """Median ms of `variant`, or None when it was not timed."""
        t = self.timings.get(variant)
        return t.ms if t else None

    def rps(self, variant: str) -> float | None:
        """Requests per second of `variant` at its median, or None when it was not timed."""
        t = self.timings.get(variant)
        return self.batch_size / (t.ms / 1e3) if t else None

    def peak_mb(self, variant: str) -> float | None:
        """Peak memory of `variant` in MB, or None when it was not timed."""
        t = self.timings.get(variant)
        return t.peak_mb if t else None

    @property
    def speedup(self) -> float:
        """Plain (padded, arrival order) over mux median time; also written as speedup_vs_padded."""
        return self.timings["plain"].ms / self.timings["mux"].ms

    @property
    def efficiency(self) -> float:
        """Length-sorted plain (in the mux's precision) over mux median time, as a fraction of the bound."""
        return self.timings[self.efficiency_baseline].ms / self.timings["mux"].ms / self.bound

    @property
    def best_plain(self) -> str:
        """The fastest plain variant timed (pipeline excluded: it also tokenizes)."""
        timed = [name for name in PLAIN_VARIANTS if name in self.timings]
        return min(timed, key=lambda name: self.timings[name].ms)

    @property
    def speedup_vs_best_plain(self) -> float:
        """The fastest plain variant's median time over the mux's."""
        return self.timings[self.best_plain].ms / self.timings["mux"].ms

    @property
    def speedup_vs_best_plain_fallback(self) -> float | None:
        """The fastest plain variant's median time over the mux-with-fallback's (None when not timed)."""
        t = self.timings.get("mux_fallback")
        return self.timings[self.best_plain].ms / t.ms if t else None

    @property
    def speedup_vs_sorted(self) -> float:
        """Length-sorted plain over mux median time: what multiplexing itself buys."""
        return self.timings["plain_sorted"].ms / self.timings["mux"].ms

    @property
    def adapter_ms(self) -> float | None:
        """Median ms of the adapters alone (None at N = 1)."""
        return self.adapters.ms if self.adapters else None

    @property
    def adapter_share(self) -> float | None:
        """The adapters' share of a mux forward (None at N = 1)."""
        return self.adapters.ms / self.timings["mux"].ms if self.adapters else None

    @property
    def mux_waste(self) -> PaddingWaste:
        """The padding waste of the grouping the mux variant used."""
        return self.waste_length_aware if self.length_aware else self.waste_input_order

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object of this run (keys and order as `revmux bench --out` has always written)."""
        out: dict[str, Any] = {
            "batch_size": self.batch_size,
            "n": self.n,
            "k": self.k,
            "device": self.device,
            "threads": self.threads,
            "seq_len": self.seq_len,
            "mean_length": self.mean_length,
            "texts_repeated": self.texts_repeated,
        }
        for name in VARIANTS:
            t = self.timings.get(name)
            out[f"{name}_ms"] = t.ms if t else None
            out[f"{name}_ms_min"] = t.ms_min if t else None
            out[f"{name}_ms_max"] = t.ms_max if t else None
            out[f"{name}_rps"] = self.rps(name)
            out[f"{self.memory_key}_{name}"] = t.peak_mb if t else None
        for name in (*SORTED_VARIANTS, "mux"):
            out[f"{name}_runs"] = self.runs.get(name)
        out |= {"speedup": self.speedup, "bound": self.bound, "efficiency": self.efficiency}
        out |= {"speedup_vs_sorted": self.speedup_vs_sorted, "speedup_vs_padded": self.speedup}
        out |= {"best_plain": self.best_plain, "speedup_vs_best_plain": self.speedup_vs_best_plain}
        out["efficiency_baseline"] = self.efficiency_baseline
        out |= {"fallback_margin": self.fallback_margin, "fallback_rerun_share": self.fallback_rerun_share}
        out["speedup_vs_best_plain_fallback"] = self.speedup_vs_best_plain_fallback
        out |= {"adapter_ms": self.adapter_ms, "adapter_share": self.adapter_share}
        out["padding_waste_plain"] = self.padding_waste_plain
        out["padding_waste_mux"] = self.mux_waste.composite
        out["slot_waste_mux"] = self.mux_waste.slot
        wastes = {"length_aware": self.waste_length_aware, "input_order": self.waste_input_order}
        for tag, waste in wastes.items():
            out[f"padding_waste_mux_{tag}"] = waste.composite
            out[f"slot_waste_mux_{tag}"] = waste.slot
        return out

    def summary(self) -> str:
        """One line for people: medians of plain, pipeline, the best plain and mux, and the ratios."""
        pipe = self.ms("pipeline")
        return (
            f"batch {self.batch_size}: plain {self.timings['plain'].ms:.1f} ms, pipeline "
            f"{'n/a' if pipe is None else f'{pipe:.1f} ms'}, best plain {self.best_plain} "
            f"{self.timings[self.best_plain].ms:.1f} ms, mux {self.timings['mux'].ms:.1f} ms, "
            f"speedup {self.speedup:.2f}x padded, {self.speedup_vs_best_plain:.2f}x best plain, "
            f"efficiency {self.efficiency:.0%} of bound {self.bound:.2f}x"
        )


@dataclass
class BenchReport:
    """What was benchmarked (`meta`: model, N, k, machine, date...; a dict callers may add keys to) and
    one BenchRun per batch size."""

    meta: dict[str, Any]
    runs: list[BenchRun] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object; with exactly one batch size its run's keys are also at the top level."""
        runs = [r.to_dict() for r in self.runs]
        out = {**self.meta, "runs": runs}
        if len(runs) == 1:
            out.update(runs[0])
        return out


# ---- reading the JSON (also older results, which may lack a key) ---------------------------------------
def peak_mb(run: dict[str, Any], variant: str) -> float | None:
    """A run's peak memory for `variant` in MB, whichever of peak_rss_mb_* / peak_mem_mb_* it holds."""
    value = run.get(f"peak_rss_mb_{variant}")
    return value if value is not None else run.get(f"peak_mem_mb_{variant}")


def fmt_mb(value: float | None) -> str:
    """A peak-memory cell: whole MB, or n/a."""
    return "n/a" if value is None else f"{value:.0f}"


def fmt_share(run: dict[str, Any]) -> str:
    """A run's adapter share of the mux forward as a percentage cell, or n/a (N = 1, older results)."""
    value = run.get("adapter_share")
    return "n/a" if value is None else f"{value:.1%}"


def fmt_best(run: dict[str, Any]) -> str:
    """A run's best plain variant and the mux's speedup over it as a cell, or n/a (older results)."""
    name, value = run.get("best_plain"), run.get("speedup_vs_best_plain")
    return "n/a" if name is None or value is None else f"{value:.2f}x\n{name}"


def fmt_sorted(run: dict[str, Any]) -> str:
    """A run's speedup over the length-sorted plain variant as a cell, or n/a (older results)."""
    value = run.get("speedup_vs_sorted")
    return "n/a" if value is None else f"{value:.2f}x"
