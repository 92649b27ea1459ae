"""runs: real column spans, run counts, runs of whole groups (leftovers join the last), masked mean."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from revmux.runs import (
    bucketed_runs,
    groups_by_length,
    last_real_index,
    masked_mean,
    pack_rows,
    real_columns,
    real_ends,
    run_count,
    split_runs,
    token_index,
)

RIGHT = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
LEFT = RIGHT.flip(1)


def test_real_ends_and_last_real_index_on_both_padding_sides():
    assert real_ends(RIGHT).tolist() == [3, 1, 4]
    assert last_real_index(RIGHT).tolist() == [2, 0, 3]
    assert real_ends(LEFT).tolist() == [5, 5, 5]
    assert last_real_index(LEFT).tolist() == [4, 4, 4]
    assert last_real_index(RIGHT).dtype == torch.long


def test_real_columns_cut_trailing_and_optionally_leading_padding():
    assert real_columns(RIGHT) == slice(0, 4)
    assert real_columns(RIGHT[:2]) == slice(0, 3)
    assert real_columns(RIGHT[:2], leading=True) == slice(0, 3)
    assert real_columns(LEFT[:2]) == slice(0, 5)  # trailing only: left padding has none
    assert real_columns(LEFT[:2], leading=True) == slice(2, 5)  # the columns a longest row of 3 needs


@pytest.mark.parametrize(("groups", "expected"), [(0, 1), (3, 1), (4, 1), (8, 2), (15, 3), (16, 4), (100, 4)])
def test_run_count_is_capped_by_both_knobs(groups, expected):
    assert run_count(groups, group_size=4) == expected  # groups of 4: at least 16 requests, 4 groups, a run
    assert run_count(groups, group_size=4, max_runs=1) == 1
    assert run_count(100, max_runs=8, min_rows_per_run=10) == 8


@pytest.mark.parametrize(
    ("group_size", "groups", "expected"),
    [(1, 32, 2), (2, 16, 2), (2, 64, 4), (4, 8, 2), (3, 11, 1), (3, 12, 2), (16, 3, 3)],
)
def test_run_count_counts_requests_not_groups(group_size, groups, expected):
    # at least MIN_ROWS_PER_RUN = 16 requests (whole groups) a run
    assert run_count(groups, group_size=group_size) == expected


def test_split_runs_keeps_groups_whole_and_leftovers_in_the_last_run():
    order = torch.arange(11)  # 5 groups of 2 + 1 leftover, in 2 runs: 3 groups, then 2 groups + leftover
    runs = split_runs(order, 2, group_size=2)
    assert [r.tolist() for r in runs] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert [r.tolist() for r in split_runs(order, 1, group_size=2)] == [order.tolist()]
    assert [r.tolist() for r in split_runs(order[:1], 4, group_size=2)] == [[0]]  # no whole group: one run
    assert [len(r) for r in split_runs(order, rows_per_run=4)] == [4, 4, 3]
    assert [len(r) for r in split_runs(order, 3)] == [4, 4, 3]  # as tensor_split
    assert torch.equal(torch.cat(split_runs(order.flip(0), 3, group_size=2)), order.flip(0))


def test_bucketed_runs_pair_rows_with_their_columns():
    mask = torch.tensor([[1] * n + [0] * (6 - n) for n in (6, 5, 2, 1)])
    order = torch.tensor([0, 1, 2, 3])
    assert [(r.tolist(), c) for r, c in bucketed_runs(mask, order, 2)] == [
        ([0, 1], slice(0, 6)),
        ([2, 3], slice(0, 2)),
    ]
    left = mask.flip(1)
    assert [c for _, c in bucketed_runs(left, order, 2, leading=True)] == [slice(0, 6), slice(4, 6)]


def test_masked_mean_averages_real_tokens_only():
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    out = masked_mean(x, mask)
    torch.testing.assert_close(out[0], x[0, :2].mean(0))
    assert torch.equal(out[1], torch.zeros(2))  # no real token: zeros, not NaN


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=23),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_groups_by_length_reorders_whole_groups_longest_first(lengths, n, seed):
    mask = (torch.arange(12) < torch.tensor(lengths).unsqueeze(1)).long()
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed))
    out = groups_by_length(order, mask, n)
    G = len(lengths) // n
    before = {tuple(order[g * n : (g + 1) * n].tolist()) for g in range(G)}
    after = [tuple(out[g * n : (g + 1) * n].tolist()) for g in range(G)]
    assert set(after) == before  # the same groups, each with its slot order
    assert out[G * n :].tolist() == order[G * n :].tolist()  # leftovers stay last
    ends = [max(lengths[i] for i in group) for group in after]
    assert ends == sorted(ends, reverse=True)


@settings(max_examples=80, deadline=None)
@given(lengths=st.lists(st.integers(0, 20), min_size=1, max_size=40))
def test_pack_rows_places_every_row_whole_in_one_bin_without_overlap(lengths):
    plan = pack_rows(torch.tensor(lengths))
    C = max([1, *lengths])
    assert plan.capacity == C and plan.segments.shape[1] == C
    flat = plan.segments.view(-1)
    for r, length in enumerate(lengths):
        start = int(plan.slots[r])
        assert int(plan.offsets[r]) + length <= C  # never spans bins
        assert flat[start : start + length].tolist() == [r + 1] * length  # contiguous, its own id
        assert int((flat == r + 1).sum()) == length  # nowhere else
    assert int((flat > 0).sum()) == sum(lengths)
    # first fit: at most one bin is half full or less (a later one would have fit into it)
    assert plan.segments.shape[0] <= max(1, -(-2 * sum(lengths) // C))


def test_token_index_lists_each_rows_real_tokens_in_order():
    rows, tokens = token_index(torch.tensor([2, 0, 3]))
    assert rows.tolist() == [0, 0, 2, 2, 2] and tokens.tolist() == [0, 1, 0, 1, 2]
