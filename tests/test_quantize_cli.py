"""`revmux eval --quantize` and `revmux predict --quantize` on a tiny adapter: the quantized teacher and
multiplexed rows, and clear errors. Tolerance: on the toy teacher, int8 accuracies stay within 5 points
of fp32 (48 rows: 2 rows) and predictions agree on most texts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from revmux.backbones.quantize import SMOOTH_ALPHA
from revmux.cli import app
from revmux.model import MuxModel
from tests.train import GOOD, one_thread, toy_task, toy_view

runner = CliRunner()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("quantize_cli")
    view = toy_view(minilm_path)
    view.model.save_pretrained(root / "teacher")
    view.tokenizer.save_pretrained(root / "teacher")
    model = MuxModel.from_backbone(view, kind="revmux", n=2, k=1, backbone_path=str(root / "teacher"))
    model.save_pretrained(root / "adapter")
    data = toy_task(rows=48)
    rows = "".join(f"{t}\t{y}\n" for t, y in zip(data.texts, data.labels, strict=True))
    (root / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    return root


def _eval(root, *extra: str) -> dict:
    args = ["eval", "--adapter", str(root / "adapter"), "--eval", str(root / "dev.tsv"), "--text-col"]
    args += ["sentence", "--groupings", "2", "--batch-size", "8", "--max-length", "32", "--json", *extra]
    with one_thread():
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_eval_quantize_reports_the_quantized_teacher_and_mux_beside_fp32(adapter):
    fp32, int8 = _eval(adapter), _eval(adapter, "--quantize", "int8")
    assert "quantize" not in fp32 and int8["quantize"] == "int8"
    assert int8["int8_smooth"] == SMOOTH_ALPHA  # the loaded backbone has a tokenizer: smoothed
    assert fp32["teacher_accuracy"] > 0.8  # a real teacher, so the bound below means something
    assert abs(int8["teacher_accuracy"] - fp32["teacher_accuracy"]) <= 0.05
    assert abs(int8["accuracy_mean"] - fp32["accuracy_mean"]) <= 0.05
    bf16 = _eval(adapter, "--quantize", "bf16")
    assert bf16["quantize"] == "bf16" and abs(bf16["teacher_accuracy"] - fp32["teacher_accuracy"]) <= 0.05


def test_predict_quantize_and_bad_values(adapter):
    texts = [f"the film was {w}" for w in GOOD]
    args = ["predict", "--adapter", str(adapter / "adapter"), *texts, "--json"]
    with one_thread():
        fp32 = json.loads(runner.invoke(app, args).stdout)
        result = runner.invoke(app, [*args, "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    int8 = json.loads(result.stdout)
    assert len(int8) == len(texts) and [r[0]["label"] for r in int8] == [r[0]["label"] for r in fp32]
    for command in (args, ["eval", "--adapter", str(adapter / "adapter")]):
        bad = runner.invoke(app, [*command, "--quantize", "int4"])
        assert bad.exit_code == 2 and "--quantize must be one of none, int8, bf16" in " ".join(
            bad.output.split()
        )


def test_demo_quantize_adds_the_quantized_rows_and_the_honest_speed(tmp_path, minilm_path):
    from revmux.cli.tables import demo_table
    from revmux.demo import DemoSettings, run_demo
    from tests.train.test_finetune import _save_tiny

    model_dir = _save_tiny(tmp_path / "tiny", minilm_path)
    settings = DemoSettings(
        model=str(model_dir), teacher_epochs=1, adapter_epochs=1, bench_repeats=1, groupings=1,
        bench_batch_size=8, train_rows=48, dev_rows=16, quantize="int8", bench_baselines="none",
    )  # fmt: skip
    with one_thread():
        result = run_demo(tmp_path / "demo", settings, progress=False)
    assert result["quantize"] == "int8" and result["best_plain"] in (
        "plain",
        "plain_sorted",
        "plain_int8_sorted",
    )
    assert result["speedup_vs_best_plain"] == pytest.approx(result["mux_rps"] / result["best_plain_rps"])
    for key in ("quantized_teacher_accuracy", "quantized_accuracy_mean"):
        assert 0.0 <= result[key] <= 1.0, key
    assert (
        abs(result["quantized_teacher_accuracy"] - result["teacher_accuracy"]) <= 0.25
    )  # 16 random-ish rows
    rows = [str(c) for c in demo_table(result, 2, 2).columns[0]._cells]
    assert "multiplexed accuracy, int8 backbone" in rows and any(
        r.startswith("speedup vs best plain") for r in rows
    )
