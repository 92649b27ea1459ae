"""Data selection flags shared by finetune/train/eval: Hugging Face names fail clearly offline."""

from __future__ import annotations

import builtins

from typer.testing import CliRunner

from revmux.cli import app


def test_hf_dataset_without_datasets_library_says_to_pass_files(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    result = CliRunner().invoke(
        app, ["finetune", "--model", str(tmp_path), "--task", "hf:glue:sst2", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "glue:sst2" in result.output and "--train/--eval" in result.output
