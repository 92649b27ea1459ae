"""Side-by-side timing of plain inference, the transformers pipeline and MuxModel on the same requests.

What it is: `run_bench` times, in one run and interleaved (plain, pipeline, mux, plain, ...), the frozen
classifier's own batched forward, `transformers.pipeline("text-classification")` (which also tokenizes)
and `MuxModel` on the same real sentences, and reports medians, requests/s, peak memory, padding waste
and the measured speedup against the cost-model bound S(k, N) (docs/method.md section 7). What it is not: a
load generator or a serving benchmark (no queueing, no HTTP), nor an accuracy check. It never judges a
speed: the numbers are for people and scripts to read.
"""

from __future__ import annotations

import os
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from revmux.errors import ConfigError, DataError, RevmuxError
from revmux.model import MuxModel, plan_groups
from revmux.runs import bucketed_runs

VARIANTS = ("plain", "plain_sorted", "pipeline", "mux")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
DTYPES |= {"fp16": torch.float16, "float16": torch.float16}


@dataclass
class BenchReport:
    """What was benchmarked (`meta`: model, N, k, machine, date...) and one result dict per batch size."""

    meta: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object; with exactly one batch size its run's keys are also at the top level."""
        out = {**self.meta, "runs": [dict(r) for r in self.runs]}
        if len(self.runs) == 1:
            out.update(self.runs[0])
        return out


# ---- inputs ------------------------------------------------------------------------------------------
def bench_texts(
    task: str | None = None, data_dir: str | Path | None = None, texts_file: str | Path | None = None
) -> tuple[list[str], list[str] | None, str]:
    """(texts, second sentences or None, source) from a one-request-per-line file or a task's dev split.

    Without arguments: the bundled SST-2 dev sample (real sentences, natural length distribution).
    """
    if texts_file is not None:
        path = Path(texts_file)
        if not path.is_file():
            raise DataError(f"--texts file {path} not found; pass a text file with one request per line.")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise DataError(f"--texts file {path} holds no non-empty line; put one request per line.")
        return texts, None, str(path)
    from revmux.data import load_task

    data = load_task(task or "sst2", "dev", data_dir)
    return data.texts, data.pairs, data.source


def sample_requests(
    texts: Sequence[str], pairs: Sequence[str] | None, count: int, *, seed: int = 0
) -> tuple[list[str], list[str] | None, bool]:
    """The first `count` of a fixed-seed shuffle (cycled when there are fewer): (texts, pairs, repeated)."""
    if not texts:
        raise DataError("no texts to benchmark on; pass --texts FILE or --task.")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    idx = [order[i % len(order)] for i in range(count)]
    chosen_pairs = None if pairs is None else [pairs[i] for i in idx]
    return [texts[i] for i in idx], chosen_pairs, count > len(texts)


def padding_waste(attention_mask: Tensor, n: int, *, length_aware: bool) -> dict[str, float]:
    """Padding in the composites MuxModel would form from this batch (leftovers run plain, T positions each).

    composite: fraction of composite positions that are padding in every member (the mask's zeros);
    slot: fraction of request slots inside the composites' attended spans that are padding (what
    length-aware grouping reduces; 0 when partners have equal lengths).
    """
    B, T = attention_mask.shape
    lengths = attention_mask.sum(1).cpu()
    perm = plan_groups(lengths, n, length_aware=length_aware)
    G = B // n if n > 1 else 0
    longest = lengths[perm[: G * n]].view(G, n).amax(1).sum().item() if G else 0
    rest = lengths[perm[G * n :]].sum().item()
    rows = G + (B - G * n)
    composite = 1.0 - (longest + rest) / (rows * T)
    slot = 1.0 - lengths.sum().item() / (n * longest + rest)
    return {"composite": composite, "slot": slot}


