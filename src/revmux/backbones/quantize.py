"""Low-precision backbones: the frozen model run in int8 (torch dynamic quantization) or bf16, adapters untouched.

What it is: `quantize_backbone(view, mode)` converts a view's frozen Hugging Face model in place, once:
"int8" swaps every `nn.Linear` of the layers and the head for torch's dynamically quantized int8 Linear
(weights int8 with one scale per output channel, activations quantized on the fly, one scale per tensor;
CPU only). Before that, each Linear inside the sliceable layers is smoothed (`SmoothedLinear`): its input
is divided per channel by s = max|x|^alpha / max|W|^(1 - alpha), measured on the view's own forward over
`CALIBRATION_ROWS` bundled SST-2 sentences, and its weight columns multiplied by s, the same function in
exact arithmetic, so that a few large input channels no longer set the one activation scale of the whole
tensor. Both choices (per-channel weights, smoothing at `SMOOTH_ALPHA`) kept the multiplexed model closest
to fp32 on train rows (benchmarks/int8_scheme.py). "bf16" casts the model to bfloat16,
"none" leaves it as it is. The view keeps calling the same layer modules, so a split at any k still equals
the unsplit quantized forward. `quantized_copy` does the same on a deep copy (the tokenizer shared), for
benchmarks that time the fp32 and the quantized backbone side by side. What it is not: a quantizer of the
adapters (a MuxModel's `mux` is never converted: adapters stay fp32), static or weight-only quantization,
or a change to saved files (a quantized backbone is for inference; load the fp32 one to train or hash it).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from revmux.errors import ConfigError

QUANTIZE_MODES = ("none", "int8", "bf16")
QUANTIZE_ATTR = "_revmux_quantize"  # the mode a model was converted to, kept on the HF model itself
SMOOTH_ATTR = "_revmux_int8_smooth"  # the smoothing alpha of an int8 model (None: not smoothed)
SMOOTH_ALPHA = 0.8  # how much of each input channel's range moves into the weights (0: none, 1: all)
CALIBRATION_ROWS = 256  # bundled SST-2 train sentences whose activations set the smoothing scales
CALIBRATION_LENGTH = 64  # tokens per calibration row

V = TypeVar("V")


def quantized_mode(view: object) -> str:
    """The mode `view`'s backbone was converted to by `quantize_backbone` ("none" if never)."""
    return str(getattr(view.model, QUANTIZE_ATTR, "none"))  # type: ignore[attr-defined]


def int8_smoothing(view: object) -> float | None:
    """The smoothing alpha `view`'s int8 backbone was converted with (None: not smoothed, or not int8)."""
    return getattr(view.model, SMOOTH_ATTR, None)  # type: ignore[attr-defined]


def check_quantize_mode(mode: str | None) -> str:
    """`mode` as one of QUANTIZE_MODES (None means "none"); ConfigError naming the choices otherwise."""
    value = "none" if mode is None else str(mode).lower()
    if value not in QUANTIZE_MODES:
        raise ConfigError(
            f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}. Use int8 (torch dynamic "
            "int8 on the backbone's Linear layers, CPU) or bf16 (the backbone in bfloat16)."
        )
    return value


def quantize_backbone(view: V, mode: str | None, *, smooth: float | None = SMOOTH_ALPHA) -> V:
    """Convert `view`'s frozen model to `mode` ("none", "int8" or "bf16") in place; returns `view`.

    `smooth`: int8 only, the alpha of the layers' input smoothing (None: plain dynamic int8, as torch's
    `quantize_dynamic` gives it; also what a view without a tokenizer gets, having no text to calibrate on).
    Idempotent: converting to the mode a view already has does nothing. A view already converted to
    another mode, an int8 request on a non-CPU device or on a backbone that is not fp32 raise ConfigError.
    """
    mode = check_quantize_mode(mode)
    current = quantized_mode(view)
    if mode == current or mode == "none":
        return view
    if current != "none":
        raise ConfigError(
            f"this backbone already runs in {current}; it cannot be converted to {mode} as well. Load the "
            "fp32 backbone again (load_backbone / MuxModel.from_pretrained) and quantize that."
        )
    model = view.model  # type: ignore[attr-defined]
    if mode == "int8":
        _check_int8(model)
        smoothed = smooth is not None and getattr(view, "tokenizer", None) is not None
        if smoothed:
            smooth_linears(view, smooth)
        setattr(model, SMOOTH_ATTR, smooth if smoothed else None)
        _to_int8(model)
    else:
        model.to(torch.bfloat16)
    setattr(model, QUANTIZE_ATTR, mode)
    model.eval()
    return view


