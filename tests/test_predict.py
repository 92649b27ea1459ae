"""predict: pipeline-shaped output in input order, sorted scores, top_k, empty-text errors, files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from typer.testing import CliRunner

from revmux.backbones import load_backbone
from revmux.cli import app
from revmux.errors import InputError
from revmux.model import MuxModel
from revmux.predict import predict, read_texts

TEXTS = ["a gripping , funny film", "dull", "the plot never quite comes together , sadly", "superb", "meh ."]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny random 3-class BERT (vocab 30522) saved with the real MiniLM tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label={0: "neg", 1: "neu", 2: "pos"},
        initializer_range=0.2,
    )
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(minilm_path).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def view(tiny_dir):
    return load_backbone(tiny_dir)


def _mux(view, tiny_dir, n: int) -> MuxModel:
    model = MuxModel.from_backbone(view, n=n, k=1, backbone_path=tiny_dir)
    with torch.no_grad():
        for p in model.mux.parameters():
            p.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("n", [1, 2])
def test_pipeline_shape_sorted_scores_and_top_k(view, tiny_dir, n):
    model = _mux(view, tiny_dir, n)
    one = predict(model, TEXTS)
    assert len(one) == len(TEXTS) and all(len(row) == 1 for row in one)
    every = predict(model, TEXTS, top_k=None)
    for top, row in zip(one, every, strict=True):
        assert [set(p) for p in row] == [{"label", "score"}] * 3
        assert sorted(p["label"] for p in row) == ["neg", "neu", "pos"]
        scores = [p["score"] for p in row]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert top[0]["label"] == row[0]["label"] and top[0]["score"] == pytest.approx(row[0]["score"])
    assert all(len(row) == 2 for row in predict(model, TEXTS, top_k=2))
    assert all(len(row) == 3 for row in predict(model, TEXTS, top_k=10))


def test_results_follow_input_order(view, tiny_dir):
    """Each text gets the scores MuxModel gives it in that batch, in the order given."""
    model = _mux(view, tiny_dir, 2)
    rows = predict(model, TEXTS, top_k=None)
    enc = view.tokenizer(TEXTS, padding="longest", truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        probs = model(dict(enc)).softmax(-1)
    for row, p in zip(rows, probs, strict=True):
        assert {d["label"]: d["score"] for d in row} == pytest.approx(
            dict(zip(["neg", "neu", "pos"], p.tolist(), strict=True))
        )
    plain = _mux(view, tiny_dir, 1)  # N = 1: a text's answer ignores the others
    for a, b in zip(predict(plain, TEXTS[::-1])[::-1], predict(plain, TEXTS), strict=True):
        assert a[0]["label"] == b[0]["label"] and a[0]["score"] == pytest.approx(b[0]["score"], abs=1e-6)


@pytest.mark.parametrize("bad", ["", "   \t"])
def test_empty_text_names_its_index(view, tiny_dir, bad):
    model = _mux(view, tiny_dir, 2)
    with pytest.raises(InputError, match=r"text 3 is empty; pass non-empty text"):
        predict(model, [*TEXTS[:3], bad])
    with pytest.raises(InputError, match="pair 1 is empty"):
        predict(model, TEXTS[:2], ["fine", bad])
    with pytest.raises(InputError, match="2 texts but 1 pairs"):
        predict(model, TEXTS[:2], ["fine"])
    with pytest.raises(InputError, match="list of strings"):
        predict(model, "one string")  # type: ignore[arg-type]


def test_read_texts(tmp_path):
    plain = tmp_path / "texts.txt"
    plain.write_text("first text\n\nsecond\ttext\n")
    assert read_texts(plain) == (["first text", "second\ttext"], None)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("a\tb\nc\td\n")
    assert read_texts(tsv) == (["a", "c"], ["b", "d"])
    tsv.write_text("a\tb\nc\n")
    with pytest.raises(InputError, match="line 2"):
        read_texts(tsv)
    with pytest.raises(InputError, match="not found"):
        read_texts(tmp_path / "missing.txt")


def test_cli_predict(view, tiny_dir, tmp_path):
    adapter = _mux(view, tiny_dir, 2).save_pretrained(tmp_path / "adapter")
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "--adapter", str(adapter), *TEXTS[:3], "--top-k", "0", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and all(len(r) == 3 for r in rows)

    file = tmp_path / "in.txt"
    file.write_text("\n".join(TEXTS) + "\n")
    result = runner.invoke(app, ["predict", "--adapter", str(adapter), "--file", str(file), "--json"])
    assert result.exit_code == 0, result.output
    assert [len(r) for r in json.loads(result.stdout)] == [1] * len(TEXTS)

    result = runner.invoke(app, ["predict", "--adapter", str(adapter), "fine", " "])
    assert result.exit_code == 2 and "text 1 is empty" in result.output
