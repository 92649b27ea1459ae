"""Low-precision backbones: the frozen model run in int8 (torch dynamic quantization) or bf16, adapters untouched.

What it is: `quantize_backbone(view, mode)` converts a view's frozen Hugging Face model in place, once:
"int8" swaps every `nn.Linear` of the layers and the head for torch's dynamically quantized int8 Linear
(weights int8 with one scale per output channel, activations quantized on the fly; CPU only; per-channel
kept the multiplexed model closer to fp32 than per-tensor on train rows, benchmarks/int8_scheme.py), "bf16" casts the model to bfloat16,
"none" leaves it as it is. The view keeps calling the same layer modules, so a split at any k still equals
the unsplit quantized forward. `quantized_copy` does the same on a deep copy (the tokenizer shared), for
benchmarks that time the fp32 and the quantized backbone side by side. What it is not: a quantizer of the
adapters (a MuxModel's `mux` is never converted: adapters stay fp32), static or weight-only quantization,
or a change to saved files (a quantized backbone is for inference; load the fp32 one to train or hash it).
"""

from __future__ import annotations

import copy
import warnings
from typing import TypeVar

import torch
from torch import nn

from revmux.errors import ConfigError

QUANTIZE_MODES = ("none", "int8", "bf16")
QUANTIZE_ATTR = "_revmux_quantize"  # the mode a model was converted to, kept on the HF model itself

V = TypeVar("V")


def quantized_mode(view: object) -> str:
    """The mode `view`'s backbone was converted to by `quantize_backbone` ("none" if never)."""
    return str(getattr(view.model, QUANTIZE_ATTR, "none"))  # type: ignore[attr-defined]


def check_quantize_mode(mode: str | None) -> str:
    """`mode` as one of QUANTIZE_MODES (None means "none"); ConfigError naming the choices otherwise."""
    value = "none" if mode is None else str(mode).lower()
    if value not in QUANTIZE_MODES:
        raise ConfigError(
            f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}. Use int8 (torch dynamic "
            "int8 on the backbone's Linear layers, CPU) or bf16 (the backbone in bfloat16)."
        )
    return value


def quantize_backbone(view: V, mode: str | None) -> V:
    """Convert `view`'s frozen model to `mode` ("none", "int8" or "bf16") in place; returns `view`.

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
        _to_int8(model)
    else:
        model.to(torch.bfloat16)
    setattr(model, QUANTIZE_ATTR, mode)
    model.eval()
    return view


def quantized_copy(view: V, mode: str | None) -> V:
    """A deep copy of `view` (its tokenizer shared, not copied) converted by `quantize_backbone`."""
    tokenizer = getattr(view, "tokenizer", None)
    memo = {} if tokenizer is None else {id(tokenizer): tokenizer}
    return quantize_backbone(copy.deepcopy(view, memo), mode)


def _to_int8(model: nn.Module) -> None:
    """Every nn.Linear of `model` becomes a dynamically quantized int8 Linear, in place (CPU only)."""
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
    with warnings.catch_warnings():  # torch announces the move of eager quantization to torchao
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
