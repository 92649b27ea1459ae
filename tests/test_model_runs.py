"""MuxModel's runs: the adapters and the tail see only each run's real columns, as the length-sorted plain
model does, so multiplexing pays no more padding per request than plain inference in the same runs."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from revmux.backbones.quantize import quantized_copy
from revmux.errors import UnsupportedModelError
from revmux.model import MuxModel
from revmux.runs import (
    BF16_MAX_RUNS,
    BF16_MIN_ROWS_PER_RUN,
    MAX_RUNS,
    MIN_ROWS_PER_RUN,
    PREFILL_MAX_RUNS,
    PREFILL_MIN_ROWS_PER_RUN,
    bucketed_runs,
    groups_by_length,
    pack_rows,
    plan_groups,
    real_ends,
    token_index,
)
from tests.tiny import tiny_batch, tiny_bert


@pytest.mark.parametrize("path", ["forward", "forward_from_prefill"])
def test_adapters_and_tail_run_on_each_runs_real_columns_only(path):
    view = tiny_bert()
    model = MuxModel.from_backbone(view, n=2, k=1)
    model.pack_tail = False  # the tail once per run (the packed tail: the tests below)
    model.min_rows_per_run = 8  # at least 8 requests a run: 16 groups in 4 runs, one leftover
    lengths = [3 + (i * 7) % 29 for i in range(33)]
    batch = tiny_batch(lengths, seed=3)
    mask = batch["attention_mask"]
    perm = plan_groups(mask.sum(1), 2, length_aware=True)
    expected = [cols.stop for _, cols in bucketed_runs(mask[perm[:32]], torch.arange(32), 4, group_size=2)]
    seen: list[int] = []
    mux = model.mux.mux
    model.mux.mux = lambda h: seen.append(h.shape[2]) or mux(h)
    tail_widths: list[int] = []
    hook = view.layer_modules()[1].register_forward_pre_hook(
        lambda _, args: tail_widths.append(args[0].shape[1])
    )
    try:
        with torch.inference_mode():
            if path == "forward":
                model(batch, length_aware=True)
            else:
                model.forward_from_prefill(model.prefill(batch), length_aware=True)
    finally:
        hook.remove()
        del model.mux.mux
    assert seen == expected and min(expected) < mask.shape[1]
    assert tail_widths[:4] == expected  # the 4 composite runs; then the leftover at N = 1


@pytest.mark.parametrize("path", ["forward", "forward_from_prefill"])
def test_random_groupings_run_in_runs_of_similar_length_with_the_same_answers(path):
    """Groups of a given (random) order are cut into runs by length: each group's answers are those of the
    group run alone, and the runs skip the padding a random mix of long and short groups would leave."""
    view = tiny_bert()
    model = MuxModel.from_backbone(view, n=2, k=1)
    model.pack_tail = False  # the tail once per run, each run's width seen by the hook
    model.min_rows_per_run = 8  # 16 groups in 4 runs
    lengths = [3 + (i * 7) % 29 for i in range(32)]
    batch = tiny_batch(lengths, seed=5)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    widths: list[int] = []
    hook = view.layer_modules()[1].register_forward_pre_hook(lambda _, args: widths.append(args[0].shape[1]))
    try:
        with torch.inference_mode():
            if path == "forward":
                out = model(batch, order=order)
            else:
                out = model.forward_from_prefill(model.prefill(batch), order=order).logits
    finally:
        hook.remove()
    assert len(widths) == 4 and widths == sorted(widths, reverse=True) and widths[-1] < widths[0]
    with torch.inference_mode():
        for g in range(16):
            rows = order[2 * g : 2 * g + 2]
            alone = model({key: value[rows] for key, value in batch.items()})
            torch.testing.assert_close(out[rows], alone, atol=1e-5, rtol=1e-4)


def test_rerun_alone_runs_length_sorted_runs_cut_to_their_rows_and_equals_each_row_alone():
    """The confidence fallback's re-run: layers [k, L) of chosen rows, in runs cut after their own last real
    column (not the batch's), with each row's answer exactly as alone."""
    view = tiny_bert()
    model = MuxModel.from_backbone(view, n=2, k=1)
    model.min_rows_per_run = 4  # 16 rows in 4 runs
    batch = tiny_batch([3 + (i * 7) % 29 for i in range(32)], seed=7)
    state = model.prefill(batch)
    rows = torch.tensor([5, 0, 17, 30, 2, 9, 22, 11, 26, 14, 1, 19, 7, 28, 3, 24])
    widths: list[int] = []
    hook = view.layer_modules()[1].register_forward_pre_hook(lambda _, args: widths.append(args[0].shape[1]))
    try:
        with torch.inference_mode():
            got = model.rerun_alone(state, rows)
    finally:
        hook.remove()
    ends = batch["attention_mask"][rows].sum(1).sort(descending=True).values
    assert widths == [int(run.max()) for run in ends.tensor_split(4)] and max(widths) < state.hidden.shape[1]
    with torch.inference_mode():
        for i, r in enumerate(rows.tolist()):
            alone = model.teacher_from_prefill(model.prefill({k: v[r : r + 1] for k, v in batch.items()}))[1]
            torch.testing.assert_close(got[i : i + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [2, 4])
def test_packed_tail_runs_once_over_every_runs_composites_with_the_same_answers(n):
    """The tail runs once, over all runs' composites packed side by side in bins as long as the longest
    composite, and each request's answer is what the tail run per run (padded) gives it."""
    view = tiny_bert()
    model = MuxModel.from_backbone(view, n=n, k=1)
    assert model.packs_tail and view.packs_rows
    lengths = [3 + (i * 7) % 29 for i in range(8 * n + 1)]  # one leftover, run alone at N = 1
    batch = tiny_batch(lengths, seed=11)
    mask = batch["attention_mask"]
    perm = groups_by_length(plan_groups(mask.sum(1), n, length_aware=True), mask, n)
    comp_ends = real_ends(mask[perm[: 8 * n]]).view(8, n).amax(dim=1)
    plan = pack_rows(comp_ends)
    shapes: list[tuple[int, int]] = []
    hook = view.layer_modules()[1].register_forward_pre_hook(lambda _, args: shapes.append(args[0].shape[:2]))
    try:
        with torch.inference_mode():
            packed = model(batch, length_aware=True)
    finally:
        hook.remove()
    tail = [shape for shape in shapes if shape[0] == plan.segments.shape[0] and shape[1] == plan.capacity]
    assert len(tail) == 1 and plan.segments.shape[0] < 8  # one pass, fewer rows than composites
    model.pack_tail = False
    with torch.inference_mode():
        per_run = model(batch, length_aware=True)
        padded = model.forward_from_prefill(model.prefill(batch), length_aware=True).logits
    torch.testing.assert_close(packed, per_run, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [2, 4])
def test_packed_tail_trains_as_the_per_run_tail_same_loss_and_gradients(n):
    """Training runs the packed tail (revmux.train): the adapters' gradients through it are those of the
    tail run per run, padded, so packing changes the speed of a step, not the step."""
    view = tiny_bert()
    model = MuxModel.from_backbone(view, n=n, k=1)
    batch = tiny_batch([2 + (i * 5) % 23 for i in range(6 * n + 1)], seed=5)
    with torch.no_grad():
        state = model.prefill(batch)

    def step(pack: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.pack_tail = pack
        assert model.packs_tail is pack
        model.mux.zero_grad(set_to_none=True)
        out = model.forward_from_prefill(state, order=torch.arange(len(state.hidden)))
        loss = out.logits.log_softmax(-1)[:, 0].sum() + out.reps.pow(2).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.mux.parameters()]

    (packed_loss, packed_grads), (loss, grads) = step(True), step(False)
    torch.testing.assert_close(packed_loss, loss, atol=1e-5, rtol=1e-4)
    assert len(grads) == len(packed_grads) > 0 and any(g.abs().sum() > 0 for g in grads)
    for packed_grad, grad in zip(packed_grads, grads, strict=True):
        torch.testing.assert_close(packed_grad, grad, atol=1e-5, rtol=1e-4)


def test_packing_cuts_the_prefill_as_the_plain_model_and_views_that_cannot_pack_do_not():
    view = tiny_bert()
    model = MuxModel.from_backbone(view, n=4, k=1)
    assert model.run_cut == (PREFILL_MAX_RUNS, PREFILL_MIN_ROWS_PER_RUN)  # runs of 8, at most 4
    bf16 = MuxModel(quantized_copy(view, "bf16"), model.config, model.mux)
    assert bf16.packs_tail and bf16.run_cut == (BF16_MAX_RUNS, BF16_MIN_ROWS_PER_RUN)  # bf16: longer runs
    assert BF16_MIN_ROWS_PER_RUN > PREFILL_MIN_ROWS_PER_RUN
    model.pack_tail = False
    assert model.run_cut == (MAX_RUNS, MIN_ROWS_PER_RUN)
    model.max_runs = 1
    assert model.run_cut == (1, MIN_ROWS_PER_RUN)  # a knob set by hand wins
    elsewhere = copy.copy(view)  # layers run elsewhere (as ONNX Runtime's copy of a view): no packing
    elsewhere.layers_elsewhere = True
    assert not elsewhere.packs_rows and not MuxModel(elsewhere, model.config, model.mux).packs_tail
    with pytest.raises(UnsupportedModelError, match="cannot run packed rows"):
        elsewhere.run_packed(torch.zeros(1, 2, 32), torch.ones(1, 2, dtype=torch.long), 0, 1)


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=12), start=st.integers(0, 2))
def test_run_packed_gives_each_sequence_what_the_layers_give_it_alone(lengths, start):
    """Sequences packed side by side (`pack_rows`) through layers [start, L): every real token's state equals
    the padded run's, whatever the lengths."""
    view = _VIEW
    batch = tiny_batch(lengths, seed=len(lengths))
    state = view.run_layers(view.embed(batch), 0, start)
    plan = pack_rows(torch.tensor(lengths))
    rows, tokens = token_index(torch.tensor(lengths))
    buffer = state.hidden.new_zeros(plan.segments.numel(), state.hidden.shape[-1])
    buffer[plan.slots[rows] + tokens] = state.hidden[rows, tokens]
    with torch.inference_mode():
        packed = view.run_packed(buffer.view(*plan.segments.shape, -1), plan.segments, start, view.num_layers)
        padded = view.run_layers(state, start, view.num_layers).hidden
    got = packed.reshape(-1, packed.shape[-1])[plan.slots[rows] + tokens]
    torch.testing.assert_close(got, padded[rows, tokens], atol=1e-5, rtol=1e-4)


_VIEW = tiny_bert()
