"""finetune: the loss falls, the output is a standard HF directory with the label names, errors name the flag."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import transformers
from typer.testing import CliRunner

from revmux.cli import app
from revmux.data import TaskData
from revmux.errors import ConfigError, DataError
from revmux.train.finetune import LOG_NAME, finetune

GOOD = ["great", "wonderful", "superb", "delightful", "excellent", "moving"]
BAD = ["awful", "boring", "dreadful", "terrible", "tedious", "clumsy"]


def _words_task(rows: int = 128, seed: int = 0) -> TaskData:
    """A learnable task: a row is 'pos' iff its words come from GOOD."""
    rng = random.Random(seed)
    labels = [i % 2 for i in range(rows)]
    texts = [" ".join(rng.choices(GOOD if y else BAD, k=rng.randint(2, 6))) for y in labels]
    return TaskData(texts=texts, pairs=None, labels=labels, label_names=["neg", "pos"], source="words")


def _save_tiny(directory: Path, minilm_path: Path, *, decoder: bool = False) -> Path:
    """A tiny random model (vocab 30522) and the real MiniLM tokenizer, saved together as a model directory."""
    torch.manual_seed(0)
    common = dict(vocab_size=30522, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    if decoder:
        config = transformers.LlamaConfig(
            **common,
            num_hidden_layers=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=None,
        )
    else:
        config = transformers.BertConfig(**common, num_hidden_layers=3, max_position_embeddings=128)
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    if decoder:
        tok.pad_token = None  # decoders often ship without one
    tok.save_pretrained(directory)
    return directory


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, minilm_path) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny_bert"), minilm_path)


def test_loss_falls_and_the_output_is_a_standard_hf_directory(tiny_dir, tmp_path):
    out = tmp_path / "teacher"
    result = finetune(tiny_dir, _words_task(), out, epochs=4, lr=2e-3, batch_size=16, progress=False)
    assert result.steps == len(result.losses) > 8
    assert sum(result.losses[-4:]) / 4 < sum(result.losses[:4]) / 4
    assert 0.0 <= result.holdout_accuracy <= 1.0
    assert (out / "model.safetensors").is_file()

    log = json.loads((out / LOG_NAME).read_text())
    assert log["holdout_accuracy"] == result.holdout_accuracy and log["steps"] == result.steps
    assert log["config"]["label_names"] == ["neg", "pos"] and log["config"]["epochs"] == 4

    model = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    clf = transformers.pipeline("text-classification", model=str(out))
    preds = clf(["great wonderful superb", "awful boring dreadful"])
    assert {p["label"] for p in preds} <= {"neg", "pos"}


def test_max_train_rows_limits_the_steps(tiny_dir, tmp_path):
    result = finetune(
        tiny_dir, _words_task(), tmp_path / "t", epochs=2, batch_size=8, max_train_rows=20, progress=False
    )
    assert result.steps == 2 * math.ceil(20 / 8)


def test_decoder_without_pad_token_gets_one(minilm_path, tmp_path):
    src = _save_tiny(tmp_path / "llama", minilm_path, decoder=True)
    out = tmp_path / "teacher"
    finetune(src, _words_task(32), out, batch_size=8, progress=False)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.pad_token is not None and model.config.pad_token_id == tok.pad_token_id


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [({"epochs": 0}, "--epochs"), ({"lr": 0.0}, "--lr"), ({"batch_size": 0}, "--batch-size")],
)
def test_bad_arguments_name_the_flag(tiny_dir, tmp_path, kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        finetune(tiny_dir, _words_task(), tmp_path / "t", progress=False, **kwargs)


def test_one_class_is_rejected(tiny_dir, tmp_path):
    data = TaskData(texts=["a", "b", "c"], pairs=None, labels=[0, 0, 0], label_names=["only"], source="one")
    with pytest.raises(DataError, match="at least 2"):
        finetune(tiny_dir, data, tmp_path / "t", progress=False)


def test_cli_finetune_on_the_bundled_sample(tiny_dir, tmp_path):
    out = tmp_path / "teacher"
    args = ["finetune", "--model", str(tiny_dir), "--task", "sst2", "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--max-train-rows", "32", "--batch-size", "16", "--max-length", "32"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / LOG_NAME).read_text())["config"]["label_names"] == ["negative", "positive"]


def test_cli_finetune_errors_exit_2(tiny_dir, tmp_path):
    result = CliRunner().invoke(app, ["finetune", "--model", str(tiny_dir), "--out", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert "--task" in result.output
    missing = str(tmp_path / "no-such-model")
    result = CliRunner().invoke(
        app, ["finetune", "--model", missing, "--task", "sst2", "--out", str(tmp_path / "t")]
    )
    assert result.exit_code == 2
    assert "cannot load a model to fine-tune" in result.output
