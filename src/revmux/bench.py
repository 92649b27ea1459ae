"""Side-by-side timing of plain inference, the transformers pipeline and MuxModel on the same requests.

What it is: `run_bench` times, in one run and interleaved (plain, pipeline, mux, plain, ...), the frozen
classifier's own batched forward (padded, and length-sorted), the plain baselines a user would deploy
instead (torch int8 and bf16, ONNX Runtime fp32 and int8, length-sorted),
`transformers.pipeline("text-classification")` (which also tokenizes) and `MuxModel` on the same real
sentences, and reports medians, requests/s, peak memory, padding waste, the fastest plain variant and
the measured speedup against it and against the cost-model bound S(k, N) (docs/method.md section 7).
What it is not: a load generator or a serving benchmark (no queueing, no HTTP), nor an accuracy check.
It never judges a speed: the numbers are for people and scripts to read.

This module runs the variants; the rest of the bench has one module per job: `revmux.bench_inputs`
(the requests, padding waste), `revmux.bench_baselines` (the plain baselines' backbones and sessions),
`revmux.bench_timing` (interleaved timing, peak memory, compile) and `revmux.bench_result` (the typed
`BenchRun` / `BenchReport` and their JSON). Their public names are re-exported here, so
`from revmux.bench import ...` reaches all of them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
from torch import Tensor

from revmux.backbones.quantize import int8_smoothing
from revmux.bench_baselines import (
    MIN_PLAIN_ROWS_PER_RUN,
    PLAIN_RUN_CHOICES,
    Baselines,
    parse_baselines,
    plain_run_choices,
    prepare_baselines,
    sorted_ort,
    sorted_runs,
)
from revmux.bench_config import BenchConfig
from revmux.bench_inputs import PaddingWaste, bench_texts, padding_waste, sample_requests
from revmux.bench_result import (
    BASELINES,
    PLAIN_VARIANTS,
    VARIANTS,
    BenchReport,
    BenchRun,
    fmt_best,
    fmt_mb,
    fmt_share,
    fmt_sorted,
    peak_mb,
)
from revmux.bench_timing import PeakMemory, Timing, compile_layers, cpu_matmul_isa, time_interleaved
from revmux.errors import ConfigError, RevmuxError
from revmux.model import MuxModel
from revmux.progress import StepProgress

__all__ = [
    "BASELINES",
    "DTYPES",
    "PLAIN_VARIANTS",
    "VARIANTS",
    "BenchConfig",
    "BenchReport",
    "BenchRun",
    "PaddingWaste",
    "PeakMemory",
    "Timing",
    "adapter_pass",
    "bench_texts",
    "compile_layers",
    "fmt_best",
    "fmt_mb",
    "fmt_share",
    "fmt_sorted",
    "padding_waste",
    "parse_baselines",
    "peak_mb",
    "run_bench",
    "sample_requests",
    "sorted_plain",
    "time_interleaved",
]

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
DTYPES |= {"fp16": torch.float16, "float16": torch.float16}
RUN_CHOICE_ROUNDS = 3  # timed rounds per run count when a plain variant's fastest cut is chosen


# ---- the variants ------------------------------------------------------------------------------------
def sorted_plain(
    model: MuxModel, batch: dict[str, Tensor], view: Any | None = None, runs: int | None = None
) -> Callable[[], object]:
    """A closure running the plain model on the batch sorted by length, in `runs` runs (default: as many
    as the mux path uses), each cut after its own last real column: plain inference with the padding
    savings of length-sorted batching. `view`: another backbone to run the same runs on (an int8 or bf16
    copy); default the model's own."""
    view = model.view if view is None else view
    subs = sorted_runs(model, batch, runs)

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

    The inputs are random states of the shapes and dtype a real batch gives (G = batch_size // N
    composites, the backbone's dtype), run through the adapters the forward uses
    (`MuxModel.inference_mux`: a bf16 copy on a bf16 backbone where bf16 is native); the cost does not
    depend on their values.
    """
    n, d = model.n, model.config.hidden_size
    g = max(1, batch_size // n)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(g, n, seq_len, d, generator=gen).to(device, model.view.dtype)
    reads_all = model.view.reads_all_positions
    read_at = torch.arange(n, device=device) % seq_len  # N read positions, like N requests' own reads

    def run() -> object:
        with torch.inference_mode():
            mux = model.inference_mux()
            comp = mux.mux(h)  # (G, T, d)
            rows = comp.unsqueeze(1).expand(g, n, *comp.shape[1:]) if reads_all else comp[:, read_at]
            return mux.demux(rows)

    return run


# ---- the benchmark -----------------------------------------------------------------------------------
@dataclass
class _Setup:
    """Settings shared by every batch size of one run_bench call."""

    cfg: BenchConfig
    dev: torch.device
    pipe: Any
    memory: PeakMemory
    baselines: Baselines
    mux_model: MuxModel  # the model, or the same adapters on its int8 / bf16 backbone copy (--quantize)
    efficiency_baseline: str


def run_bench(
    model: MuxModel,
    texts: list[str],
    *,
    pairs: list[str] | None = None,
    config: BenchConfig | None = None,
    progress: bool = False,
    **knobs: Any,
) -> BenchReport:
    """Time plain, pipeline (tokenization included) and mux forwards per batch size on the same requests.

    The knobs are the fields of `config` (a BenchConfig, default its defaults), each overridable by the
    keyword of the same name (`batch_sizes=(8,)`, `repeats=1`, ...); an unknown keyword is refused.

    Each batch is the first `bs` texts of a fixed-seed shuffle, tokenized once, padded to its longest and
    truncated at `max_length`. Moves the backbone to `device` (in `dtype`, e.g. "bf16") and the adapters
    to `device` in fp32, in place. `threads` sets torch.set_num_threads for the run. `compile` wraps
    every backbone layer in torch.compile(dynamic=True), in place: plain, pipeline and mux all run the
    compiled layers, so the ratio stays like for like; compilation happens in the warm-up rounds.
    The "adapters" timing is the mux and demux of one batch alone, to show their share of a mux forward.

    `baselines` ("all", "none" or names of BASELINES) adds the length-sorted plain model in torch int8 and
    bf16 and on ONNX Runtime fp32 / int8 (those that cannot run are noted in meta["notes"]). `quantize`
    ("int8", "bf16") runs the mux on that copy of the backbone, `backend` "onnx" its layers on ONNX Runtime
    (adapters fp32 in torch either way); efficiency is then taken against the sorted plain model of the
    same backend and precision (meta["efficiency_baseline"]). plain and plain_sorted stay as loaded.
    """
    cfg = BenchConfig.resolve(config, knobs)
    view = model.view
    if view.tokenizer is None:
        raise ConfigError(
            "the backbone view has no tokenizer; load it with revmux.backbones.load_backbone(...)."
        )
    dev = _prepare_device(model, cfg.device, cfg.dtype)
    old_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, old_threads)
        memory = PeakMemory(dev)
        meta = _meta(model, dev, cfg, memory)
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="revmux-bench-"))
        names = parse_baselines(cfg.baselines, view)
        base, mux_model, eff = prepare_baselines(
            model, texts, pairs, cfg.max_length, names, cfg.quantize, workdir, cfg.backend
        )
        meta["notes"] += base.notes
        meta |= {"quantize": cfg.quantize, "backend": cfg.backend, "baselines": base.names}
        if cfg.quantize == "int8" and cfg.backend == "torch":
            meta["int8_smooth"] = int8_smoothing(mux_model.view)  # plain_int8_sorted is never smoothed
        meta["efficiency_baseline"] = eff
        meta["plain_runs"] = cfg.plain_runs
        # the mux's tail: one pass over its runs' composites packed side by side, or one per run
        meta["packed_tail"] = mux_model.packs_tail
        meta["mux_run_cut"] = dict(zip(("max_runs", "min_rows_per_run"), mux_model.run_cut, strict=True))
        if cfg.plain_runs == "best":
            meta["notes"].append(
                "each length-sorted plain variant runs at its fastest run count (<variant>_runs), chosen per "
                f"batch size among {', '.join(map(str, PLAIN_RUN_CHOICES))} runs (at least "
                f"{MIN_PLAIN_ROWS_PER_RUN} requests each) in {RUN_CHOICE_ROUNDS} rounds before the timed ones"
            )
        if cfg.compile:
            meta["compile_seconds"] = compile_layers(view)
            meta["notes"].append(
                "backbone layers wrapped in torch.compile(dynamic=True); compiled in warm-up"
            )
        meta["compiled"] = cfg.compile
        use_pipeline = cfg.pipeline and view.verbalizer_ids is None
        if cfg.pipeline and not use_pipeline:
            meta["notes"].append("pipeline skipped: text-classification pipelines need a classifier head")
        pipe = _make_pipeline(view, dev) if use_pipeline else None
        setup = _Setup(cfg, dev, pipe, memory, base, mux_model, eff)
        rounds = len(cfg.batch_sizes) * (cfg.warmup + cfg.repeats)
        runs = []
        with StepProgress(
            "bench", rounds, fields="batch size {bs}", enabled=progress, unit="rounds", transient=True
        ) as bar:  # a bar on a terminal, a plain line every few seconds in a log (stderr either way)
            for bs in cfg.batch_sizes:
                bar.advance(0, bs=bs)
                run = _bench_one(model, texts, pairs, bs, setup, on_round=bar.advance)
                runs.append(run)
                if progress:
                    print(run.summary(), file=sys.stderr, flush=True)
        return BenchReport(meta=meta, runs=runs)


def _bench_one(
    model: MuxModel,
    texts: list[str],
    pairs: list[str] | None,
    bs: int,
    setup: _Setup,
    on_round: Callable[[], object] | None = None,
) -> BenchRun:
    """One batch size: tokenize once, time the variants interleaved, add padding waste and the bound."""
    view, dev, pipe, max_length = model.view, setup.dev, setup.pipe, setup.cfg.max_length
    batch_texts, batch_pairs, repeated = sample_requests(texts, pairs, bs, seed=setup.cfg.seed)
    encoder = model.encoder.replace(max_length=max_length)
    batch_texts, batch_pairs = encoder.render(batch_texts, batch_pairs)  # the pipeline gets the same prompts
    batch = encoder.tokenize(batch_texts, batch_pairs, device=dev)

    def plain() -> object:
        with torch.inference_mode():
            return view.model(**batch) if view.verbalizer_ids is None else view.forward_unsplit(batch)

    def mux() -> object:
        with torch.inference_mode():
            return setup.mux_model(batch, length_aware=setup.cfg.length_aware)

    fns: dict[str, Callable[[], object]] = {"plain": plain}
    runs = {"mux": setup.mux_model.run_count(bs // model.n if model.n > 1 else 0)}
    makers: dict[str, Callable[[int | None], Callable[[], object]]] = {
        "plain_sorted": functools.partial(sorted_plain, model, batch, None)
    }
    for name in setup.baselines.names:
        if name in setup.baselines.views:
            makers[name] = functools.partial(sorted_plain, model, batch, setup.baselines.views[name])
        else:
            makers[name] = functools.partial(sorted_ort, model, batch, setup.baselines.sessions[name])
    for name, make in makers.items():
        runs[name] = _fastest_runs(make, bs, setup.memory) if setup.cfg.plain_runs == "best" else runs["mux"]
        fns[name] = make(runs[name])
    if pipe is not None:
        inputs: list[Any] = batch_texts
        if batch_pairs is not None:
            inputs = [{"text": a, "text_pair": b} for a, b in zip(batch_texts, batch_pairs, strict=True)]
        fns["pipeline"] = lambda: pipe(inputs, batch_size=bs, truncation=True, max_length=max_length)
    fns["mux"] = mux
    margin, share = setup.cfg.fallback_margin, None
    if margin is not None and model.n > 1:
        fns["mux_fallback"], share = _with_fallback(setup.mux_model, batch, margin, setup.cfg.length_aware)
    if model.n > 1:
        fns["adapters"] = adapter_pass(setup.mux_model, bs, int(batch["attention_mask"].shape[1]), dev)
    timed = time_interleaved(
        fns, repeats=setup.cfg.repeats, warmup=setup.cfg.warmup, memory=setup.memory, on_round=on_round
    )
    adapters = timed.pop("adapters", None)
    mask = batch["attention_mask"]
    return BenchRun(
        batch_size=bs,
        n=model.n,
        k=model.k,
        device=str(dev),
        threads=torch.get_num_threads(),
        seq_len=int(mask.shape[1]),
        mean_length=float(mask.sum(1).float().mean().item()),
        texts_repeated=repeated,
        timings=timed,
        adapters=adapters,
        bound=model.config.speedup_bound,
        padding_waste_plain=1.0 - mask.sum().item() / mask.numel(),
        waste_length_aware=padding_waste(mask, model.n, length_aware=True),
        waste_input_order=padding_waste(mask, model.n, length_aware=False),
        length_aware=setup.cfg.length_aware,
        memory_key=setup.memory.prefix,
        efficiency_baseline=setup.efficiency_baseline,
        runs=runs,
        fallback_margin=margin if share is not None else None,
        fallback_rerun_share=share,
    )


def _fastest_runs(make: Callable[[int], Callable[[], object]], batch_size: int, memory: PeakMemory) -> int:
    """The run count (of `plain_run_choices`) at which the variant `make(runs)` is fastest: each choice
    timed interleaved, one warm-up and RUN_CHOICE_ROUNDS timed rounds, before the measured rounds."""
    choices = plain_run_choices(batch_size)
    if len(choices) == 1:
        return choices[0]
    timed = time_interleaved(
        {str(r): make(r) for r in choices}, repeats=RUN_CHOICE_ROUNDS, warmup=1, memory=memory
    )
    return min(choices, key=lambda r: timed[str(r)].ms)


def _with_fallback(
    model: MuxModel, batch: dict[str, Tensor], margin: float, length_aware: bool
) -> tuple[Callable[[], object], float]:
    """The mux-with-fallback forward of `batch` to time, and the share of its answers it re-runs."""
    from revmux.fallback import forward_with_fallback

    def run() -> object:
        with torch.inference_mode():
            return forward_with_fallback(model, batch, margin, length_aware=length_aware)

    _, rerun = run()
    return run, float(rerun.float().mean())


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


def _meta(model: MuxModel, dev: torch.device, bench: BenchConfig, memory: PeakMemory) -> dict[str, Any]:
    import transformers

    from revmux import __version__

    view, cfg = model.view, model.config
    name = cfg.backbone_path or str(getattr(view.model.config, "name_or_path", "") or view.model_type)
    machine = {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()}
    if dev.type == "cpu":
        machine["cpu_isa"] = cpu_matmul_isa()
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
        "max_length": bench.max_length,
        "repeats": bench.repeats,
        "warmup": bench.warmup,
        "length_aware": bench.length_aware,
        "peak_mem_source": memory.source,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "revmux_version": __version__,
        "machine": machine,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": ["pipeline times include tokenization; plain and mux times do not"],
    }
