"""The plain baselines `revmux bench` times beside the multiplexed model: what a user would deploy instead.

What it is: besides plain (padded, arrival order) and plain_sorted (length-sorted, cut runs), the
length-sorted plain classifier in torch dynamic int8 (`plain_int8_sorted`), in bf16
(`plain_bf16_sorted`), and exported to ONNX Runtime in fp32 and int8 (`ort_fp32_sorted`,
`ort_int8_sorted`). Each sorted variant cuts its batch into runs; `plain_run_choices` are the run counts
the bench tries to give each variant its own fastest cut (ONNX Runtime likes more, shorter runs than
torch does). `build_baselines` makes their backbones once per bench run (copies: the fp32 backbone
that plain, plain_sorted and the mux run on is left as it is); a baseline that cannot run here (no
onnxruntime, a decoder, int8 off CPU, bf16 on a CPU that only emulates it) is skipped with a note, never
an error. `sorted_runs` is the
length-sorted cut of a batch they all share with plain_sorted. What it is not: the timing
(`revmux.bench_timing`) or the result (`revmux.bench_result`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from revmux.backbones.quantize import check_quantize_mode, quantized_copy
from revmux.bench_result import BASELINES
from revmux.errors import ConfigError, RevmuxError
from revmux.model import MuxModel, native_bf16
from revmux.runs import bucketed_runs

QUANTIZED_BASELINE = {"none": "plain_sorted", "int8": "plain_int8_sorted", "bf16": "plain_bf16_sorted"}
ORT_BASELINE = {"none": "ort_fp32_sorted", "int8": "ort_int8_sorted"}  # --backend onnx, by --quantize
BACKENDS = ("torch", "onnx")
PLAIN_RUN_CHOICES = (1, 2, 4, 8, 16)  # the run counts "best" tries
MIN_PLAIN_ROWS_PER_RUN = 4  # below this many requests per run a run count is not tried
_TORCH_MODES = {"plain_int8_sorted": "int8", "plain_bf16_sorted": "bf16"}
_ORT_PRECISION = {"ort_fp32_sorted": "fp32", "ort_int8_sorted": "int8"}
NO_NATIVE_BF16 = (
    "this CPU has no native bf16 (AVX512-BF16 or AMX): emulated, bf16 runs slower than fp32, so no one "
    "would deploy it (--quantize bf16 still times it)"
)


def parse_baselines(value: str | Sequence[str] | None, view: Any = None) -> list[str]:
    """The baselines named by `value`: "all" (or None), "fastest", "none", or a comma list of names.

    Names are those of BASELINES, with or without the "_sorted" suffix (int8, bf16, ort_fp32, ort_int8).
    "fastest" is `fastest_baselines(view)`; without a view (checking a flag) it stands for all of them.
    """
    if value is None:
        return list(BASELINES)
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else [str(s) for s in value]
    items = [s for s in items if s]
    if items == ["all"]:
        return list(BASELINES)
    if items == ["fastest"]:
        return list(BASELINES) if view is None else fastest_baselines(view)
    if items in (["none"], []):
        return []
    aliases = {name: name for name in BASELINES} | {
        name.removesuffix("_sorted").removeprefix("plain_"): name for name in BASELINES
    }
    unknown = [s for s in items if s not in aliases]
    if unknown:
        raise ConfigError(
            f"--baselines takes 'all', 'fastest', 'none' or a comma list of {', '.join(aliases)}; got "
            f"{unknown}."
        )
    chosen = {aliases[s] for s in items}
    return [name for name in BASELINES if name in chosen]


def fastest_baselines(view: Any) -> list[str]:
    """The plain variants that can be the fastest one for `view` here, in BASELINES order: all but ONNX
    Runtime fp32 (slower than ONNX Runtime int8 in every bench row of docs/RESULTS.md, never the fastest),
    and bf16 only where the device runs it natively. A quicker bench (the demo's) that still finds
    `best_plain`."""
    names = [name for name in BASELINES if name != "ort_fp32_sorted"]
    return [name for name in names if name != "plain_bf16_sorted" or native_bf16(view.device.type)]


@dataclass
class Baselines:
    """The backbones of the baselines of one bench run: torch views by name, ONNX Runtime sessions by name."""

    views: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The baselines that will be timed, in BASELINES order."""
        return [name for name in BASELINES if name in self.views or name in self.sessions]


def build_baselines(
    view: Any, names: Sequence[str], quantize: str, workdir: str | Path, input_names: Sequence[str]
) -> Baselines:
    """Backbones for `names` (and for the mux's own precision `quantize`, which must work: its errors raise).

    int8 and bf16 views are deep copies of `view`; the ONNX models are exported into `workdir`.
    """
    out = Baselines()
    wanted = list(names)
    forced = QUANTIZED_BASELINE[check_quantize_mode(quantize)]
    if forced != "plain_sorted" and forced not in wanted:
        wanted.append(forced)
    for name, mode in _TORCH_MODES.items():
        if name not in wanted:
            continue
        if mode == "bf16" and name != forced and not native_bf16(view.device.type):
            out.notes.append(f"{name} skipped: {NO_NATIVE_BF16}")
            continue
        try:  # the plain int8 model as torch's quantize_dynamic gives it, unsmoothed: what a user deploys
            out.views[name] = quantized_copy(view, mode, smooth=None)
        except RevmuxError as exc:
            if name == forced:
                raise
            out.notes.append(f"{name} skipped: {exc}")
    ort = [name for name in _ORT_PRECISION if name in wanted]
    if ort:
        out.sessions, note = _ort_sessions(view, ort, workdir, tuple(input_names))
        if note:
            out.notes.append(note)
    return out


def _ort_sessions(
    view: Any, names: list[str], workdir: str | Path, input_names: tuple[str, ...]
) -> tuple[dict[str, Any], str | None]:
    """The ONNX Runtime sessions of `names`, or none and a note saying why they are skipped."""
    from revmux.onnx_backend import INPUT_NAMES, ort_classifiers, ort_unavailable

    skipped = f"{' and '.join(names)} skipped"
    reason = ort_unavailable(view)
    if reason is None and view.dtype != torch.float32:
        reason = f"the backbone is {str(view.dtype).removeprefix('torch.')}; the export starts from fp32"
    if reason is not None:
        return {}, f"{skipped}: {reason}"
    names_in = tuple(name for name in INPUT_NAMES if name in input_names)
    try:
        classifiers = ort_classifiers(view, workdir, names_in)
    except Exception as exc:  # an export failure skips the baseline, as the bench promises
        return {}, f"{skipped}: the ONNX export failed ({type(exc).__name__}: {str(exc)[:200]})"
    return {name: classifiers[_ORT_PRECISION[name]] for name in names}, None


def efficiency_baseline(quantize: str, backend: str) -> str:
    """The length-sorted plain variant the mux is compared with for efficiency: the same backend and
    precision as the mux's backbone. ConfigError for an unknown backend or onnx with bf16."""
    mode = check_quantize_mode(quantize)
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "torch":
        return QUANTIZED_BASELINE[mode]
    if mode not in ORT_BASELINE:
        raise ConfigError(f"--backend onnx runs fp32 or int8 (--quantize none|int8), not --quantize {mode}.")
    return ORT_BASELINE[mode]


def prepare_baselines(
    model: MuxModel,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int,
    names: Sequence[str],
    quantize: str,
    workdir: str | Path,
    backend: str = "torch",
) -> tuple[Baselines, MuxModel, str]:
    """The baselines of one bench run, the model its mux variant runs and its efficiency baseline.

    The mux model is `model`; with `quantize` the same adapters on an int8 copy (revmux's smoothed int8,
    while `plain_int8_sorted` is torch's plain dynamic int8) or on the bf16 copy `plain_bf16_sorted` runs
    on; with backend "onnx" the same adapters on layers exported to ONNX Runtime (fp32, or int8 with
    quantize "int8"), compared with `ort_<precision>_sorted`.
    """
    mode = check_quantize_mode(quantize)
    eff = efficiency_baseline(mode, backend)
    wanted = [*names, eff] if eff not in names and eff != "plain_sorted" else list(names)
    torch_mode = mode if backend == "torch" else "none"
    keys = batch_keys(model, texts, pairs, max_length)
    base = build_baselines(model.view, wanted, torch_mode, workdir, keys)
    if backend == "onnx":
        from revmux.onnx_backend import ort_view

        if eff not in base.names:
            raise ConfigError(f"--backend onnx needs ONNX Runtime here, but {'; '.join(base.notes)}.")
        view = ort_view(model.view, workdir, model.k, "int8" if mode == "int8" else "fp32")
        return base, on_view(model, view), eff
    if mode == "none":
        return base, model, eff
    if mode == "int8":  # revmux's own (smoothed) int8 backbone; its baseline stays torch's plain int8
        return base, on_view(model, quantized_copy(model.view, mode)), eff
    return base, on_view(model, base.views[QUANTIZED_BASELINE[mode]]), eff


def on_view(model: MuxModel, view: Any) -> MuxModel:
    """The same adapters (shared, not copied) and config on another backbone view, with the same run cuts."""
    other = MuxModel(view, model.config, model.mux)
    other.max_runs, other.min_rows_per_run = model.max_runs, model.min_rows_per_run
    other.pack_tail = model.pack_tail
    return other


def batch_keys(model: MuxModel, texts: list[str], pairs: list[str] | None, max_length: int) -> list[str]:
    """The keys of a tokenized bench batch (input_ids, attention_mask, maybe token_type_ids)."""
    encoder = model.encoder.replace(max_length=max_length)
    sample, sample_pairs = encoder.render(texts[:2], None if pairs is None else pairs[:2])
    return list(encoder.tokenize(sample, sample_pairs))


def sorted_runs(
    model: MuxModel, batch: dict[str, Tensor], runs: int | None = None
) -> list[dict[str, Tensor]]:
    """The batch sorted by length in `runs` runs (default: as many as the mux path uses), each cut after
    its own last real column: plain inference with the padding savings of length-sorted batching."""
    mask = batch["attention_mask"]
    B = mask.shape[0]
    order = torch.argsort(mask.sum(1), descending=True, stable=True)
    n_runs = model.run_count(B // model.n if model.n > 1 else 0) if runs is None else runs
    return [
        {key: value[rows][:, cols] for key, value in batch.items()}
        for rows, cols in bucketed_runs(mask, order, n_runs)
    ]


def plain_run_choices(batch_size: int) -> list[int]:
    """The run counts a length-sorted plain variant is tried at: PLAIN_RUN_CHOICES with at least
    MIN_PLAIN_ROWS_PER_RUN requests per run (1 run always)."""
    return [r for r in PLAIN_RUN_CHOICES if r == 1 or batch_size // r >= MIN_PLAIN_ROWS_PER_RUN]


def sorted_ort(
    model: MuxModel, batch: dict[str, Tensor], session: Any, runs: int | None = None
) -> Callable[[], object]:
    """A closure running an ONNX Runtime classifier on the runs of `sorted_runs` (inputs prepared once)."""
    feeds = [session.feeds(sub) for sub in sorted_runs(model, batch, runs)]

    def run() -> object:
        return [session.run(feed) for feed in feeds]

    return run
