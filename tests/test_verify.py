"""`revmux verify` on the real MiniLM and on a tiny model, through the CLI and the library."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from revmux.cli import app
from revmux.verify import verify_backbone
from tests.tiny import tiny_bert

runner = CliRunner()


@pytest.mark.real
def test_verify_minilm_cli_json(minilm_path):
    result = runner.invoke(app, ["verify", "--model", str(minilm_path), "--n", "2,3,4,8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["max_abs_error_split"] <= 1e-5
    assert report["max_abs_error_inverse"] <= 1e-5
    assert report["num_layers"] == 6 and report["hidden_size"] == 384
    assert sorted(int(k) for k in report["split_errors"]) == list(range(7))
    assert sorted(int(n) for n in report["inverse_errors"]) == [2, 3, 4, 8]


def test_verify_detects_a_broken_split(monkeypatch):
    """A view that re-applies the embeddings when resuming (the reference code's BERT defect) fails."""
    view = tiny_bert()
    original = view.run_layers

    def resumes_with_embeddings(state, start, stop):
        if start > 0:
            T = state.hidden.shape[1]
            state = state.with_hidden(
                state.hidden + view.model.bert.embeddings.position_embeddings.weight[:T]
            )
        return original(state, start, stop)

    view.tokenizer = _ToyTokenizer()
    monkeypatch.setattr(view, "run_layers", resumes_with_embeddings)
    report = verify_backbone(view, ns=(2,))
    assert not report.ok
    assert report.split_errors[0] <= 1e-5 and report.max_abs_error_split > 1e-5


def test_verify_cli_bad_model_path_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["verify", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "cannot load a model config" in result.output


class _ToyTokenizer:
    def __call__(self, texts, **_):
        lengths = [min(3 + len(t) // 8, 20) for t in texts]
        T = max(lengths)
        ids = torch.zeros(len(texts), T, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, n in enumerate(lengths):
            ids[i, :n] = torch.arange(1, n + 1)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask}
