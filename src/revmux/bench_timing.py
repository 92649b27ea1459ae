"""How `revmux bench` measures: interleaved wall-clock timing with device syncs, and peak memory.

What it is: `time_interleaved` runs a few closures round-robin (A B C A B C ...) so that drifts in
clock speed or load hit every variant alike, and returns one `Timing` per closure: the median, min
and max of the timed rounds in ms and the peak memory seen. `PeakMemory` reads CUDA's max allocated
memory, or on CPU the process's VmHWM reset before each variant. `compile_layers` wraps a backbone's
layers in torch.compile. What it is not: anything that knows what the closures run (the variants
live in `revmux.bench`) or that judges a speed.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

MATMUL_FLAGS = {  # /proc/cpuinfo flag -> its name in a bench report: what CPU matmuls in fp32, bf16 and int8 run on
    "avx2": "AVX2",
    "avx512f": "AVX512",
    "avx512_vnni": "AVX512-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}


def cpu_matmul_isa(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The matmul instruction sets of this CPU (`MATMUL_FLAGS` names, in their order): what decides whether
    bf16 or int8 is the fast plain variant. Empty where the flags cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return [name for flag, name in MATMUL_FLAGS.items() if flag in flags]


@dataclass(frozen=True)
class Timing:
    """One variant's timed rounds: median, fastest and slowest in ms, and its peak memory in MB."""

    ms: float
    ms_min: float
    ms_max: float
    peak_mb: float


class PeakMemory:
    """Peak memory of one variant: CUDA max allocated, or the process's VmHWM reset via clear_refs on CPU.

    `prefix` is the JSON key prefix of the readings: peak_mem_mb (CUDA) or peak_rss_mb (CPU); `source`
    says in words what is read.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.source, self.prefix = "cuda max_memory_allocated", "peak_mem_mb"
        elif _reset_hwm():
            self.source, self.prefix = "process peak RSS (VmHWM, reset per variant)", "peak_rss_mb"
        else:
            self.source = "process lifetime peak RSS (getrusage; clear_refs unavailable, not per variant)"
            self.prefix = "peak_rss_mb"

    def reset(self) -> None:
        """Start a new peak (a no-op where only the lifetime peak is readable)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "VmHWM" in self.source:
            _reset_hwm()

    def read_mb(self) -> float:
        """The peak since the last `reset`, in MB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if "VmHWM" in self.source:
            hwm = _status_kb("VmHWM")
            if hwm is not None:
                return hwm / 1024
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int,
    memory: PeakMemory,
    on_round: Callable[[], object] | None = None,
) -> dict[str, Timing]:
    """Run every fn once per round (A B C A B C ...); per fn the Timing of its timed rounds.

    The first `warmup` rounds are run but not counted. `on_round` is called after each round (warm-up
    included), outside the timed region: progress reporting.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    peaks = dict.fromkeys(fns, 0.0)
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            memory.reset()
            _sync(memory.device)
            start = time.perf_counter()
            fn()
            _sync(memory.device)
            elapsed_s = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed_s * 1e3)
                peaks[name] = max(peaks[name], memory.read_mb())
        if on_round is not None:
            on_round()
    return {
        name: Timing(ms=statistics.median(t), ms_min=min(t), ms_max=max(t), peak_mb=peaks[name])
        for name, t in times.items()
    }


def compile_layers(view: Any) -> float:
    """Wrap each layer module of `view` in torch.compile(dynamic=True), in place; seconds spent wrapping.

    Compilation itself is lazy: it happens on the first calls (the warm-up rounds of a benchmark).
    """
    start = time.perf_counter()
    for layer in view.layer_modules():
        layer.compile(dynamic=True)
    return time.perf_counter() - start
