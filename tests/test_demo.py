"""`revmux demo` end to end at toy size: every stage runs and the summary has its keys."""

from __future__ import annotations

import json

import pytest

from revmux.demo import DemoSettings, run_demo
from revmux.errors import ConfigError
from revmux.model import MuxModel
from tests.train.test_finetune import _save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_settings(tmp_path, minilm_path, **overrides) -> DemoSettings:
    """Demo settings on a tiny random BERT, one epoch each, one bench repeat."""
    model_dir = _save_tiny(tmp_path / "tiny", minilm_path)
    base = {"teacher_epochs": 1, "adapter_epochs": 1, "bench_repeats": 1}
    return DemoSettings(model=str(model_dir), **(base | overrides))


def test_demo_runs_every_stage_and_leaves_servable_artifacts(tmp_path, minilm_path):
    settings = _tiny_settings(
        tmp_path, minilm_path, groupings=2, bench_batch_size=8, train_rows=96, dev_rows=24
    )
    result = run_demo(tmp_path / "demo", settings, progress=False)
    for key in ("teacher_accuracy", "accuracy_mean", "agreement", "partner_sensitivity"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["speedup"] > 0 and result["bound"] == pytest.approx(3 / (2 + 1 / 2))
    assert json.loads((tmp_path / "demo" / "demo_result.json").read_text()) == result
    model = MuxModel.from_pretrained(result["adapter_dir"])  # finds its teacher by the path it recorded
    assert model.n == 2 and model.k == 2 and model.config.task == "sst2"


def test_demo_reruns_into_its_own_directory_and_refuses_foreign_ones(tmp_path, minilm_path):
    settings = _tiny_settings(
        tmp_path, minilm_path, groupings=1, bench_batch_size=4, train_rows=48, dev_rows=8
    )
    first = run_demo(tmp_path / "demo", settings, progress=False)
    second = run_demo(tmp_path / "demo", settings, progress=False)  # replaces its own outputs
    assert second["adapter_dir"] == first["adapter_dir"]
    assert MuxModel.from_pretrained(second["adapter_dir"]).n == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"notes\.txt.*new or empty directory"):
        run_demo(tmp_path / "mine", settings, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        run_demo(tmp_path / "file", settings, progress=False)
