"""RequestEncoder: the one path from raw inputs to token ids, identical to the tokenization it replaces."""

from __future__ import annotations

import pytest
import torch
import transformers

from revmux.config import MuxConfig
from revmux.data import TaskData, tokenize
from revmux.encoding import RequestEncoder, tokenizer_fingerprint
from revmux.errors import ConfigError, InputError
from revmux.model import MuxModel
from revmux.prompting import apply_prompt, default_prompt, prompt_texts
from revmux.train.cache import tokenizer_fingerprint as cache_tokenizer_fingerprint
from tests.test_prompting import bpe_tokenizer
from tests.tiny import tiny_bert

TEXTS = ["a gripping film", "dull and far too long " * 30, "fine"]
PAIRS = ["it moves", "second sentence " * 40, "ok"]


@pytest.fixture(scope="module")
def plain_tok(minilm_path):
    return transformers.AutoTokenizer.from_pretrained(str(minilm_path))


@pytest.fixture(scope="module")
def chat_tok():
    return bpe_tokenizer()


@pytest.fixture(scope="module")
def spec():
    return default_prompt("chat", "sst2", ["negative", "positive"])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("pairs", [None, PAIRS])
def test_plain_tokens_equal_todays_tokenization(plain_tok, pairs):
    encoder = RequestEncoder(plain_tok, max_length=32)
    data = TaskData(TEXTS, pairs, [0, 1, 0], ["neg", "pos"], "s")
    _same(encoder(TEXTS, pairs), tokenize(plain_tok, data, 32))
    assert encoder.prepare(data) is data
    for i, text in enumerate(TEXTS):
        pair = None if pairs is None else pairs[i]
        want = plain_tok(text, text_pair=pair, truncation=True, max_length=32)
        got = encoder.encode_one(text, pair)
        assert got["input_ids"] == want["input_ids"] and got["token_type_ids"] == want["token_type_ids"]


def test_prompted_tokens_equal_todays_prompt_then_tokenize(chat_tok, spec):
    encoder = RequestEncoder(chat_tok, max_length=48, prompt=spec)
    data = TaskData(TEXTS, None, [0, 1, 0], ["negative", "positive"], "s")
    prompted = apply_prompt(chat_tok, spec, data, 48)
    assert encoder.prepare(data).texts == prompted.texts
    _same(encoder(TEXTS), tokenize(chat_tok, prompted, 48))
    tail = chat_tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for i, text in enumerate(TEXTS):
        ids = encoder.encode_one(text)["input_ids"]
        assert ids == chat_tok(prompted.texts[i], truncation=True, max_length=48)["input_ids"]
        assert len(ids) <= 48 and ids[-len(tail) :] == tail  # the long text lost its end, not the prompt's
    pair_spec = default_prompt("chat", "rte", ["entailment", "not_entailment"])
    pair_encoder = RequestEncoder(chat_tok, max_length=64, prompt=pair_spec)
    want, _ = prompt_texts(chat_tok, pair_spec, TEXTS, PAIRS, 64)
    assert pair_encoder.render(TEXTS, PAIRS) == (want, None)


def test_truncation_off_refuses_long_inputs_prompted_or_not(plain_tok, chat_tok, spec):
    plain = RequestEncoder(plain_tok, max_length=16, truncation=False)
    assert len(plain.encode_one("short")["input_ids"]) < 16
    with pytest.raises(InputError, match="more than max_length=16, and truncation is off"):
        plain.encode_one(TEXTS[1])
    with pytest.raises(InputError, match="input 1 has"):
        plain(TEXTS)
    prompted = RequestEncoder(chat_tok, max_length=48, prompt=spec, truncation=False)
    assert (
        prompted.encode_one("fine")["input_ids"]
        == RequestEncoder(chat_tok, 48, spec).encode_one("fine")["input_ids"]
    )
    with pytest.raises(InputError, match="input 0 is \\d+ tokens as a chat prompt, more than max_length=48"):
        prompted.encode_one(TEXTS[1])  # today's serve shortened it although "truncate" was false
    assert len(prompted.encode_one(TEXTS[1], truncation=True)["input_ids"]) <= 48


def test_from_config_describe_and_difference(chat_tok, plain_tok, spec):
    config = MuxConfig(
        kind="revmux", n=2, k=1, hidden_size=32, num_layers=3, backbone_model_type="llama",
        verbalizer_ids=[5, 9], max_length=48, prompt=spec.to_dict(),
    )  # fmt: skip
    encoder = RequestEncoder.from_config(config, chat_tok)
    assert (encoder.prompt, encoder.max_length, encoder.verbalizer_ids) == (spec, 48, (5, 9))
    described = encoder.describe()
    assert described["prompt"] == spec.to_dict() and len(described["tokenizer"]) == 16
    assert tokenizer_fingerprint(chat_tok) == cache_tokenizer_fingerprint(chat_tok)  # one digest for both
    assert encoder.difference(RequestEncoder.from_config(config, chat_tok)) is None
    assert "max_length 48 vs 64" in encoder.difference(encoder.replace(max_length=64))
    assert encoder.difference(encoder.replace(prompt=None)).startswith("prompt ")
    assert encoder.difference(encoder.replace(verbalizer_ids=(5, 8))) == "verbalizer_ids [5, 9] vs [5, 8]"
    assert encoder.difference(encoder.replace(tokenizer=plain_tok)).startswith("tokenizer ")
    with pytest.raises(ConfigError, match="no tokenizer"):
        RequestEncoder(None)(["a"])


def test_the_model_owns_its_encoder_and_never_mutates_the_view(plain_tok, spec):
    view = tiny_bert()
    view.tokenizer = plain_tok
    model = MuxModel.from_backbone(view, n=2, k=1, max_length=24)
    assert model.encoder == RequestEncoder(plain_tok, max_length=24)
    assert not hasattr(view, "prompt")
    prompted = MuxModel.from_backbone(view, n=2, k=1, max_length=96, prompt=spec)
    assert prompted.config.prompt == spec.to_dict() and prompted.encoder.prompt == spec
    assert model.encoder.prompt is None  # two models on one view, each with its own encoder
