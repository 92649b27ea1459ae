"""evaluate: report keys and ranges, N = 1 is the teacher, partners matter at N = 2, seeds, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from typer.testing import CliRunner

from revmux.backbones import load_backbone
from revmux.cli import app
from revmux.data import TaskData, load_task, tokenize
from revmux.errors import ConfigError, DataError
from revmux.evaluate import evaluate, grouping_predictions, prefill_rows
from revmux.model import MuxModel
from revmux.train.cache import build_cache

KEYS = {
    "task",
    "backbone",
    "mux",
    "n",
    "k",
    "groupings",
    "accuracy_mean",
    "accuracy_std",
    "teacher_accuracy",
    "agreement",
    "partner_sensitivity",
    "per_class_accuracy",
    "teacher_per_class_accuracy",
    "bound",
    "trainable_params",
    "num_examples",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny random BERT (vocab 30522) saved with the real MiniLM tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label={0: "negative", 1: "positive"},
        initializer_range=0.2,  # large enough random weights that predictions vary from row to row
    )
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(minilm_path).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def view(tiny_dir):
    return load_backbone(tiny_dir)


@pytest.fixture(scope="module")
def dev() -> TaskData:
    return load_task("sst2", "dev").subset(range(51))  # odd: N = 2 leaves one row over


def _mux(view, tiny_dir, n: int, k: int = 1) -> MuxModel:
    model = MuxModel.from_backbone(view, n=n, k=k, backbone_path=tiny_dir, task="sst2")
    torch.manual_seed(1)
    with torch.no_grad():  # non-trivial adapters, so that partners really matter
        for p in model.mux.parameters():
            p.normal_(0.0, 0.3)
    return model


def test_report_keys_and_ranges(view, tiny_dir, dev):
    report = evaluate(_mux(view, tiny_dir, 2), dev, groupings=3, batch_size=4).to_dict()
    assert set(report) == KEYS
    for key in ("accuracy_mean", "accuracy_std", "teacher_accuracy", "agreement", "partner_sensitivity"):
        assert 0.0 <= report[key] <= 1.0, key
    for per_class in (report["per_class_accuracy"], report["teacher_per_class_accuracy"]):
        assert list(per_class) == ["negative", "positive"]
        assert all(0.0 <= v <= 1.0 for v in per_class.values())
    assert (report["n"], report["k"], report["groupings"], report["num_examples"]) == (2, 1, 3, 51)
    assert report["task"] == "sst2" and report["mux"] == "revmux" and report["backbone"] == str(tiny_dir)
    assert report["bound"] == pytest.approx(3 / (1 + 2 / 2)) and report["trainable_params"] > 0
    json.dumps(report)


def test_n1_is_the_teacher(view, tiny_dir, dev):
    report = evaluate(_mux(view, tiny_dir, 1), dev, groupings=3)
    assert report.accuracy_mean == report.teacher_accuracy
    assert report.agreement == 1.0 and report.partner_sensitivity == 0.0 and report.accuracy_std == 0.0
    assert report.per_class_accuracy == report.teacher_per_class_accuracy and report.trainable_params == 0


def test_teacher_predictions_are_the_plain_model(view, tiny_dir, dev):
    teacher, _ = grouping_predictions(_mux(view, tiny_dir, 2, k=2), dev, groupings=1, batch_size=4)
    with torch.inference_mode():
        plain = view.forward_unsplit(tokenize(view.tokenizer, dev, 128)).argmax(-1)
    assert torch.equal(teacher, plain)


def test_partners_matter_at_n2(view, tiny_dir, dev):
    report = evaluate(_mux(view, tiny_dir, 2), dev, groupings=4, batch_size=4)
    assert report.partner_sensitivity > 0
    assert report.agreement < 1


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_groups_match_muxmodel_on_the_same_permutation(view, tiny_dir, dev, padding_side):
    """Rebuilt layer-k states give what MuxModel.forward gives on the permuted batch (leftover: teacher)."""
    v = copy.copy(view)
    v.tokenizer = copy.deepcopy(view.tokenizer)
    v.tokenizer.padding_side = padding_side
    model = _mux(v, tiny_dir, 2)
    teacher, (pred,) = grouping_predictions(model, dev, groupings=1, batch_size=64, seed=7)
    perm = torch.randperm(len(dev), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = model(tokenize(v.tokenizer, dev, 128), order=perm).argmax(-1)
    assert torch.equal(pred, expected)
    assert pred[perm[-1]] == teacher[perm[-1]]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny random Llama classifier (causal, right padding) saved with the real MiniLM tokenizer."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
        id2label={0: "negative", 1: "positive"}, initializer_range=0.2,
    )  # fmt: skip
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(minilm_path).save_pretrained(directory)
    return directory


def _ragged(rows: int = 41) -> TaskData:
    """Rows of very different lengths (1 to 60 words): short requests get grouped with long ones."""
    words = ["a", "gripping", "film", "dull", "and", "overlong", "story", "with", "great", "acting"]
    texts = [" ".join(words[(i * j + j) % 10] for j in range(1 + (i * 17) % 60)) for i in range(rows)]
    return TaskData(texts, None, [i % 2 for i in range(rows)], ["negative", "positive"], "ragged")


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_eval_predictions_equal_muxmodel_forward_on_the_same_groupings(family, tiny_dir, llama_dir):
    """`revmux eval` feeds the mux what serving feeds it: row for row the predictions of MuxModel.forward
    on the same groupings, although evaluation prefills once in small length-sorted chunks."""
    directory = tiny_dir if family == "bert" else llama_dir
    model = _mux(load_backbone(directory), directory, 2)
    data = _ragged()
    _, preds = grouping_predictions(model, data, groupings=3, batch_size=2, seed=11)
    inputs = tokenize(model.view.tokenizer, data, model.config.max_length)
    assert inputs["attention_mask"].sum(1).min() <= 3 and inputs["attention_mask"].shape[1] >= 60
    for r, pred in enumerate(preds):
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(11 + r))
        with torch.inference_mode():
            expected = model(inputs, order=perm).argmax(-1)
        assert torch.equal(pred, expected), f"grouping {r}"


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_eval_cache_and_serving_prefill_the_same_layer_k_states(family, tiny_dir, llama_dir, tmp_path):
    """Evaluation's prefill, the training cache and one padded prefill agree at every column, padding included."""
    directory = tiny_dir if family == "bert" else llama_dir
    model = _mux(load_backbone(directory), directory, 2, k=2)
    data = _ragged(rows=13)
    inputs = tokenize(model.view.tokenizer, data, model.config.max_length)
    with torch.inference_mode():
        states, probs = prefill_rows(model, data, 4, None, False)
        full = model.prefill(inputs).hidden
        plain = model.view.forward_unsplit(inputs).float().softmax(-1)
    torch.testing.assert_close(states.hidden, full, atol=1e-5, rtol=1e-5)
    assert torch.equal(states.mask, inputs["attention_mask"])
    torch.testing.assert_close(probs, plain, atol=1e-5, rtol=1e-5)  # the teacher's probabilities, per row
    assert torch.allclose(probs.sum(-1), torch.ones(len(data)), atol=1e-5)
    cache = build_cache(model.view, 2, data, model.config.max_length, cache_root=tmp_path, progress=False)
    cached = torch.from_numpy(np.array(cache.states)).float()
    torch.testing.assert_close(cached, full, atol=1e-3, rtol=2e-3)  # stored in fp16
    assert torch.equal(torch.from_numpy(np.array(cache.masks)).long(), inputs["attention_mask"])


