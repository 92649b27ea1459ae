"""Encoder views: embed -> [0, k) -> [k, L) -> head equals the Hugging Face classifier at every k."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import transformers
from transformers import AutoModelForSequenceClassification

from revmux.backbones import LayerState, load_backbone, view_for
from revmux.backbones.encoder import (
    BertView,
    DistilBertView,
    ElectraView,
    EncoderView,
    MPNetView,
    RobertaView,
)
from revmux.backbones.registry import supported_model_types, view_class
from revmux.errors import ConfigError, UnsupportedModelError

VOCAB = 128
LENGTHS = (12, 3, 7, 5)  # mixed lengths, longest not first, right padding
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _bert() -> Any:
    return transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=3, pad_token_id=0,
    )  # fmt: skip


def _roberta() -> Any:
    return transformers.RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, type_vocab_size=1, num_labels=2, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1},
    )  # fmt: skip


def _xlm_roberta() -> Any:
    return transformers.XLMRobertaConfig(
        vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=64,
        max_position_embeddings=64, type_vocab_size=1, num_labels=3, pad_token_id=1, bos_token_id=0,
        eos_token_id=2,
    )  # fmt: skip


def _electra() -> Any:  # embedding_size != hidden_size exercises embeddings_project
    return transformers.ElectraConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2, pad_token_id=0,
    )  # fmt: skip


def _distilbert() -> Any:
    return transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=3, n_heads=2, hidden_dim=64, max_position_embeddings=64,
        num_labels=2, pad_token_id=0,
    )  # fmt: skip


def _mpnet() -> Any:
    return transformers.MPNetConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=2, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip


# model_type -> (config builder, view class, layer count, uses token_type_ids, (start id, end id))
FAMILIES: dict[str, tuple[Callable[[], Any], type[EncoderView], int, bool, tuple[int, int]]] = {
    "bert": (_bert, BertView, 3, True, (2, 3)),
    "roberta": (_roberta, RobertaView, 2, False, (0, 2)),
    "xlm-roberta": (_xlm_roberta, RobertaView, 3, False, (0, 2)),
    "electra": (_electra, ElectraView, 4, True, (2, 3)),
    "distilbert": (_distilbert, DistilBertView, 3, False, (2, 3)),
    "mpnet": (_mpnet, MPNetView, 3, False, (0, 2)),
}
# MPNet has no SDPA attention in transformers (see test_mpnet_refuses_sdpa); every other family runs both.
CASES = [(t, a) for t in FAMILIES for a in ("eager", "sdpa") if not (t == "mpnet" and a == "sdpa")]


def _model(model_type: str, attn: str) -> Any:
    torch.manual_seed(0)
    config = FAMILIES[model_type][0]()  # a fresh config: from_config writes the attn choice into it
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=attn).eval()


def _batch(model_type: str, lengths: tuple[int, ...] = LENGTHS) -> dict[str, torch.Tensor]:
    """A right-padded batch like a tokenizer's: start/end tokens, pad id on pads, segments where used."""
    _, _, _, with_types, (start, end) = FAMILIES[model_type]
    pad = FAMILIES[model_type][0]().pad_token_id
    g = torch.Generator().manual_seed(1)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    types = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, VOCAB, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = start, end
        mask[i, :n] = 1
        types[i, n // 2 : n] = 1  # second segment of a pair
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        batch["token_type_ids"] = types
    return batch


@pytest.mark.parametrize(("model_type", "attn"), CASES)
def test_split_equals_unsplit_at_every_k(model_type: str, attn: str) -> None:
    view = view_for(_model(model_type, attn))
    assert type(view) is FAMILIES[model_type][1]
    assert view.config._attn_implementation == attn
    inputs = _batch(model_type)
    with torch.inference_mode():
        ref = view.forward_unsplit(inputs)
        assert ref.shape == (len(LENGTHS), view.num_labels)
        for k in range(view.num_layers + 1):
            torch.testing.assert_close(view.forward_split(inputs, k), ref, **TOL)


@pytest.mark.parametrize(("model_type", "attn"), CASES)
def test_packed_rows_give_each_sequence_its_padded_states(model_type: str, attn: str) -> None:
    """Every family packs rows (`run_packed`), under eager attention (additive mask) and sdpa (boolean), MPNet
    too (its per-layer bias depends on distances only): each real token's state in a row holding several
    sequences side by side equals its state in the padded batch, from every start layer."""
    view = view_for(_model(model_type, attn))
    assert view.packs_rows
    lengths = (5, 12, 3, 7, 4)
    inputs = _batch(model_type, lengths)
    # rows of capacity 12: [12], [5, 7], [3, 4, pad x5]; segment ids 1.. within a row, 0 for padding
    layout = [[1], [0, 3], [2, 4]]
    with torch.inference_mode():
        for start in range(view.num_layers):
            state = view.run_layers(view.embed(inputs), 0, start)
            padded = view.run_layers(state, start, view.num_layers).hidden
            hidden = state.hidden.new_zeros(len(layout), 12, view.hidden_size)
            segments = torch.zeros(len(layout), 12, dtype=torch.long)
            places = []
            for row, members in enumerate(layout):
                at = 0
                for segment, i in enumerate(members, start=1):
                    hidden[row, at : at + lengths[i]] = state.hidden[i, : lengths[i]]
                    segments[row, at : at + lengths[i]] = segment
                    places.append((row, at, i))
                    at += lengths[i]
            packed = view.run_packed(hidden, segments, start, view.num_layers)
            for row, at, i in places:
                torch.testing.assert_close(packed[row, at : at + lengths[i]], padded[i, : lengths[i]], **TOL)


def test_packed_rows_in_bf16_under_eager_attention() -> None:
    """The additive mask in bf16 (its minimum added to bf16 scores) masks without overflowing into NaN: MPNet
    in bf16 gives a packed row's sequences their padded bf16 states."""
    view = view_for(_model("mpnet", "eager").to(torch.bfloat16))
    inputs = _batch("mpnet", (5, 7))
    with torch.inference_mode():
        state = view.embed(inputs)
        padded = view.run_layers(state, 0, view.num_layers).hidden
        hidden = torch.cat([state.hidden[0, :5], state.hidden[1, :7]]).unsqueeze(0)
        segments = torch.tensor([[1] * 5 + [2] * 7])
        packed = view.run_packed(hidden, segments, 0, view.num_layers)[0]
    assert packed.dtype == torch.bfloat16 and torch.isfinite(packed).all()
    torch.testing.assert_close(packed[:5], padded[0, :5], atol=0.05, rtol=0.05)
    torch.testing.assert_close(packed[5:], padded[1, :7], atol=0.05, rtol=0.05)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_split_with_gradients_backprops_into_tail(model_type: str) -> None:
    view = view_for(_model(model_type, "eager"))
    inputs = _batch(model_type)
    ref = view.forward_unsplit(inputs)
    k = view.num_layers // 2
    scale = torch.ones(view.hidden_size, requires_grad=True)  # stands in for an adapter before the tail
    state = view.run_layers(view.embed(inputs), 0, k)
    state = view.run_layers(state.with_hidden(state.hidden * scale), k, view.num_layers)
    logits = view.head(view.gather(state), state.attention_mask)
    torch.testing.assert_close(logits, ref, **TOL)
    logits.sum().backward()
    assert scale.grad is not None and torch.isfinite(scale.grad).all() and scale.grad.abs().sum() > 0
    assert all(p.grad is None for p in view.model.parameters())


def test_unpadded_batch_without_token_types() -> None:
    view = view_for(_model("bert", "sdpa"))
    inputs = {"input_ids": _batch("bert", (6, 6))["input_ids"]}  # no mask, no token types
    with torch.inference_mode():
        ref = view.forward_unsplit(inputs)
        for k in range(view.num_layers + 1):
            torch.testing.assert_close(view.forward_split(inputs, k), ref, **TOL)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_embed_state_and_empty_range(model_type: str) -> None:
    view = view_for(_model(model_type, "eager"))
    inputs = _batch(model_type)
    state = view.embed(inputs)
    assert isinstance(state, LayerState) and state.position_ids is None
    assert state.hidden.shape == (len(LENGTHS), max(LENGTHS), view.hidden_size)
    assert state.attention_mask.dtype == torch.long
    assert torch.equal(state.attention_mask, inputs["attention_mask"])
    for i in range(view.num_layers + 1):
        same = view.run_layers(state, i, i)
        assert torch.equal(same.hidden, state.hidden)
        assert torch.equal(same.attention_mask, state.attention_mask)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_out_of_range_layers_raise(model_type: str) -> None:
    view = view_for(_model(model_type, "eager"))
    state = view.embed(_batch(model_type))
    L = view.num_layers
    for start, stop in [(0, L + 1), (-1, 1), (2, 1), (L + 1, L + 1)]:
        with pytest.raises(ConfigError, match="layer range"):
            view.run_layers(state, start, stop)
    with pytest.raises(ConfigError, match="split point"):
        view.forward_split(_batch(model_type), L + 1)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_view_facts(model_type: str) -> None:
    builder, _, layers, _, _ = FAMILIES[model_type]
    config = builder()
    view = view_for(_model(model_type, "eager"))
    assert view.model_type == model_type
    assert view.num_layers == layers
    assert len(view.layer_modules()) == layers
    assert view.hidden_size == config.hidden_size
    assert view.num_labels == config.num_labels
    expected = ["neg", "pos"] if model_type == "roberta" else [f"LABEL_{i}" for i in range(config.num_labels)]
    assert view.label_names == expected
    assert not any(p.requires_grad for p in view.model.parameters())
    assert not view.model.training


def test_mpnet_refuses_sdpa() -> None:
    # Transformers has no SDPA path for MPNet; load_backbone then falls back to the default (eager).
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        AutoModelForSequenceClassification.from_config(_mpnet(), attn_implementation="sdpa")


def test_unsupported_models_and_heads() -> None:
    with pytest.raises(UnsupportedModelError) as info:
        view_class("gpt2")
    for model_type in supported_model_types():
        assert model_type in str(info.value)
    bare = transformers.AutoModel.from_config(_bert())  # no classification head
    with pytest.raises(UnsupportedModelError, match="sequence-classification"):
        view_for(bare)
    with pytest.raises(ConfigError, match="verbalizer_ids"):
        view_for(_model("bert", "eager"), verbalizer_ids=[5, 6])


SENTENCES = [
    "Great.",
    "The plot was thin but the acting carried it.",
    "I would not recommend this restaurant to anyone who values their time, money, or taste buds at all.",
    "Fine, I guess.",
    "An astonishing, moving, beautifully photographed film that stays with you for days after the credits.",
]


@pytest.mark.real
def test_real_minilm_split_equals_unsplit(minilm_path: Any) -> None:
    torch.manual_seed(0)
    view = load_backbone(minilm_path, num_labels=2)
    assert isinstance(view, BertView)
    assert (view.num_layers, view.hidden_size, view.num_labels) == (6, 384, 2)
    inputs = view.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    lengths = inputs["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(SENTENCES)
    with torch.inference_mode():
        ref = view.forward_unsplit(inputs)
        for k in range(view.num_layers + 1):
            torch.testing.assert_close(view.forward_split(inputs, k), ref, **TOL)
