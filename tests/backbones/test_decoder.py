"""DecoderView on tiny random decoder-only LMs: every split point equals the unsplit Hugging Face forward."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
import transformers

from revmux.backbones import LayerState, view_for
from revmux.backbones.decoder import DecoderView
from revmux.errors import ConfigError

VOCAB, PAD, T = 128, 0, 12
LENGTHS = (3, 12, 7, 5)  # mixed lengths, one full row
VERBALIZER = [5, 9, 17]
TOL = {"atol": 1e-5, "rtol": 1e-5}

_COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 64,
    "pad_token_id": PAD,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
_MIXED = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]

# model_type -> config overrides; windows of 4 < T so the sliding masks really cut attention.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {"num_hidden_layers": 3},
    "qwen2": {"num_hidden_layers": 4, "use_sliding_window": True, "sliding_window": 4, "layer_types": _MIXED},
    "mistral": {"num_hidden_layers": 3, "sliding_window": 4},
    "gemma": {"num_hidden_layers": 2, "hidden_size": 48},
    "gemma2": {
        "num_hidden_layers": 4,
        "sliding_window": 4,
        "layer_types": _MIXED,
        "final_logit_softcapping": 0.5,
    },
    "gemma3_text": {
        "num_hidden_layers": 4,
        "sliding_window": 4,
        "layer_types": _MIXED,
        "final_logit_softcapping": 0.5,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    },
}
NO_SDPA = {"gemma2"}  # Gemma2PreTrainedModel._supports_sdpa is False (softcapped attention)

CASES = [
    pytest.param(mt, head, attn, id=f"{mt}-{head}-{attn}")
    for mt in FAMILIES
    for head in ("cls", "lm")
    for attn in ("eager", "sdpa")
    if not (attn == "sdpa" and mt in NO_SDPA)
]


@functools.cache
def build(model_type: str, head: str, attn: str = "eager") -> DecoderView:
    """A seeded tiny model in eval mode, wrapped by `view_for`."""
    torch.manual_seed(0)
    num_labels = 3 if len(model_type) % 2 else 2
    config = transformers.AutoConfig.for_model(model_type, **{**_COMMON, **FAMILIES[model_type]})
    if head == "cls":
        config.num_labels = num_labels
        model = transformers.AutoModelForSequenceClassification.from_config(config, attn_implementation=attn)
        return view_for(model.eval())
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    return view_for(model.eval(), verbalizer_ids=VERBALIZER)


def sentences(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(PAD + 3, VOCAB, (n,), generator=g) for n in LENGTHS]


def batch(side: str, sents: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Pad `sents` to T with PAD on the `side` ("right" or "left")."""
    sents = sents if sents is not None else sentences()
    ids = torch.full((len(sents), T), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sents):
        sl = slice(0, len(s)) if side == "right" else slice(T - len(s), T)
        ids[i, sl], mask[i, sl] = s, 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("model_type,head,attn", CASES)
def test_every_split_equals_unsplit(model_type: str, head: str, attn: str) -> None:
    view = build(model_type, head, attn)
    assert isinstance(view, DecoderView)
    assert view.num_layers == FAMILIES[model_type]["num_hidden_layers"]
    for side in ("right", "left"):
        inputs = batch(side)
        with torch.inference_mode():
            ref = view.forward_unsplit(inputs)
            assert ref.shape == (len(LENGTHS), view.num_labels)
            assert torch.isfinite(ref).all()
            # the reference itself is the model's plain call (default cache settings, HF's own pooling)
            logits = view.model(**inputs).logits
            if head == "lm":
                rows = torch.arange(len(LENGTHS))
                logits = logits[rows, torch.tensor(LENGTHS) - 1 if side == "right" else -1][:, VERBALIZER]
            torch.testing.assert_close(ref, logits, **TOL)
            for k in range(view.num_layers + 1):
                torch.testing.assert_close(view.forward_split(inputs, k), ref, **TOL)