def quantized_copy(view: V, mode: str | None, *, smooth: float | None = SMOOTH_ALPHA) -> V:
    """A deep copy of `view` (its tokenizer shared, not copied) converted by `quantize_backbone`."""
    tokenizer = getattr(view, "tokenizer", None)
    memo = {} if tokenizer is None else {id(tokenizer): tokenizer}
    return quantize_backbone(copy.deepcopy(view, memo), mode, smooth=smooth)


class SmoothedLinear(nn.Module):
    """`linear(x / scale)` with `linear`'s input columns multiplied by `scale`: the Linear it wraps, up to
    rounding, with the per-channel range of its input moved into its weights (SmoothQuant)."""

    def __init__(self, linear: nn.Linear, scale: Tensor) -> None:
        super().__init__()
        with torch.no_grad():
            linear.weight.mul_(scale)
        self.linear = linear
        self.register_buffer("inv_scale", scale.reciprocal())

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x * self.inv_scale)


def smooth_linears(view: Any, alpha: float, texts: list[str] | None = None) -> int:
    """Wrap every nn.Linear of `view`'s sliceable layers in a `SmoothedLinear`, in place; returns how many.

    Each input channel j gets s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha), its activation maximum taken
    over the fp32 forward of `texts` (default: the first CALIBRATION_ROWS bundled SST-2 train sentences).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"the smoothing alpha must be in [0, 1], got {alpha}.")
    layers = view.layer_modules()
    modules = dict(layers.named_modules())
    linears = {name: m for name, m in modules.items() if isinstance(m, nn.Linear)}
    peaks = _input_peaks(view, linears, texts)
    for name, linear in linears.items():
        w = linear.weight.detach().abs().amax(dim=0).clamp(min=1e-5)
        scale = (peaks[name].clamp(min=1e-5) ** alpha / w ** (1.0 - alpha)).clamp(min=1e-5)
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent] if parent else layers, attr, SmoothedLinear(linear, scale))
    return len(linears)


def _input_peaks(view: Any, linears: dict[str, nn.Module], texts: list[str] | None) -> dict[str, Tensor]:
    """Per input channel, the largest |x| each of `linears` sees on the view's fp32 forward of `texts`."""
    if texts is None:
        from revmux.data import load_task

        texts = load_task("sst2", "train").texts[:CALIBRATION_ROWS]
    peaks: dict[str, Tensor] = {}

    def hook(name: str) -> Any:
        def record(_: nn.Module, args: tuple[Tensor, ...], __: Tensor) -> None:
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).float()
            peaks[name] = torch.maximum(peaks[name], x) if name in peaks else x

        return record

    handles = [linear.register_forward_hook(hook(name)) for name, linear in linears.items()]
    try:
        with torch.no_grad():  # not inference_mode: the scales become buffers of the model
            for i in range(0, len(texts), 32):
                enc = view.tokenizer(
                    list(texts[i : i + 32]), padding=True, truncation=True,
                    max_length=CALIBRATION_LENGTH, return_tensors="pt",
                )  # fmt: skip
                view.forward_unsplit({key: t.to(view.device) for key, t in enc.items()})
    finally:
        for handle in handles:
            handle.remove()
    return peaks


def _check_int8(model: nn.Module) -> None:
    """ConfigError unless `model` is an fp32 model on the CPU (what torch's dynamic int8 kernels take)."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ConfigError(
            f"--quantize int8 runs torch's dynamic int8 kernels, which are CPU only; the backbone is on "
            f"{device}. Use --device cpu, or --quantize bf16 on {device.type}."
        )
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise ConfigError(
            f"--quantize int8 converts an fp32 backbone; this one is {str(dtype).removeprefix('torch.')}. "
            "Drop --dtype (or load the backbone in fp32) to quantize it."
        )


def _to_int8(model: nn.Module) -> None:
    """Every nn.Linear of `model` becomes a dynamically quantized int8 Linear, in place (CPU only)."""
    with warnings.catch_warnings():  # torch announces the move of eager quantization to torchao
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
