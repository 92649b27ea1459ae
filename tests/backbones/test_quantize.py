"""revmux.backbones.quantize: int8 / bf16 backbones under fp32 adapters, on tiny models.

Tolerances: split == unsplit on a quantized backbone is exact up to 1e-5 (the same kernels on the same
inputs); int8 logits of the toy teacher stay within 0.1 of fp32 (its logits are O(1)), and its accuracy
within 2 points of fp32 on the 200-row toy task.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

from revmux.backbones.quantize import (
    QUANTIZE_MODES,
    check_quantize_mode,
    quantize_backbone,
    quantized_copy,
    quantized_mode,
)
from revmux.data import tokenize
from revmux.errors import ConfigError
from revmux.evaluate import evaluate
from revmux.model import MuxModel
from tests.tiny import tiny_batch, tiny_bert
from tests.train import one_thread, toy_task, toy_view

LENGTHS = [9, 4, 7, 1, 9, 3]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def _linears(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Linear, DynamicInt8Linear))]


def test_int8_converts_every_backbone_linear_and_never_the_adapters():
    model = MuxModel.from_backbone(tiny_bert(), kind="revmux", n=2, k=1)
    adapters_before = {name: p.clone() for name, p in model.mux.named_parameters()}
    assert quantize_backbone(model.view, "int8") is model.view
    backbone = _linears(model.view.model)
    assert backbone and all(isinstance(m, DynamicInt8Linear) for m in backbone)  # layers and head
    assert all(m.weight().qscheme() == torch.per_channel_affine for m in backbone)  # one scale per row
    assert quantized_mode(model.view) == "int8"
    adapters = _linears(model.mux)
    assert adapters and all(type(m) is nn.Linear and m.weight.dtype == torch.float32 for m in adapters)
    for name, p in model.mux.named_parameters():
        torch.testing.assert_close(p, adapters_before[name], atol=0, rtol=0)
    quantize_backbone(model.view, "int8")  # idempotent: nothing is converted twice
    assert _linears(model.view.model) == backbone
    quantize_backbone(model.view, None)  # "none" never undoes a conversion
    assert quantized_mode(model.view) == "int8"
    out = model(tiny_batch(LENGTHS))
    assert out.shape == (len(LENGTHS), 2) and out.dtype == torch.float32


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_split_equals_unsplit_on_a_quantized_backbone(mode):
    view = quantize_backbone(tiny_bert(), mode)
    batch = tiny_batch(LENGTHS)
    with torch.inference_mode():
        full = view.forward_unsplit(batch)
        for k in range(view.num_layers + 1):
            torch.testing.assert_close(view.forward_split(batch, k), full, atol=1e-5, rtol=1e-5)
    assert full.dtype == (torch.bfloat16 if mode == "bf16" else torch.float32)


def test_int8_teacher_and_mux_stay_close_to_fp32(minilm_path):
    data = toy_task(rows=200)
    fp32 = MuxModel.from_backbone(toy_view(minilm_path), kind="revmux", n=2, k=1)
    int8 = MuxModel(quantized_copy(fp32.view, "int8"), fp32.config, fp32.mux)  # the same adapters
    enc = tokenize(fp32.view.tokenizer, data, 32)
    with torch.inference_mode():
        ref, got = fp32.view.forward_unsplit(enc), int8.view.forward_unsplit(enc)
    assert ref.abs().max() > 0.5  # a trained teacher: logits O(1), so 0.1 is a real bound
    torch.testing.assert_close(got, ref, atol=0.1, rtol=0.0)
    assert quantized_mode(fp32.view) == "none"  # the copy left the original in fp32
    assert int8.view.tokenizer is fp32.view.tokenizer
    a, b = (evaluate(m, data, groupings=2, max_length=32) for m in (fp32, int8))
    assert abs(a.teacher_accuracy - b.teacher_accuracy) <= 0.02
    assert abs(a.accuracy_mean - b.accuracy_mean) <= 0.05
    with torch.inference_mode():
        torch.testing.assert_close(int8(enc), fp32(enc), atol=0.15, rtol=0.0)


def test_bad_modes_name_the_choices():
    assert QUANTIZE_MODES == ("none", "int8", "bf16") and check_quantize_mode("INT8") == "int8"
    with pytest.raises(ConfigError, match="--quantize must be one of none, int8, bf16, got 'int4'"):
        quantize_backbone(tiny_bert(), "int4")
    view = quantize_backbone(tiny_bert(), "bf16")
    with pytest.raises(ConfigError, match="already runs in bf16"):
        quantize_backbone(view, "int8")
    half = tiny_bert()
    half.model.to(torch.bfloat16)
    with pytest.raises(ConfigError, match="converts an fp32 backbone"):
        quantize_backbone(half, "int8")
