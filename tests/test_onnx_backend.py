"""revmux.onnx_backend: the plain classifier on ONNX Runtime against torch, on the toy teacher.

Tolerances: fp32 logits within 1e-4 of torch (the same graph, other kernels); int8 within 20% of the
largest logit (onnxruntime's dynamic int8 also quantizes the embedding table, coarse at width 32) and the
same class for at least 95% of rows. Needs the onnx extra
(`pip install 'revmux[onnx]'`, installed by `make test`); skipped only when onnxruntime is absent.
"""

from __future__ import annotations

import pytest
import torch

from revmux.data import tokenize
from revmux.onnx_backend import INPUT_NAMES, ort_classifiers, ort_unavailable
from tests.train import one_thread, toy_task, toy_view

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install 'revmux[onnx]'")
pytest.importorskip("onnx", reason="onnx is not installed: pip install 'revmux[onnx]'")


def test_ort_fp32_equals_torch_and_int8_stays_close(minilm_path, tmp_path):
    with one_thread():
        view = toy_view(minilm_path)
        assert ort_unavailable(view) is None
        data = toy_task(rows=48)
        enc = tokenize(view.tokenizer, data, 32)  # padded to its longest, unlike the two-row trace
        names = tuple(name for name in INPUT_NAMES if name in enc)
        sessions = ort_classifiers(view, tmp_path, names, threads=1)
        assert not view.model.training  # the export leaves the shared model in eval mode
        with torch.inference_mode():
            ref = view.forward_unsplit(enc)
        fp32 = torch.from_numpy(sessions["fp32"](enc))
        int8 = torch.from_numpy(sessions["int8"](enc))
        small = {key: value[:3, :5] for key, value in enc.items()}  # another B and T: dynamic axes
        with torch.inference_mode():
            ref_small = view.forward_unsplit(small)
    assert fp32.shape == ref.shape == (48, 2) and ref.abs().max() > 0.5
    torch.testing.assert_close(fp32, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(sessions["fp32"](small)), ref_small, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(int8, ref, atol=0.2 * float(ref.abs().max()), rtol=0.0)
    assert (int8.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.95
