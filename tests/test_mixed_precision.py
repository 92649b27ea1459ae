"""Mixed precision: a bf16/fp16 backbone with fp32 adapters (the CUDA serving setup), checked on CPU at tiny size.

The backbone is loaded with `load_backbone(..., dtype=...)`; the multiplexer keeps fp32 weights, computes in
fp32 and hands the backbone its own dtype. Logits come out in the backbone's dtype and stay within a
half-precision tolerance of the same adapters on the fp32 backbone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from revmux.backbones import load_backbone
from revmux.model import MuxModel
from revmux.train import TrainConfig, train
from tests.train import one_thread, toy_task

HALF = [torch.bfloat16, torch.float16]
VERBALIZER = {"llama": [2919, 2204], "t5": [2919, 2204], "bert": None}  # "bad", "good" in WordPiece
# logits of the tiny models are O(1): half precision keeps ~3 significant digits through 3 layers
TOL = {torch.bfloat16: {"atol": 3e-2, "rtol": 3e-2}, torch.float16: {"atol": 5e-3, "rtol": 5e-3}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def _config(family: str) -> transformers.PretrainedConfig:
    common = {"vocab_size": 30522, "pad_token_id": 0}
    if family == "llama":
        return transformers.LlamaConfig(
            **common, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128,
        )  # fmt: skip
    if family == "t5":
        return transformers.T5Config(
            **common, d_model=32, d_ff=64, d_kv=8, num_layers=3, num_decoder_layers=1, num_heads=4,
            decoder_start_token_id=0,
        )  # fmt: skip
    return transformers.BertConfig(
        **common, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=128, num_labels=2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, minilm_path) -> dict[str, Path]:
    """A tiny random model of each family (fp32 on disk) with the MiniLM tokenizer."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_path))
    auto = {
        "llama": transformers.AutoModelForCausalLM,
        "t5": transformers.AutoModelForSeq2SeqLM,
        "bert": transformers.AutoModelForSequenceClassification,
    }
    dirs = {}
    for family, cls in auto.items():
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(family)
        cls.from_config(_config(family)).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[family] = path
    return dirs


def _randomize(model: MuxModel, std: float = 0.2) -> MuxModel:
    with torch.no_grad():
        for p in model.mux.parameters():
            p.normal_(0.0, std)
    return model


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("family", ["llama", "t5", "bert"])
def test_half_backbone_with_fp32_adapters(model_dirs, family, dtype):
    path = model_dirs[family]
    full = load_backbone(path, verbalizer_ids=VERBALIZER[family])
    half = load_backbone(path, verbalizer_ids=VERBALIZER[family], dtype=dtype)
    assert (full.dtype, half.dtype) == (torch.float32, dtype)
    reference = _randomize(MuxModel.from_backbone(full, n=2, k=1))
    model = MuxModel.from_backbone(half, n=2, k=1)
    model.mux.load_state_dict(reference.mux.state_dict())
    model.adapter_precision = "fp32"  # this test's subject (bf16 adapters: tests/test_inference_mux.py)
    assert {p.dtype for p in model.mux.parameters()} == {torch.float32}

    texts = toy_task(rows=6).texts
    enc = half.tokenizer(texts, padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.inference_mode():
        state = model.prefill(batch)
        out = model.forward_from_prefill(state, return_down=True)
        expected = reference(batch)
    # fp16 T5 keeps its FF output projections (`wo`) in fp32, as transformers loads it, so its states are fp32
    states_dtype = torch.float32 if (family, dtype) == ("t5", torch.float16) else dtype
    assert state.hidden.dtype == out.reps.dtype == out.down.dtype == states_dtype
    assert out.logits.dtype == dtype
    assert out.logits.shape == (6, 2) and torch.isfinite(out.logits).all()
    assert {p.dtype for p in model.mux.parameters()} == {torch.float32}  # never cast by the forward
    torch.testing.assert_close(out.logits.float(), expected, **TOL[dtype])
    assert not torch.allclose(out.logits.float(), expected, atol=1e-6)  # really computed in half precision


def test_adapters_train_on_a_bf16_backbone_from_the_cache(model_dirs, tmp_path):
    """The prefill cache hands the backbone states in its own dtype; the losses run in fp32."""
    view = load_backbone(model_dirs["llama"], verbalizer_ids=VERBALIZER["llama"], dtype=torch.bfloat16)
    config = TrainConfig(min_steps=0, n=2, k=1, epochs=2, batch_groups=8, max_length=32)
    result = train(
        view, toy_task(rows=64), config, tmp_path, backbone_path=str(model_dirs["llama"]),
        cache_root=tmp_path / "cache", progress=False,
    )  # fmt: skip
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    mux = MuxModel.from_pretrained(tmp_path, view)
    assert {p.dtype for p in mux.mux.parameters()} == {torch.float32}


def test_from_pretrained_casts_the_backbone_after_the_hash_check(model_dirs, tmp_path):
    """An adapter trained on the fp32 backbone loads onto it in bf16 (hash checked on the fp32 weights)."""
    view = load_backbone(model_dirs["bert"])
    MuxModel.from_backbone(view, n=2, k=1, backbone_path=str(model_dirs["bert"])).save_pretrained(tmp_path)
    model = MuxModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.view.dtype == torch.bfloat16
    assert {p.dtype for p in model.mux.parameters()} == {torch.float32}
