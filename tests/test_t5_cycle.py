"""T5 end to end on a tiny random model: finetune (verbalizer) -> train -> save -> load -> eval -> bench.

No T5 weights can be installed here, so a 3-layer T5ForConditionalGeneration of width 32 over MiniLM's
WordPiece vocabulary (30522 tokens, the tokenizer saved beside it) is first fine-tuned to answer the toy
task's label word at the decoder's first position (the teacher, read through its LM head restricted to
the verbalizer tokens), then its RevMUX adapters are trained on the frozen teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from typer.testing import CliRunner

from revmux.backbones import load_backbone
from revmux.backbones.t5 import T5View
from revmux.bench import run_bench
from revmux.cli import app
from revmux.errors import ConfigError, RevmuxError
from revmux.evaluate import evaluate
from revmux.model import MuxModel
from revmux.train import TrainConfig, train
from revmux.train.finetune import LOG_NAME, finetune
from tests.train import one_thread, toy_task

WORDS = ["negative", "positive"]  # the toy task's label names, in label order


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, minilm_path) -> Path:
    """A random 3-encoder / 1-decoder-layer T5 (d=32, vocab 30522) saved with the MiniLM tokenizer."""
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=30522,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=3,
        num_decoder_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,  # [PAD] of the WordPiece vocabulary
        pad_token_id=0,
        eos_token_id=102,  # [SEP]
    )
    path = tmp_path_factory.mktemp("tiny_t5")
    transformers.T5ForConditionalGeneration(config).eval().save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(str(minilm_path)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def verbalizer(t5_dir) -> list[int]:
    tok = transformers.AutoTokenizer.from_pretrained(str(t5_dir))
    ids = tok.convert_tokens_to_ids(WORDS)
    assert tok.unk_token_id not in ids
    return ids


@pytest.fixture(scope="module")
def teacher(t5_dir, verbalizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("t5_teacher")
    result = finetune(
        t5_dir, toy_task(rows=200), out, epochs=6, lr=3e-3, batch_size=16, max_length=32,
        verbalizer_ids=verbalizer, progress=False,
    )  # fmt: skip
    return result, out


@pytest.fixture(scope="module")
def trained(teacher, verbalizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("t5_adapter")
    view = load_backbone(teacher[1], verbalizer_ids=verbalizer)
    config = TrainConfig(min_steps=0, n=2, k=1, epochs=4, batch_groups=8, max_length=32, lr=3e-3)
    result = train(
        view, toy_task(rows=200), config, out, backbone_path=str(teacher[1]), task="toy",
        cache_root=out / "cache", progress=False,
    )  # fmt: skip
    return result, out


def test_verbalizer_finetune_teaches_the_lm_head(teacher, verbalizer):
    result, out = teacher
    assert sum(result.losses[-5:]) / 5 < 0.5 * sum(result.losses[:5]) / 5, result.losses
    assert result.holdout_accuracy >= 0.8
    log = json.loads((out / LOG_NAME).read_text())
    assert log["config"]["verbalizer_ids"] == verbalizer
    view = load_backbone(out, verbalizer_ids=verbalizer)  # a standard T5ForConditionalGeneration directory
    assert isinstance(view, T5View) and view.label_names == WORDS


def test_train_save_load_eval_bench_cycle(trained, teacher, verbalizer):
    result, out = trained
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert result.best_holdout_accuracy >= 0.8

    mux = MuxModel.from_pretrained(out)  # the backbone named in mux_config.json, its hash checked
    assert isinstance(mux.view, T5View) and mux.config.verbalizer_ids == verbalizer
    again = MuxModel.from_pretrained(out, load_backbone(teacher[1], verbalizer_ids=verbalizer))
    dev = toy_task(rows=64, seed=1)
    enc = mux.view.tokenizer(dev.texts[:8], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.inference_mode():
        torch.testing.assert_close(mux(batch), again(batch), atol=0, rtol=0)

    report = evaluate(mux, dev, groupings=3, batch_size=8)
    assert report.teacher_accuracy >= 0.8
    assert report.accuracy_mean >= 0.8 and report.agreement >= 0.8
    assert report.partner_sensitivity is not None

    bench = run_bench(mux, dev.texts, batch_sizes=[4], repeats=1, warmup=0, max_length=32).to_dict()
    assert bench["model_type"] == "t5" and bench["pipeline_ms"] is None
    assert bench["plain_ms"] > 0 and bench["mux_ms"] > 0
    assert any("pipeline skipped" in note for note in bench["notes"])


def test_cli_eval_and_bench_on_the_t5_adapter(trained, tmp_path):
    _, out = trained
    dev = toy_task(rows=32, seed=2)
    path = tmp_path / "dev.jsonl"
    rows = zip(dev.texts, dev.labels, strict=True)
    path.write_text("".join(json.dumps({"text": t, "label": WORDS[y]}) + "\n" for t, y in rows))
    result = CliRunner().invoke(
        app, ["eval", "--adapter", str(out), "--eval", str(path), "--groupings", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["num_examples"] == 32
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(dev.texts) + "\n")
    args = ["bench", "--adapter", str(out), "--texts", str(texts), "--batch-sizes", "4", "--json"]
    result = CliRunner().invoke(app, [*args, "--repeats", "1", "--warmup", "0", "--max-length", "32"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["model_type"] == "t5"


def test_t5_finetune_without_verbalizer_is_refused(t5_dir, tmp_path):
    with pytest.raises(RevmuxError, match="--verbalizer"):
        finetune(t5_dir, toy_task(rows=32), tmp_path / "t", progress=False)
    with pytest.raises(ConfigError, match="one token id per class"):
        finetune(t5_dir, toy_task(rows=32), tmp_path / "t", verbalizer_ids=[5], progress=False)