# ---- measurement -------------------------------------------------------------------------------------
class PeakMemory:
    """Peak memory of one variant: CUDA max allocated, or the process's VmHWM reset via clear_refs on CPU."""

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
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "VmHWM" in self.source:
            _reset_hwm()

    def read_mb(self) -> float:
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
    fns: dict[str, Callable[[], object]], *, repeats: int, warmup: int, memory: PeakMemory
) -> dict[str, dict[str, float]]:
    """Run every fn once per round (A B C A B C ...); per fn: median/min/max ms of the timed rounds and peak MB."""
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
    return {
        name: {"ms": statistics.median(t), "ms_min": min(t), "ms_max": max(t), "peak_mb": peaks[name]}
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


def sorted_plain(model: MuxModel, batch: dict[str, Tensor]) -> Callable[[], object]:
    """A closure running the plain model on the batch sorted by length, in as many runs as the mux path
    uses, each cut after its own last real column: plain inference with the same padding savings, so
    mux against it isolates what multiplexing itself buys."""
    view = model.view
    mask = batch["attention_mask"]
    B = mask.shape[0]
    order = torch.argsort(mask.sum(1), descending=True, stable=True)
    n_runs = model.run_count(B // model.n if model.n > 1 else 0)
    subs = [
        {key: value[rows][:, cols] for key, value in batch.items()}
        for rows, cols in bucketed_runs(mask, order, n_runs)
    ]

    def run() -> object:
        with torch.inference_mode():
            return [
                view.model(**sub) if view.verbalizer_ids is None else view.forward_unsplit(sub)
                for sub in subs
            ]

    return run


def adapter_pass(
    model: MuxModel, batch_size: int, seq_len: int, device: torch.device
) -> Callable[[], object]:
    """A closure that runs only the adapters of one batch: mux of (G, N, T, d) states, demux of the reads.

    The inputs are random states of the shapes a real batch gives (G = batch_size // N composites);
    the cost does not depend on their values.
    """
    n, d = model.n, model.config.hidden_size
    g = max(1, batch_size // n)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(g, n, seq_len, d, generator=gen).to(device)
    reads_all = model.view.reads_all_positions
    read_at = torch.arange(n, device=device) % seq_len  # N read positions, like N requests' own reads

    def run() -> object:
        with torch.inference_mode():
            comp = model.mux.mux(h)  # (G, T, d)
            rows = comp.unsqueeze(1).expand(g, n, *comp.shape[1:]) if reads_all else comp[:, read_at]
            return model.mux.demux(rows)

    return run


# ---- the benchmark -----------------------------------------------------------------------------------
@dataclass
class _Setup:
    """Settings shared by every batch size of one run_bench call."""

    max_length: int
    dev: torch.device
    pipe: Any
    length_aware: bool
    repeats: int
    warmup: int
    seed: int
    memory: PeakMemory


def run_bench(
    model: MuxModel,
    texts: list[str],
    *,
    pairs: list[str] | None = None,
    batch_sizes: Sequence[int] = (8, 32, 128),
    max_length: int = 128,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    threads: int | None = None,
    repeats: int = 7,
    warmup: int = 2,
    length_aware: bool = True,
    pipeline: bool = True,
    progress: bool = False,
    seed: int = 0,
    compile: bool = False,
) -> BenchReport:
    """Time plain, pipeline (tokenization included) and mux forwards per batch size on the same requests.

    Each batch is the first `bs` texts of a fixed-seed shuffle, tokenized once, padded to its longest and
    truncated at `max_length`. Moves the backbone to `device` (in `dtype`, e.g. "bf16") and the adapters
    to `device` in fp32, in place. `threads` sets torch.set_num_threads for the run. `compile` wraps
    every backbone layer in torch.compile(dynamic=True), in place: plain, pipeline and mux all run the
    compiled layers, so the ratio stays like for like; compilation happens in the warm-up rounds.
    The "adapters" timing is the mux and demux of one batch alone, to show their share of a mux forward.
    """
    _check_args(batch_sizes, repeats, warmup, max_length, threads)
    if compile and warmup < 1:
        raise ConfigError("--compile needs at least one warm-up round (--warmup >= 1) to compile in.")
    view = model.view
    if view.tokenizer is None:
        raise ConfigError(
            "the backbone view has no tokenizer; load it with revmux.backbones.load_backbone(...)."
        )
    dev = _prepare_device(model, device, dtype)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        memory = PeakMemory(dev)
        meta = _meta(model, dev, max_length, repeats, warmup, length_aware, memory)
        if compile:
            meta["compile_seconds"] = compile_layers(view)
            meta["notes"].append(
                "backbone layers wrapped in torch.compile(dynamic=True); compiled in warm-up"
            )
        meta["compiled"] = compile
        use_pipeline = pipeline and view.verbalizer_ids is None
        if pipeline and not use_pipeline:
            meta["notes"].append("pipeline skipped: text-classification pipelines need a classifier head")
        pipe = _make_pipeline(view, dev) if use_pipeline else None
        setup = _Setup(max_length, dev, pipe, length_aware, repeats, warmup, seed, memory)
        runs = []
        for bs in batch_sizes:
            run = _bench_one(model, texts, pairs, bs, setup)
            runs.append(run)
            if progress:
                print(_progress_line(run), file=sys.stderr, flush=True)
        return BenchReport(meta=meta, runs=runs)
    finally:
        torch.set_num_threads(old_threads)


def _bench_one(
    model: MuxModel, texts: list[str], pairs: list[str] | None, bs: int, setup: _Setup
) -> dict[str, Any]:
    """One batch size: tokenize once, time the variants interleaved, add padding waste and speedup."""
    view, dev, pipe, max_length = model.view, setup.dev, setup.pipe, setup.max_length
    batch_texts, batch_pairs, repeated = sample_requests(texts, pairs, bs, seed=setup.seed)
    encoder = model.encoder.replace(max_length=max_length)
    batch_texts, batch_pairs = encoder.render(batch_texts, batch_pairs)  # the pipeline gets the same prompts
    batch = encoder.tokenize(batch_texts, batch_pairs, device=dev)

    def plain() -> object:
        with torch.inference_mode():
            return view.model(**batch) if view.verbalizer_ids is None else view.forward_unsplit(batch)

    def mux() -> object:
        with torch.inference_mode():
            return model(batch, length_aware=setup.length_aware)

    fns: dict[str, Callable[[], object]] = {"plain": plain, "plain_sorted": sorted_plain(model, batch)}
    if pipe is not None:
        inputs: list[Any] = batch_texts
        if batch_pairs is not None:
            inputs = [{"text": a, "text_pair": b} for a, b in zip(batch_texts, batch_pairs, strict=True)]
        fns["pipeline"] = lambda: pipe(inputs, batch_size=bs, truncation=True, max_length=max_length)
    fns["mux"] = mux
    if model.n > 1:
        fns["adapters"] = adapter_pass(model, bs, int(batch["attention_mask"].shape[1]), dev)
    timed = time_interleaved(fns, repeats=setup.repeats, warmup=setup.warmup, memory=setup.memory)
    mask = batch["attention_mask"]
    waste = {la: padding_waste(mask, model.n, length_aware=la) for la in (True, False)}
    speedup = timed["plain"]["ms"] / timed["mux"]["ms"]
    bound = model.config.speedup_bound
    run: dict[str, Any] = {
        "batch_size": bs,
        "n": model.n,
        "k": model.k,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "seq_len": int(mask.shape[1]),
        "mean_length": float(mask.sum(1).float().mean().item()),
        "texts_repeated": repeated,
    }
    for name in VARIANTS:
        t = timed.get(name)
        run[f"{name}_ms"] = t["ms"] if t else None
        run[f"{name}_ms_min"] = t["ms_min"] if t else None
        run[f"{name}_ms_max"] = t["ms_max"] if t else None
        run[f"{name}_rps"] = bs / (t["ms"] / 1e3) if t else None
        run[f"{setup.memory.prefix}_{name}"] = t["peak_mb"] if t else None
    run |= {"speedup": speedup, "bound": bound, "efficiency": speedup / bound}
    run["speedup_vs_sorted"] = timed["plain_sorted"]["ms"] / timed["mux"]["ms"]
    adapters = timed.get("adapters")
    run["adapter_ms"] = adapters["ms"] if adapters else None
    run["adapter_share"] = adapters["ms"] / timed["mux"]["ms"] if adapters else None
    run["padding_waste_plain"] = 1.0 - mask.sum().item() / mask.numel()
    run["padding_waste_mux"] = waste[setup.length_aware]["composite"]
    run["slot_waste_mux"] = waste[setup.length_aware]["slot"]
    for la, tag in ((True, "length_aware"), (False, "input_order")):
        run[f"padding_waste_mux_{tag}"] = waste[la]["composite"]
        run[f"slot_waste_mux_{tag}"] = waste[la]["slot"]
    return run


def _check_args(
    batch_sizes: Sequence[int], repeats: int, warmup: int, max_length: int, threads: int | None
) -> None:
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ConfigError(f"batch sizes must be integers >= 1 like 8,32,128; got {list(batch_sizes)}.")
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}.")
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}.")
    if max_length < 2:
        raise ConfigError(f"max_length must be >= 2, got {max_length}.")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}.")


