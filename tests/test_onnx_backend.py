"""revmux.onnx_backend: the plain classifier, and a MuxModel's layers, on ONNX Runtime against torch.

Tolerances: fp32 logits within 1e-4 of torch (the same graph, other kernels); int8 within 20% of the
largest logit (onnxruntime's dynamic int8 also quantizes the embedding table, coarse at width 32) and the
same class for at least 95% of rows. Needs the onnx extra
(`pip install 'revmux[onnx]'`, installed by `make test`); skipped only when onnxruntime is absent.
"""

from __future__ import annotations

import pytest
import torch

from revmux.bench_baselines import on_view
from revmux.data import tokenize
from revmux.errors import ConfigError
from revmux.model import MuxModel
from revmux.onnx_backend import INPUT_NAMES, ort_classifiers, ort_unavailable, ort_view
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


@pytest.mark.parametrize("n", [2, 4])
def test_mux_on_ort_layers_equals_the_torch_mux(minilm_path, tmp_path, n):
    """The prefill [0, k) and the tail [k, L) on ONNX Runtime under MuxModel's own grouping and adapters, the
    tail over packed composites as in torch: fp32 within 1e-4 of the torch MuxModel, int8 within 20% of the
    largest logit."""
    with one_thread():
        view = toy_view(minilm_path)
        model = MuxModel.from_backbone(view, kind="revmux", n=n, k=1)
        enc = tokenize(view.tokenizer, toy_task(rows=4 * n + 1), 32)  # 4 groups and one leftover at N = 1
        on_ort = {p: on_view(model, ort_view(view, tmp_path / p, 1, p)) for p in ("fp32", "int8")}
        assert not view.model.training and on_ort["fp32"].view.run_layers is not view.run_layers
        assert model.packs_tail and on_ort["fp32"].packs_tail and on_ort["int8"].packs_tail
        assert sorted(path.name for path in (tmp_path / "fp32").iterdir()) == [
            "layers-0-1.onnx",
            "layers-1-3-packed.onnx",
        ]
        packed_calls = []
        ort_packed = on_ort["fp32"].view.run_packed
        on_ort["fp32"].view.run_packed = lambda *a: packed_calls.append(a[1].shape) or ort_packed(*a)
        with torch.inference_mode():
            ref = model(enc, length_aware=True)
            fp32, int8 = (on_ort[p](enc, length_aware=True) for p in ("fp32", "int8"))
            torch.testing.assert_close(view.run_layers(view.embed(enc), 0, 0).hidden, view.embed(enc).hidden)
            # the packed tail graph also runs padded rows (segment ids = the padding mask), as run_layers
            state = view.run_layers(view.embed(enc), 0, 1)
            padded = on_ort["fp32"].view.run_layers(state, 1, 3)
            real = state.attention_mask.bool()
            torch.testing.assert_close(padded.hidden[real], view.run_layers(state, 1, 3).hidden[real])
    assert len(packed_calls) == 1  # one tail pass over every run's composites
    assert ref.shape == (4 * n + 1, 2) and ref.abs().max() > 0.5
    torch.testing.assert_close(fp32, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(int8, ref, atol=0.2 * float(ref.abs().max()), rtol=0.0)


def test_eager_attention_packs_on_ort_through_an_additive_mask(minilm_path, tmp_path):
    """Eager attention (MPNet's only kind) takes the block-diagonal mask as an additive one, inside the graph
    too: the mux's packed tail on ONNX Runtime equals torch's within 1e-4."""
    with one_thread():
        view = toy_view(minilm_path)
        view.base.config._attn_implementation = "eager"
        try:
            model = MuxModel.from_backbone(view, kind="revmux", n=2, k=1)
            ort = on_view(model, ort_view(view, tmp_path, 1, "fp32"))
            assert model.packs_tail and ort.packs_tail
            assert sorted(path.name for path in tmp_path.iterdir()) == [
                "layers-0-1.onnx",
                "layers-1-3-packed.onnx",
            ]
            enc = tokenize(view.tokenizer, toy_task(rows=9), 32)
            with torch.inference_mode():
                ref, got = model(enc, length_aware=True), ort(enc, length_aware=True)
        finally:
            view.base.config._attn_implementation = "sdpa"
    assert ref.abs().max() > 0.5
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_a_view_that_cannot_pack_runs_its_ort_tail_on_padded_rows(minilm_path, tmp_path):
    with one_thread():
        view = toy_view(minilm_path)
        view.layers_pack = lambda: False  # as a family whose layers see positions of their own
        assert not view.packs_rows
        ort = ort_view(view, tmp_path, 1, "fp32")
        model = on_view(MuxModel.from_backbone(view, kind="revmux", n=2, k=1), ort)
        assert not ort.packs_rows and not model.packs_tail
        assert sorted(path.name for path in tmp_path.iterdir()) == ["layers-0-1.onnx", "layers-1-3.onnx"]
    with pytest.raises(
        ConfigError, match="--backend onnx cannot run here: precision must be one of fp32, int8"
    ):
        ort_view(view, tmp_path, 1, "int4")


def test_bench_backend_onnx_runs_the_mux_on_ort_and_compares_it_with_ort(minilm_path):
    from revmux.bench import run_bench

    with one_thread():
        view = toy_view(minilm_path)
        model = MuxModel.from_backbone(view, kind="revmux", n=2, k=1)
        texts = toy_task(rows=16).texts
        kw = {"batch_sizes": (8,), "repeats": 1, "warmup": 0, "max_length": 32, "pipeline": False}
        d = run_bench(model, texts, baselines="none", backend="onnx", quantize="int8", **kw).to_dict()
        with pytest.raises(ConfigError, match="--backend onnx runs fp32 or int8"):
            run_bench(model, texts, backend="onnx", quantize="bf16", **kw)
        with pytest.raises(ConfigError, match="--backend must be one of torch, onnx"):
            run_bench(model, texts, backend="tvm", **kw)
    assert (d["backend"], d["quantize"], d["efficiency_baseline"]) == ("onnx", "int8", "ort_int8_sorted")
    assert d["baselines"] == ["ort_int8_sorted"]
    assert d["efficiency"] == pytest.approx(d["ort_int8_sorted_ms"] / d["mux_ms"] / d["bound"])