@pytest.mark.parametrize("model_type", list(FAMILIES))
@pytest.mark.parametrize("side", ["right", "left"])
def test_unsplit_lm_head_equals_causal_lm_logits(model_type: str, side: str) -> None:
    """forward_unsplit (lm_head at the last real token only) == *ForCausalLM's full logits read there."""
    view = build(model_type, "lm")
    inputs = batch(side)
    with torch.inference_mode():
        full = view.model(**inputs, use_cache=False).logits  # (B, T, V), softcap included
        last = full[torch.arange(len(LENGTHS)), view.read_index(inputs["attention_mask"])]
        torch.testing.assert_close(view.forward_unsplit(inputs), last[:, VERBALIZER], **TOL)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_tail_trains_with_gradients(model_type: str) -> None:
    """With grad enabled, the tail [k, L) + head is differentiable w.r.t. the hidden state at k."""
    view = build(model_type, "lm")
    inputs = batch("left")
    k = 1
    with torch.no_grad():
        state = view.run_layers(view.embed(inputs), 0, k)
    hidden = state.hidden.clone().requires_grad_(True)
    out = view.run_layers(state.with_hidden(hidden), k, view.num_layers)
    logits = view.head(view.gather(out), out.attention_mask)
    logits.square().sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    assert all(p.grad is None for p in view.model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(logits.detach(), view.forward_unsplit(inputs), **TOL)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_final_norm_only_in_head(model_type: str) -> None:
    view = build(model_type, "cls")
    inputs = batch("right")
    with torch.inference_mode():
        state = view.run_layers(view.embed(inputs), 0, view.num_layers)
        last = view.model.model(**inputs).last_hidden_state
        assert not torch.allclose(state.hidden, last, atol=1e-3)
        torch.testing.assert_close(view.model.model.norm(state.hidden), last, **TOL)


@pytest.mark.parametrize("model_type", ["llama", "mistral", "gemma3_text"])
def test_left_and_right_padding_agree(model_type: str) -> None:
    """RoPE and the (sliding) causal masks are relative: the padding side leaves each sentence's logits."""
    for head in ("cls", "lm"):
        view = build(model_type, head)
        with torch.inference_mode():
            right = view.forward_split(batch("right"), 1)
            left = view.forward_split(batch("left"), 1)
        torch.testing.assert_close(left, right, atol=1e-4, rtol=1e-4)


def test_read_index_right_and_left_padding() -> None:
    view = build("llama", "cls")
    right, left = batch("right")["attention_mask"], batch("left")["attention_mask"]
    assert view.read_index(right).tolist() == [n - 1 for n in LENGTHS]
    assert view.read_index(left).tolist() == [T - 1] * len(LENGTHS)
    unpadded = torch.ones(2, 5, dtype=torch.long)
    assert view.read_index(unpadded).tolist() == [4, 4]


def test_embed_positions_and_composite_state() -> None:
    view = build("gemma", "cls")
    inputs = batch("left")
    state = view.embed(inputs)
    assert state.hidden.shape == (len(LENGTHS), T, view.hidden_size)
    assert torch.equal(state.position_ids, torch.arange(T).unsqueeze(0))
    # gemma scales embeddings by sqrt(d) inside its embedding module
    raw = view.model.model.embed_tokens.weight[inputs["input_ids"]]
    torch.testing.assert_close(state.hidden, raw * view.hidden_size**0.5)
    comp = view.composite_state(state.hidden[:, :7], inputs["attention_mask"][:, :7])
    assert isinstance(comp, LayerState)
    assert torch.equal(comp.position_ids, torch.arange(7).unsqueeze(0))


def test_layer_ranges() -> None:
    view = build("qwen2", "cls")
    state = view.embed(batch("right"))
    assert view.run_layers(state, 2, 2) is state
    with pytest.raises(ConfigError):
        view.run_layers(state, 3, 2)
    with pytest.raises(ConfigError):
        view.run_layers(state, 0, view.num_layers + 1)
    with pytest.raises(ConfigError):
        view.forward_split(batch("right"), view.num_layers + 1)
    # a state without position ids runs with the default ones
    with torch.inference_mode():
        a = view.run_layers(state, 0, 2).hidden
        b = view.run_layers(LayerState(state.hidden, state.attention_mask), 0, 2).hidden
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    # layer_modules are the modules run_layers calls (what bench --compile wraps)
    assert len(view.layer_modules()) == view.num_layers
    seen: list[int] = []
    view.layer_modules()[1].register_forward_hook(lambda *_: seen.append(1))
    with torch.inference_mode():
        view.run_layers(state, 0, 1)
        assert seen == []
        view.run_layers(state, 1, 2)
    assert seen == [1]


def test_head_kind_and_verbalizer_checks() -> None:
    lm, cls = build("llama", "lm"), build("llama", "cls")
    assert not lm.is_classifier and lm.num_labels == len(VERBALIZER)
    assert cls.is_classifier and cls.num_labels == 3
    with pytest.raises(ConfigError):
        view_for(lm.model)  # an LM head needs verbalizer ids
    with pytest.raises(ConfigError):
        view_for(lm.model, verbalizer_ids=[])
    with pytest.raises(ConfigError):
        view_for(lm.model, verbalizer_ids=[5, VOCAB])
    with pytest.raises(ConfigError):
        view_for(cls.model, verbalizer_ids=VERBALIZER)


def test_gemma3_bidirectional_attention() -> None:
    """gemma3_text with use_bidirectional_attention: the forward's or_mask_function overlays are kept."""
    torch.manual_seed(0)
    overrides = {**_COMMON, **FAMILIES["gemma3_text"], "use_bidirectional_attention": True}
    config = transformers.AutoConfig.for_model("gemma3_text", num_labels=2, **overrides)
    view = view_for(transformers.AutoModelForSequenceClassification.from_config(config).eval())
    for side in ("right", "left"):
        inputs = batch(side)
        with torch.inference_mode():
            ref = view.forward_unsplit(inputs)
            for k in range(view.num_layers + 1):
                torch.testing.assert_close(view.forward_split(inputs, k), ref, **TOL)


def test_gemma3_text_model_type() -> None:
    assert transformers.Gemma3TextConfig.model_type == "gemma3_text"
    assert "gemma3_text" in DecoderView.model_types
