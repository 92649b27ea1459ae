"""revmux.train.cache: keyed reuse, crash safety, trimming for both padding sides, and teacher == unsplit model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from revmux.data import tokenize
from revmux.errors import ConfigError
from revmux.train.cache import META_NAME, LivePrefill, build_cache, cache_key, real_token_states
from tests.train import one_thread, toy_task, toy_view

K, MAX_LENGTH = 1, 32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def view(minilm_path, _one_thread):
    return toy_view(minilm_path)


@pytest.fixture(scope="module")
def data():
    return toy_task(rows=60)


def _count_layer_calls(monkeypatch, view) -> list[int]:
    calls = [0]
    original = view.run_layers

    def counted(state, start, stop):
        calls[0] += 1
        return original(state, start, stop)

    monkeypatch.setattr(view, "run_layers", counted)
    return calls


def test_second_call_loads_identical_arrays_without_recompute(view, data, tmp_path, monkeypatch):
    first = build_cache(view, K, data, MAX_LENGTH, cache_root=tmp_path, batch_size=16, progress=False)
    assert not first.hit and first.build_seconds > 0 and len(first) == len(data)
    calls = _count_layer_calls(monkeypatch, view)
    second = build_cache(view, K, data, MAX_LENGTH, cache_root=tmp_path, batch_size=16, progress=False)
    assert calls[0] == 0 and second.hit and second.directory == first.directory
    for name in ("states", "masks", "teacher_reps", "teacher_logits", "labels"):
        np.testing.assert_array_equal(np.asarray(getattr(first, name)), np.asarray(getattr(second, name)))
    assert second.states.dtype == np.float16 and second.states.shape == (len(data), first.meta["T"], 32)
    assert second.teacher_reps.dtype == np.float16 and second.teacher_logits.dtype == np.float32
    assert second.labels.tolist() == data.labels


def test_key_depends_on_k_data_length_backbone_and_padding_side(view, data):
    base = cache_key(view, K, data, MAX_LENGTH)[0]
    assert cache_key(view, K, data, MAX_LENGTH)[0] == base
    assert cache_key(view, 2, data, MAX_LENGTH)[0] != base
    assert cache_key(view, K, data.subset(range(10)), MAX_LENGTH)[0] != base
    assert cache_key(view, K, data, 16)[0] != base
    other = copy.copy(view)
    other.tokenizer = copy.deepcopy(view.tokenizer)
    other.tokenizer.padding_side = "left"
    assert cache_key(other, K, data, MAX_LENGTH)[0] != base
    assert cache_key(view, K, data, MAX_LENGTH, backbone_sha="0" * 64)[0] != base


def test_half_written_cache_is_never_used(view, data, tmp_path, monkeypatch):
    calls = _count_layer_calls(monkeypatch, view)
    original = view.run_layers

    def crash(state, start, stop):
        if calls[0] > 3:
            raise KeyboardInterrupt("simulated crash mid-build")
        return original(state, start, stop)

    monkeypatch.setattr(view, "run_layers", crash)
    with pytest.raises(KeyboardInterrupt):
        build_cache(view, K, data, MAX_LENGTH, cache_root=tmp_path, batch_size=8, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing under the key, no temporary directory left
    monkeypatch.undo()
    # a directory under the key without its meta.json (e.g. copied half-way) is rebuilt, not read
    key = cache_key(view, K, data, MAX_LENGTH)[0]
    (tmp_path / key).mkdir()
    (tmp_path / key / "states.f16").write_bytes(b"\x00" * 10)
    cache = build_cache(view, K, data, MAX_LENGTH, cache_root=tmp_path, progress=False)
    assert not cache.hit and (tmp_path / key / META_NAME).is_file()
    assert (tmp_path / key / "states.f16").stat().st_size == cache.states.nbytes


def test_teacher_logits_equal_the_unsplit_model(view, data, tmp_path):
    cache = build_cache(view, K, data, MAX_LENGTH, cache_root=tmp_path, batch_size=16, progress=False)
    enc = tokenize(view.tokenizer, data, MAX_LENGTH)
    with torch.inference_mode():
        unsplit = view.forward_unsplit(enc)
        final = view.run_layers(view.embed(enc), 0, view.num_layers)
    torch.testing.assert_close(torch.tensor(np.asarray(cache.teacher_logits)), unsplit, atol=1e-5, rtol=1e-5)
    reps = torch.tensor(np.asarray(cache.teacher_reps)).float()
    torch.testing.assert_close(reps, view.gather(final), atol=2e-3, rtol=2e-3)  # fp16 storage


def test_batch_trims_right_padding_and_matches_a_live_prefill(view, data, tmp_path):
    cache = build_cache(view, K, data, MAX_LENGTH, cache_root=tmp_path, batch_size=16, progress=False)
    lengths = np.asarray(cache.masks).sum(1)
    rows = torch.from_numpy(np.argsort(lengths)[:5].copy())  # the shortest rows: much padding trimmed
    state, reps, logits, labels = cache.batch(rows)
    live_state, live_reps, live_logits, live_labels = LivePrefill(view, K, data, MAX_LENGTH).batch(rows)
    t = int(lengths[rows.numpy()].max())
    assert t < cache.meta["T"] and state.hidden.shape == (5, t, 32) and state.hidden.dtype == torch.float32
    assert torch.equal(state.attention_mask, live_state.attention_mask)
    assert state.attention_mask[:, 0].all()  # right padding keeps the first T' columns
    # padding positions are stored as the backbone computes them, so the whole state matches
    torch.testing.assert_close(state.hidden, live_state.hidden, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(logits, live_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reps, live_reps, atol=2e-3, rtol=2e-3)
    assert labels.tolist() == live_labels.tolist() == [data.labels[i] for i in rows.tolist()]


def test_batch_trims_left_padding_from_the_right_end(view, data, tmp_path):
    left = copy.copy(view)
    left.tokenizer = copy.deepcopy(view.tokenizer)
    left.tokenizer.padding_side = "left"
    cache = build_cache(left, K, data, MAX_LENGTH, cache_root=tmp_path, batch_size=16, progress=False)
    masks = np.asarray(cache.masks)
    assert masks[:, -1].all() and not masks[:, 0].all()  # stored left-padded
    rows = torch.tensor([3, 0, 7])
    state, *_ = cache.batch(rows)
    T, t = masks.shape[1], int(masks[rows.numpy()].sum(1).max())
    assert state.hidden.shape[1] == t
    np.testing.assert_array_equal(state.attention_mask.numpy(), masks[rows.numpy(), T - t :])
    np.testing.assert_array_equal(
        state.hidden.numpy(), np.asarray(cache.states[rows.numpy(), T - t :], dtype=np.float32)
    )
    live_mask = LivePrefill(left, K, data, MAX_LENGTH).batch(rows)[0].attention_mask
    assert torch.equal(state.attention_mask, live_mask)


def test_real_token_states_and_missing_tokenizer(view, data, tmp_path):
    cache = build_cache(view, K, data, MAX_LENGTH, cache_root=tmp_path, progress=False)
    sample = real_token_states(cache, max_tokens=100, chunk=7)
    assert sample.shape == (100, 32) and torch.isfinite(sample).all()
    bare = copy.copy(view)
    bare.tokenizer = None
    with pytest.raises(ConfigError, match="no tokenizer"):
        build_cache(bare, K, data, MAX_LENGTH, cache_root=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="--k must be in"):
        build_cache(view, 3, data, MAX_LENGTH, cache_root=tmp_path, progress=False)


def test_teacher_outputs_are_the_one_teacher_pass(view, data):
    """teacher_outputs, MuxModel.teacher_from_prefill and forward_unsplit are one computation (BackboneView.complete)."""
    from revmux.model import MuxModel

    rows = torch.arange(0, 12)
    live = LivePrefill(view, K, data, MAX_LENGTH)
    state, reps, logits, _ = live.batch(rows)
    model = MuxModel.from_backbone(view, n=2, k=K)
    with torch.inference_mode():
        model_reps, model_logits = model.teacher_from_prefill(state)
        plain = view.forward_unsplit(tokenize(view.tokenizer, data.subset(rows.tolist()), MAX_LENGTH))
    assert torch.equal(reps, model_reps.float()) and torch.equal(logits, model_logits.float())
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