def test_seed_determinism_and_grouping_count(view, tiny_dir, dev):
    model = _mux(view, tiny_dir, 3)
    a = evaluate(model, dev, groupings=3, batch_size=2, seed=5).to_dict()
    assert a == evaluate(model, dev, groupings=3, batch_size=2, seed=5).to_dict()
    _, preds = grouping_predictions(model, dev, groupings=5, batch_size=2)
    assert len(preds) == 5 and all(p.shape == (51,) for p in preds)
    one = evaluate(model, dev, groupings=1)
    assert one.groupings == 1 and one.partner_sensitivity is None and one.accuracy_std == 0.0


def test_bad_arguments(view, tiny_dir, dev):
    model = _mux(view, tiny_dir, 2)
    with pytest.raises(ConfigError, match="--groupings"):
        evaluate(model, dev, groupings=0)
    three = TaskData(
        texts=["a", "b", "c"], pairs=None, labels=[0, 1, 2], label_names=["x", "y", "z"], source="s"
    )
    with pytest.raises(DataError, match="3 classes"):
        evaluate(model, three)


def test_cli_eval_json_and_table(view, tiny_dir, tmp_path):
    adapter = _mux(view, tiny_dir, 2).save_pretrained(tmp_path / "adapter")
    glue = tmp_path / "glue" / "SST-2"  # a GLUE-layout --data-dir
    glue.mkdir(parents=True)
    rows = "".join(f"row {i} is {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(9))
    (glue / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    base = ["eval", "--adapter", str(adapter), "--groupings", "2", "--batch-size", "4"]
    args = ["--eval", str(glue / "dev.tsv"), "--text-col", "sentence", "--json"]
    result = CliRunner().invoke(app, [*base, *args])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == KEYS and report["num_examples"] == 9 and report["groupings"] == 2

    result = CliRunner().invoke(app, [*base, "--task", "sst2", "--data-dir", str(tmp_path / "glue")])
    assert result.exit_code == 0, result.output
    assert "partner sensitivity" in result.stdout and "teacher accuracy" in result.stdout

    extra = ["--adversarial-partners", "3", "--adversarial-rows", "5", "--fallback-margin", "0,0.5,1"]
    result = CliRunner().invoke(app, [*base, *args, *extra])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["adversarial"]["rows"] == 5 and report["adversarial"]["placements"] == 6
    assert [f["margin"] for f in report["fallback"]] == [0.0, 0.5, 1.0] and report["fallback"][2][
        "agreement"
    ] == 1.0
    result = CliRunner().invoke(app, [*base, *args[:-1], *extra])  # the table, then one line each
    assert "adversarial partners (3 per row" in result.stdout and "fallback margin 0.50" in result.stdout
    bad = CliRunner().invoke(app, [*base, *args, "--fallback-margin", "0,x"])
    assert bad.exit_code == 2 and "--fallback-margin" in bad.output


def test_cli_eval_errors_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--adapter", str(tmp_path / "missing"), "--task", "sst2"])
    assert result.exit_code == 2
    assert "mux_config.json" in result.output


@pytest.mark.real
def test_real_minilm_end_to_end(minilm_path):
    view = load_backbone(minilm_path, num_labels=2)
    model = MuxModel.from_backbone(view, n=2, k=3, backbone_path=minilm_path, task="sst2", max_length=64)
    report = evaluate(model, load_task("sst2", "dev").subset(range(64)), groupings=2, batch_size=16)
    assert report.num_examples == 64 and report.groupings == 2 and report.bound == pytest.approx(4 / 3)
    for value in (
        report.accuracy_mean,
        report.teacher_accuracy,
        report.agreement,
        report.partner_sensitivity,
    ):
        assert 0.0 <= value <= 1.0


def test_an_eval_config_drives_evaluate_and_its_optional_measurements(view, tiny_dir, dev):
    from revmux.eval_config import EvalConfig
    from revmux.fallback import fallback_sweep

    model = _mux(view, tiny_dir, 2)
    cfg = EvalConfig(groupings=3, batch_size=4, seed=2, fallback_margin=[0.0, 1.0])
    report = evaluate(model, dev, config=cfg, groupings=2)  # a keyword overrides its field
    assert report.groupings == 2 and set(report.to_dict()) == KEYS | {"fallback"}
    assert report.to_dict() == evaluate(model, dev, groupings=2, batch_size=4, seed=2).to_dict() | {
        "fallback": fallback_sweep(model, dev, [0.0, 1.0], groupings=2, batch_size=4, seed=2)
    }


def test_agreement_breakdown_uses_the_groupings_and_teacher_of_evaluation(view, tiny_dir, dev, monkeypatch):
    """benchmarks/agreement_breakdown.py draws the groupings `revmux eval` draws: its overall agreement is
    evaluate's, and its per-slot figures average (with the leftover row, which runs at N = 1) to it."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "agreement_breakdown.py"
    spec = importlib.util.spec_from_file_location("agreement_breakdown", path)
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "agreement_breakdown", script)
    spec.loader.exec_module(script)
    model = _mux(view, tiny_dir, 2)
    got = script.breakdown(model, dev, groupings=3, seed=7)
    report = evaluate(model, dev, groupings=3, seed=7)
    assert got["agreement"] == pytest.approx(report.agreement)
    M, m = len(dev), len(dev) // 2 * 2
    assert (sum(got["per_slot"]) / 2 * m + (M - m)) / M == pytest.approx(report.agreement)
    assert sum(b["rows"] for b in got["by_teacher_margin"]) == M == sum(b["rows"] for b in got["by_length"])


def test_served_groupings_are_the_servers_length_aware_windows(tiny_dir):
    """`--serve-window W`: each arrival window of W requests is grouped as MuxModel groups a served batch
    (by similar length), row for row; the report carries those measures beside the random groupings'."""
    from revmux.evaluate import grouping_outputs, served_predictions

    model = _mux(load_backbone(tiny_dir), tiny_dir, 2)
    data = _ragged()
    states, probs, _ = grouping_outputs(model, data, groupings=1, batch_size=4)
    served = served_predictions(model, states, probs.argmax(-1), 8, groupings=2, batch_size=3, seed=5)
    inputs = tokenize(model.view.tokenizer, data, model.config.max_length)
    for r, pred in enumerate(served):
        arrival = torch.randperm(len(data), generator=torch.Generator().manual_seed(5 + r))
        for window in arrival.split(8):
            batch = {key: v[window] for key, v in inputs.items()}
            with torch.inference_mode():
                expected = model(batch, length_aware=True).argmax(-1)
            assert torch.equal(pred[window], expected), f"grouping {r}"
    report = evaluate(model, data, groupings=2, batch_size=3, seed=5, serve_window=8).to_dict()
    assert set(report) == KEYS | {"served"} and report["served"]["window"] == 8
    labels = torch.tensor(data.labels)
    assert report["served"]["accuracy_mean"] == pytest.approx(
        float(np.mean([(p == labels).float().mean() for p in served]))
    )
    with pytest.raises(ConfigError, match="--serve-window"):
        evaluate(model, data, serve_window=0)
