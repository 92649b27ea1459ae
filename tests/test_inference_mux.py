"""Adapters in the backbone's precision: on a bf16 backbone, inference can run a bf16 copy of the adapters
(`adapter_precision` "backbone", and "auto" where bf16 matmuls are native).

Tolerance: on a bf16 backbone, the logits with bf16 adapters stay within 2% of the logits' largest
magnitude (plus 1e-3) of the logits with fp32 adapters; the bf16 backbone alone moves them about as far
from the fp32 model (both are checked here on a tiny random BERT).
"""

from __future__ import annotations

import pytest
import torch

import revmux.model
from revmux.errors import ConfigError
from revmux.model import MuxModel
from tests.tiny import tiny_batch, tiny_bert


def _trained_like(n: int) -> MuxModel:
    """Fresh adapters with a PCA composite and perturbed weights on a tiny BERT, as training leaves them."""
    view = tiny_bert()
    model = MuxModel.from_backbone(view, n=n, k=1)
    torch.manual_seed(1)
    with torch.no_grad():
        model.mux.init_down_pca(model.prefill(tiny_batch([20] * 8, seed=6)).hidden.reshape(-1, 32))
        for p in model.mux.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.mark.parametrize("n", [2, 4])
def test_bf16_adapters_agree_with_fp32_adapters_on_a_bf16_backbone(n):
    model = _trained_like(n)
    batch = tiny_batch([3 + (i * 7) % 29 for i in range(40)], seed=5)
    with torch.inference_mode():
        reference = model(batch, length_aware=True)  # fp32 everything
        assert model.inference_mux() is model.mux
        model.view.model.to(torch.bfloat16)
        model.adapter_precision = "backbone"
        fast = model(batch, length_aware=True)
        model.adapter_precision = "fp32"
        slow = model(batch, length_aware=True)
    assert fast.dtype == slow.dtype == torch.bfloat16
    scale = reference.abs().max().item()
    tol = 0.02 * scale + 1e-3
    assert (fast.float() - slow.float()).abs().max().item() <= tol
    assert (slow.float() - reference).abs().max().item() <= tol
    assert not torch.equal(fast, slow)  # really computed differently
    assert {p.dtype for p in model.mux.parameters()} == {torch.float32}  # the saved weights are never cast


def test_the_bf16_copy_is_made_once_and_follows_weight_changes():
    model = _trained_like(2)
    model.view.model.to(torch.bfloat16)
    model.adapter_precision = "backbone"
    batch = tiny_batch([5, 9, 7, 3], seed=2)
    with torch.inference_mode():
        twin = model.inference_mux()
        assert twin is not model.mux and {p.dtype for p in twin.parameters()} == {torch.bfloat16}
        assert model.inference_mux() is twin  # cast once, not per call
        before = model(batch)
    with torch.no_grad():
        model.mux.up_proj[2].bias.add_(1.0)  # an optimizer step or load_state_dict changes weights in place
    with torch.inference_mode():
        assert model.inference_mux() is not twin
        assert not torch.allclose(model(batch), before)
    assert model.inference_mux() is model.mux  # gradients recorded: the fp32 adapters themselves


@pytest.mark.parametrize("native", [True, False])
def test_auto_uses_bf16_adapters_only_where_bf16_is_native(native, monkeypatch):
    model = _trained_like(2)
    model.view.model.to(torch.bfloat16)
    monkeypatch.setattr(revmux.model, "native_bf16", lambda device_type: native)
    with torch.inference_mode():
        assert (model.inference_mux() is model.mux) is not native


def test_adapter_precision_is_checked():
    model = _trained_like(2)
    model.adapter_precision = "fp8"
    with pytest.raises(ConfigError, match="adapter_precision must be one of auto, backbone, fp32"):
        model.inference_mux()
