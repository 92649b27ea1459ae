"""Prompt + verbalizer teachers on a tiny random Llama with an offline byte-level BPE tokenizer and a chat template.

The tokenizer is trained in the test (no hub) like SmolLM2's: byte-level BPE, ChatML special tokens, no
BOS/EOS added by the tokenizer itself, so a prompt's last token is the assistant header's newline.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from tokenizers import decoders as tk_decoders
from typer.testing import CliRunner

from revmux.backbones.registry import load_backbone
from revmux.cli import app
from revmux.data import TaskData
from revmux.errors import ConfigError
from revmux.evaluate import evaluate
from revmux.model import MuxModel
from revmux.predict import predict
from revmux.prompting import (
    TASK_PROMPTS,
    PromptSpec,
    apply_prompt,
    default_prompt,
    load_prompted_backbone,
    prompt_texts,
    render,
    verbalizer_ids,
)
from revmux.train import TrainConfig, train
from tests.train import one_thread, toy_task

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def bpe_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the toy task and the task prompts, with a ChatML template."""
    rng = random.Random(0)
    corpus = toy_task(rows=300).texts + [" ".join(p[:2]) for p in TASK_PROMPTS.values()]
    corpus += ["positive", "negative", "yes", "no", "Review:", "Answer:", "user", "assistant"] * 20
    corpus += [" ".join(rng.sample(corpus[:300], 3)) for _ in range(100)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk_decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )  # fmt: skip
    fast.chat_template = CHATML
    return fast


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny random LlamaForCausalLM saved with the BPE tokenizer (right padding, as SmolLM2's)."""
    tokenizer = bpe_tokenizer()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("tiny_llama_lm")
    transformers.AutoModelForCausalLM.from_config(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(llama_dir):
    return transformers.AutoTokenizer.from_pretrained(str(llama_dir))


def test_task_defaults_and_overrides():
    spec = default_prompt("chat", "sst2", ["negative", "positive"])
    assert spec.words == ["negative", "positive"] and "positive or negative" in spec.instruction
    assert spec.answer_tokens == ["negative", "positive"]
    assert default_prompt("plain", "sst2", ["negative", "positive"]).answer_tokens == [
        " negative",
        " positive",
    ]
    rte = default_prompt("chat", "rte", ["entailment", "not_entailment"])
    assert rte.words == ["yes", "no"] and "{pair}" in rte.template
    generic = default_prompt("chat", None, ["bad", "good"], is_pair=True, instruction="Rate it.")
    assert generic.words == ["bad", "good"] and generic.instruction == "Rate it."
    assert "{pair}" in generic.template
    assert PromptSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ConfigError, match="2 classes"):
        default_prompt("chat", "sst2", ["negative", "positive"], words=["a", "b", "c"])
    with pytest.raises(ConfigError, match="--prompt-style"):
        default_prompt("fancy", "sst2", ["negative", "positive"])
    with pytest.raises(ConfigError, match="differ"):
        default_prompt("chat", "sst2", ["negative", "positive"], words=["yes", "yes"])


def test_verbalizer_words_must_be_single_tokens(tokenizer):
    spec = default_prompt("chat", "sst2", ["negative", "positive"])
    ids = verbalizer_ids(tokenizer, spec)
    assert tokenizer.convert_ids_to_tokens(ids) == ["negative", "positive"]
    bad = default_prompt("chat", "sst2", ["negative", "positive"], words=["negative", "unpositivity"])
    with pytest.raises(ConfigError, match=r"'unpositivity' is \d+ tokens \[") as err:
        verbalizer_ids(tokenizer, bad)
    assert "--verbalizer-words" in str(err.value)


def test_chat_and_plain_rendering(tokenizer):
    chat = default_prompt("chat", "rte", ["entailment", "not_entailment"])
    prompt = render(tokenizer, chat, "A man sleeps.", "Someone rests.")
    expected = tokenizer.apply_chat_template(
        [
            {
                "role": "user",
                "content": f"{chat.instruction}\nPremise: A man sleeps.\nHypothesis: Someone rests.",
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt == expected and prompt.endswith("<|im_start|>assistant\n")
    plain = default_prompt("plain", "sst2", ["negative", "positive"])
    assert (
        render(tokenizer, plain, "fine {text} film")
        == f"{plain.instruction}\nReview: fine {{text}} film\nAnswer:"
    )
    no_template = transformers.AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    no_template.chat_template = None
    with pytest.raises(ConfigError, match="--prompt-style plain"):
        render(no_template, chat, "a", "b")


def test_long_texts_lose_their_end_never_the_prompt_end(tokenizer):
    spec = default_prompt("chat", "sst2", ["negative", "positive"])
    tail = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    texts = ["the film was good " * 40, "bad", "a very long but fine story " * 30]
    prompts, pairs = prompt_texts(tokenizer, spec, texts, None, max_length=48)
    assert pairs is None and "Review: bad" in prompts[1]
    for p in prompts:
        ids = tokenizer(p)["input_ids"]
        assert len(ids) <= 48 and ids[-len(tail) :] == tail
    pair_spec = default_prompt("chat", "rte", ["entailment", "not_entailment"])
    prompts, _ = prompt_texts(tokenizer, pair_spec, ["short premise"], ["a long hypothesis " * 50], 64)
    assert render(tokenizer, pair_spec, "{pair}", "{text}").count("{pair}") == 1  # texts are not templates
    assert "short premise" in prompts[0] and len(tokenizer(prompts[0])["input_ids"]) <= 64
    with pytest.raises(ConfigError, match="--max-length 20 leaves"):
        prompt_texts(tokenizer, spec, texts, None, max_length=20)


def test_prompted_view_reads_the_last_real_token_on_both_padding_sides(llama_dir):
    spec = default_prompt("chat", "sst2", ["negative", "positive"])
    view = load_prompted_backbone(llama_dir, spec)
    assert not hasattr(view, "prompt") and view.label_names == [
        "negative",
        "positive",
    ]  # views hold no prompt
    data = apply_prompt(view.tokenizer, spec, toy_task(rows=6), 64)
    logits = {}
    for side in ("right", "left"):
        view.tokenizer.padding_side = side
        enc = view.tokenizer(data.texts, padding=True, return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        with torch.inference_mode():
            logits[side] = view.forward_unsplit(batch)
            for k in (0, 2, 3):
                torch.testing.assert_close(view.forward_split(batch, k), logits[side], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits["left"], logits["right"], atol=1e-4, rtol=1e-4)


def test_train_saves_the_prompt_and_eval_predict_apply_it(llama_dir, tmp_path):
    spec = default_prompt("chat", "sst2", ["negative", "positive"])
    view = load_prompted_backbone(llama_dir, spec)
    config = TrainConfig(min_steps=0, n=2, k=1, epochs=1, batch_groups=8, max_length=64)
    train(
        view, toy_task(rows=64), config, tmp_path, backbone_path=str(llama_dir), task="sst2",
        cache_root=tmp_path / "cache", progress=False, prompt=spec,
    )  # fmt: skip
    assert json.loads((tmp_path / "mux_config.json").read_text())["prompt"] == spec.to_dict()
    mux = MuxModel.from_pretrained(tmp_path)
    assert mux.encoder.prompt == spec and mux.config.label_names == ["negative", "positive"]
    raw = toy_task(rows=8, seed=3)
    got = predict(mux, raw.texts, top_k=None)
    plain = MuxModel.from_pretrained(
        tmp_path, load_backbone(llama_dir, verbalizer_ids=mux.config.verbalizer_ids)
    )
    plain.config.prompt = None  # a model without the prompt, fed the prompts by hand
    assert plain.encoder.prompt is None and mux.encoder.prompt == spec  # one view, two encoders
    prompts, _ = prompt_texts(mux.view.tokenizer, spec, raw.texts, None, 64)
    assert got == predict(plain, prompts, top_k=None)
    report = evaluate(mux, raw, groupings=2, batch_size=4)
    assert report.num_examples == 8 and 0.0 <= report.accuracy_mean <= 1.0


def test_cli_finetune_train_eval_with_a_chat_prompt(llama_dir, tmp_path):
    data = toy_task(rows=48)
    path = tmp_path / "toy.jsonl"
    rows = zip(data.texts, data.labels, strict=True)
    path.write_text("".join(json.dumps({"text": t, "label": data.label_names[y]}) + "\n" for t, y in rows))
    prompt = ["--prompt-style", "chat", "--verbalizer-words", "negative,positive", "--max-length", "64"]
    teacher = tmp_path / "teacher"
    args = ["finetune", "--model", str(llama_dir), "--train", str(path), "--out", str(teacher), *prompt]
    result = CliRunner().invoke(app, [*args, "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    log = json.loads((teacher / "finetune_log.json").read_text())
    assert len(log["config"]["verbalizer_ids"]) == 2
    assert isinstance(
        transformers.AutoModelForCausalLM.from_pretrained(teacher), transformers.LlamaForCausalLM
    )

    out = tmp_path / "adapter"
    args = ["train", "--teacher", str(teacher), "--train", str(path), "--out", str(out), *prompt]
    result = CliRunner().invoke(
        app, [*args, "--epochs", "1", "--min-steps", "0", "--batch-groups", "8", "--n", "2", "--k", "1"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "mux_config.json").read_text())
    assert saved["prompt"]["style"] == "chat" and saved["shared_prefix"] is True  # automatic on decoders

    result = CliRunner().invoke(app, ["eval", "--adapter", str(out), "--eval", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["num_examples"] == 48
    args = ["eval", "--model", str(teacher), "--eval", str(path), *prompt, "--json"]  # teacher alone, N = 1
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n"] == 1 and report["groupings"] == 1
    assert report["accuracy_mean"] == report["teacher_accuracy"] and report["partner_sensitivity"] is None

    bad = CliRunner().invoke(
        app, ["eval", "--adapter", str(out), "--eval", str(path), "--prompt-style", "chat"]
    )
    assert bad.exit_code == 2 and "mux_config.json" in bad.output
    words = [*prompt[:2], "--verbalizer-words", "negative,unpositivity", "--max-length", "64"]
    bad = CliRunner().invoke(app, ["eval", "--model", str(teacher), "--eval", str(path), *words])
    assert bad.exit_code == 2 and "'unpositivity' is" in bad.output


def test_data_without_a_prompt_is_unchanged(tokenizer):
    data = TaskData(["a", "b"], ["c", "d"], [0, 1], ["x", "y"], "s")
    assert apply_prompt(tokenizer, None, data, 32) is data
    assert prompt_texts(tokenizer, None, ["a"], ["b"], 32) == (["a"], ["b"])


def test_train_with_shared_prefix_fits_pca_after_the_prompt_and_reloads(llama_dir, tmp_path):
    """--shared-prefix: the PCA init sees only the columns after the common chat prefix; the flag is saved."""
    from revmux.train.cache import build_cache, real_token_states
    from revmux.train.trainer import pca_states

    spec = default_prompt("chat", "sst2", ["negative", "positive"])
    view = load_prompted_backbone(llama_dir, spec)
    data = toy_task(rows=64)
    config = TrainConfig(
        min_steps=0, n=2, k=1, epochs=1, batch_groups=8, max_length=64
    )  # PCA, shared prefix: defaults
    result = train(
        view, data, config, tmp_path / "adapter", backbone_path=str(llama_dir), task="sst2",
        cache_root=tmp_path / "cache", progress=False, prompt=spec,
    )  # fmt: skip
    assert result.best_epoch == 1
    loaded = MuxModel.from_pretrained(tmp_path / "adapter", view)
    assert loaded.config.shared_prefix and loaded.config.options["pca_composite"]

    source = build_cache(
        view,
        1,
        apply_prompt(view.tokenizer, spec, data, 64),
        64,
        cache_root=tmp_path / "cache",
        progress=False,
    )
    everything, after = real_token_states(source), pca_states(source, skip_shared_prefix=True)
    state = source.batch(torch.arange(2))[0]
    prefix = int((state.hidden[0] == state.hidden[1]).all(-1).to(torch.int8).cumprod(0).sum())
    assert prefix > 5  # the chat template's system/user header is common to every row
    assert everything.shape[0] - after.shape[0] >= prefix * 60  # the prefix of (nearly) every row is left out
    first = state.hidden[0, 0]
    assert not (after == first).all(-1).any() and (everything == first).all(-1).any()


def test_cli_no_shared_prefix_flag(llama_dir, tmp_path, monkeypatch):
    """shared_prefix is automatic on causal decoders; --no-shared-prefix turns it off."""
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    data = toy_task(rows=32)
    path = tmp_path / "toy.jsonl"
    rows = zip(data.texts, data.labels, strict=True)
    path.write_text("".join(json.dumps({"text": t, "label": data.label_names[y]}) + "\n" for t, y in rows))
    out = tmp_path / "adapter"
    args = ["train", "--teacher", str(llama_dir), "--train", str(path), "--out", str(out), "--prompt-style"]
    args += [
        "chat",
        "--verbalizer-words",
        "negative,positive",
        "--max-length",
        "64",
        "--epochs",
        "1",
        "--min-steps",
        "0",
    ]
    result = CliRunner().invoke(app, [*args, "--batch-groups", "8", "--k", "1", "--no-shared-prefix"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "mux_config.json").read_text())["shared_prefix"] is False


@pytest.mark.parametrize("command", ["finetune", "train", "eval"])
def test_cli_resolves_prompt_and_verbalizer_once_with_one_error(llama_dir, tmp_path, command):
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": "negative"}) + "\n" for t in ["a", "b"]))
    source = {"finetune": ["--model", str(llama_dir), "--train", str(path), "--out", str(tmp_path / "o")]}
    source["train"] = ["--teacher", str(llama_dir), "--train", str(path), "--out", str(tmp_path / "o")]
    source["eval"] = ["--model", str(llama_dir), "--eval", str(path)]
    both = ["--prompt-style", "chat", "--verbalizer", "1,2"]
    result = CliRunner().invoke(app, [command, *source[command], *both])
    assert result.exit_code == 2 and "--prompt-style gives the verbalizer" in " ".join(result.output.split())
    result = CliRunner().invoke(app, [command, *source[command], "--instruction", "Rate it."])
    assert result.exit_code == 2 and "go with --prompt-style" in " ".join(result.output.split())