def _prepare_device(model: MuxModel, device: str, dtype: str | torch.dtype | None) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}.") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RevmuxError(
            f"device {device!r} was asked but CUDA is not available to this torch ({torch.__version__}). "
            "Use --device cpu, or install a CUDA build of torch on a machine with a GPU."
        )
    if isinstance(dtype, str):
        if dtype.lower() not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
        dtype = DTYPES[dtype.lower()]
    if dtype is not None:
        model.view.model.to(device=dev, dtype=dtype)
    else:
        model.view.model.to(dev)
    model.mux.to(device=dev, dtype=torch.float32)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _make_pipeline(view: Any, dev: torch.device) -> Any:
    import transformers

    return transformers.pipeline(
        "text-classification", model=view.model, tokenizer=view.tokenizer, device=dev
    )


def _meta(
    model: MuxModel,
    dev: torch.device,
    max_length: int,
    repeats: int,
    warmup: int,
    length_aware: bool,
    memory: PeakMemory,
) -> dict[str, Any]:
    import transformers

    from revmux import __version__

    view, cfg = model.view, model.config
    name = cfg.backbone_path or str(getattr(view.model.config, "name_or_path", "") or view.model_type)
    machine = {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()}
    if dev.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(dev)
    return {
        "model": name,
        "model_type": view.model_type,
        "mux": cfg.kind,
        "mux_options": dict(cfg.options),
        "n": cfg.n,
        "k": cfg.k,
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "device": str(dev),
        "dtype": str(view.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "max_length": max_length,
        "repeats": repeats,
        "warmup": warmup,
        "length_aware": length_aware,
        "peak_mem_source": memory.source,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "revmux_version": __version__,
        "machine": machine,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": ["pipeline times include tokenization; plain and mux times do not"],
    }


def _progress_line(run: dict[str, Any]) -> str:
    pipe = f"{run['pipeline_ms']:.1f} ms" if run["pipeline_ms"] is not None else "n/a"
    return (
        f"batch {run['batch_size']}: plain {run['plain_ms']:.1f} ms, pipeline {pipe}, mux {run['mux_ms']:.1f} ms, "
        f"speedup {run['speedup']:.2f}x of bound {run['bound']:.2f}x"
    )


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


def fmt_sorted(run: dict[str, Any]) -> str:
    """A run's speedup over the length-sorted plain variant as a cell, or n/a (older results)."""
    value = run.get("speedup_vs_sorted")
    return "n/a" if value is None else f"{value:.2f}x"
