"""Shared prompt prefix on causal decoders: the columns every request of a group holds alike enter the
tail as is, so the tail computes them exactly as for each request alone; only later columns are muxed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from revmux.errors import ConfigError
from revmux.model import MuxModel
from revmux.prompting import shared_prefix_mask
from tests.backbones.test_decoder import build
from tests.tiny import tiny_bert

PREFIX = 5


@settings(max_examples=60, deadline=None)
@given(
    g=st.integers(1, 3),
    n=st.integers(2, 4),
    t=st.integers(1, 10),
    data=st.data(),
)
def test_mask_is_the_common_leading_run_before_the_first_read(g: int, n: int, t: int, data) -> None:
    """Property: shared columns = columns before min(first differing column, first padded column, stop)."""
    h = torch.randn(g, 1, t, 6).repeat(1, n, 1, 1)
    masks = torch.ones(g, n, t, dtype=torch.long)
    want = []
    for i in range(g):
        differ = data.draw(st.integers(0, t), label="first differing column")
        pad = data.draw(st.integers(1, t), label="shortest length")
        stop = data.draw(st.integers(0, t), label="stop")
        if differ < t:
            who = data.draw(st.integers(1, n - 1), label="which request differs")
            h[i, who, differ] += 1.0  # far above rtol * the column's largest entry
        masks[i, 0, pad:] = 0
        want.append((differ, pad, stop))
    stops = torch.tensor([w[2] for w in want])
    got = shared_prefix_mask(h, masks, stops)
    for i, (differ, pad, stop) in enumerate(want):
        expected = torch.arange(t) < min(differ, pad, stop)
        assert torch.equal(got[i], expected), (i, differ, pad, stop)


def test_identical_requests_keep_their_read_column_multiplexed() -> None:
    h = torch.randn(1, 1, 6, 4).repeat(1, 2, 1, 1)
    got = shared_prefix_mask(h, torch.ones(1, 2, 6, dtype=torch.long), torch.tensor([5]))
    assert got[0, :5].all() and not got[0, 5]


def _prefix_batch() -> dict[str, torch.Tensor]:
    """4 right-padded requests: the same first PREFIX tokens, then different tails of lengths 3, 6, 2, 4."""
    g = torch.Generator().manual_seed(3)
    common = torch.randint(3, 128, (PREFIX,), generator=g)
    tails = [torch.randint(3, 128, (m,), generator=g) for m in (3, 6, 2, 4)]
    T = PREFIX + max(len(x) for x in tails)
    ids = torch.zeros(4, T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, tail in enumerate(tails):
        seq = torch.cat([common, tail])
        ids[i, : len(seq)], mask[i, : len(seq)] = seq, 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("k", [0, 1, 2])
def test_tail_computes_the_prefix_exactly_and_muxes_the_rest(k: int) -> None:
    view = build("llama", "lm")
    inputs = _prefix_batch()
    unsplit = view.run_layers(view.embed(inputs), 0, view.num_layers).hidden  # (4, T, d)
    outs = {}
    for flag in (True, False):
        torch.manual_seed(0)
        model = MuxModel.from_backbone(view, kind="revmux", n=2, k=k, shared_prefix=flag).eval()
        seen: list[torch.Tensor] = []
        tail = model._tail
        model._tail = lambda comp, mask, tail=tail, seen=seen: seen.append(tail(comp, mask)) or seen[-1]
        with torch.no_grad():
            logits = model(inputs, order=torch.arange(4))
        assert logits.shape == (4, 3) and torch.isfinite(logits).all()
        outs[flag] = seen[0]  # (2 groups, T, d)
    # groups are (0, 1) and (2, 3): their common prefix is exact, the column after it is not plain
    torch.testing.assert_close(outs[True][:, :PREFIX], unsplit[[0, 2], :PREFIX], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outs[False][:, :PREFIX], unsplit[[0, 2], :PREFIX], atol=1e-3)
    assert not torch.allclose(outs[True][:, PREFIX], unsplit[[0, 2], PREFIX], atol=1e-3)


def test_shared_prefix_needs_a_causal_decoder() -> None:
    with pytest.raises(ConfigError, match="shared_prefix needs a causal decoder.*'bert'"):
        MuxModel.from_backbone(tiny_bert(), n=2, k=1, shared_prefix=True)


def test_shared_prefix_saves_and_reloads(tmp_path) -> None:
    view = build("llama", "lm")
    model = MuxModel.from_backbone(view, n=2, k=1, shared_prefix=True).eval()
    model.save_pretrained(tmp_path)
    loaded = MuxModel.from_pretrained(tmp_path, view).eval()
    assert loaded.config.shared_prefix
    inputs = _prefix_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), model(inputs), atol=0, rtol=0)
