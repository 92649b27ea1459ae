"""batcher.py with a fake clock: launch on size or delay, the N policy, leftovers, cancels, deadlines, 429."""

from __future__ import annotations

import pytest

from revmux.errors import ConfigError
from revmux.serve.batcher import Batcher, Request, threshold_policy
from revmux.serve.errors import DeadlineExceeded, QueueFull


def make_requests(n: int, *, at: float = 0.0, tokens: list[int] | None = None, timeout_s: float = 60.0):
    tokens = tokens or [8] * n
    return [Request(n_tokens=t, arrival_s=at, deadline_s=at + timeout_s) for t in tokens[:n]]


def fixed(n: int):
    return lambda depth: n


def widths_of(step) -> list[int]:
    return [g.width for g in step.groups]


def test_launches_when_a_full_pass_is_waiting():
    b = Batcher([1, 2], max_queue_delay_s=10.0, max_batch_groups=2, policy=fixed(2))
    b.add(make_requests(3), now=0.0)
    assert b.schedule(0.0) is None and b.next_launch_s(0.0) == pytest.approx(10.0)
    b.add(make_requests(1), now=0.0)
    assert b.next_launch_s(0.0) == 0.0
    step = b.schedule(0.0)
    assert widths_of(step) == [2, 2] and len(step) == 4 and b.depth == 0


def test_launches_when_the_oldest_waited_the_delay():
    b = Batcher([1, 2, 4], max_queue_delay_s=0.005)
    b.add(make_requests(1, at=1.0), now=1.0)
    assert b.schedule(1.004) is None
    assert b.next_launch_s(1.004) == pytest.approx(0.001)
    step = b.schedule(1.005)
    assert widths_of(step) == [1]
    assert b.next_launch_s(1.005) is None


def test_force_launches_at_once():
    b = Batcher([1], max_queue_delay_s=10.0)
    b.add(make_requests(2), now=0.0)
    assert b.schedule(0.0) is None
    assert len(b.schedule(0.0, force=True)) == 2


@pytest.mark.parametrize(
    ("thresholds", "depths_to_n"),
    [
        (None, {1: 1, 4: 1, 5: 2, 8: 2, 9: 4, 100: 4}),  # default: one full pass of the previous N, plus one
        ({2: 3, 4: 10}, {2: 1, 3: 2, 9: 2, 10: 4}),
        ({4: 0}, {1: 4, 50: 4}),  # always the widest: a fixed-N server
    ],
)
def test_policy_picks_n_from_queue_depth(thresholds, depths_to_n):
    policy = threshold_policy([1, 2, 4], thresholds, max_batch_groups=4)
    assert {d: policy(d) for d in depths_to_n} == depths_to_n


def test_policy_rejects_thresholds_for_widths_not_loaded():
    with pytest.raises(ConfigError, match="--width-thresholds names widths \\[8\\]"):
        threshold_policy([1, 2], {8: 10})


def test_light_traffic_runs_unmultiplexed_and_heavy_traffic_multiplexed():
    b = Batcher([1, 2, 4], max_queue_delay_s=0.0, max_batch_groups=4)
    b.add(make_requests(3), now=0.0)
    assert set(widths_of(b.schedule(0.0))) == {1}
    b.add(make_requests(16), now=0.0)
    assert widths_of(b.schedule(0.0)) == [4, 4, 4, 4]


def test_leftovers_run_at_smaller_widths_never_padded():
    b = Batcher([1, 2, 4], max_queue_delay_s=0.0, max_batch_groups=8, policy=fixed(4))
    reqs = make_requests(7)
    b.add(reqs, now=0.0)
    step = b.schedule(0.0)
    assert widths_of(step) == [4, 2, 1]
    assert all(len(g.requests) == g.width for g in step.groups)
    assert sorted(r.id for r in step.requests) == sorted(r.id for r in reqs)  # each exactly once, no fakes


def test_leftover_groups_count_against_max_batch_groups():
    b = Batcher([1, 2, 4], max_queue_delay_s=0.0, max_batch_groups=2, policy=fixed(4))
    b.add(make_requests(7), now=0.0)
    assert widths_of(b.schedule(0.0)) == [4, 2]
    assert b.depth == 1 and widths_of(b.schedule(0.0)) == [1]


def test_leftovers_skip_widths_not_loaded():
    b = Batcher([1, 4], max_queue_delay_s=0.0, max_batch_groups=8, policy=fixed(4))
    b.add(make_requests(7), now=0.0)
    assert widths_of(b.schedule(0.0)) == [4, 1, 1, 1]


def test_at_most_max_batch_groups_composites_and_fifo():
    b = Batcher([1, 2, 4], max_queue_delay_s=0.0, max_batch_groups=2, policy=fixed(4))
    first, later = make_requests(7, at=0.0), make_requests(2, at=0.1)
    b.add(first, now=0.0)
    b.add(later, now=0.1)
    step = b.schedule(0.1)
    assert widths_of(step) == [4, 4]
    assert {r.id for r in step.requests} == {r.id for r in first + later[:1]}  # oldest first
    assert [r.id for r in b.queue] == [later[1].id]  # the newest waits


def test_length_aware_groups_similar_lengths():
    reqs = make_requests(4, tokens=[3, 50, 4, 48])
    b = Batcher([1, 2], max_queue_delay_s=0.0, policy=fixed(2), length_aware=True)
    b.add(reqs, now=0.0)
    assert [sorted(r.n_tokens for r in g.requests) for g in b.schedule(0.0).groups] == [[48, 50], [3, 4]]
    b = Batcher([1, 2], max_queue_delay_s=0.0, policy=fixed(2), length_aware=False)
    b.add(make_requests(4, tokens=[3, 50, 4, 48]), now=0.0)
    assert [[r.n_tokens for r in g.requests] for g in b.schedule(0.0).groups] == [[3, 50], [4, 48]]


def test_cancelled_requests_are_dropped_before_launch_and_never_grouped():
    b = Batcher([1, 2], max_queue_delay_s=0.0, policy=fixed(2))
    reqs = make_requests(5)
    b.add(reqs, now=0.0)
    assert reqs[1].future.cancel()
    step = b.schedule(0.0)
    assert reqs[1] not in step.requests and len(step) == 4 and widths_of(step) == [2, 2]
    assert b.dropped_cancelled == 1
    assert all(r.future.running() for r in step.requests)  # claimed: a late cancel cannot take them back
    assert not step.requests[0].future.cancel()


def test_expired_requests_fail_with_deadline_exceeded():
    b = Batcher([1], max_queue_delay_s=10.0)
    late, fresh = make_requests(1, timeout_s=1.0), make_requests(1, timeout_s=100.0)
    b.add(late + fresh, now=0.0)
    assert b.schedule(1.5) is None
    assert isinstance(late[0].future.exception(), DeadlineExceeded)
    assert b.depth == 1 and b.dropped_expired == 1 and not fresh[0].future.done()


def test_queue_full_rejects_whole_requests_then_recovers():
    b = Batcher([1], max_queue_delay_s=0.0, max_queue_size=3)
    b.add(make_requests(2), now=0.0)
    with pytest.raises(QueueFull, match="max_queue_size=3"):
        b.add(make_requests(2), now=0.0)
    assert b.depth == 2  # all or nothing
    b.schedule(0.0)
    b.add(make_requests(3), now=0.0)
    assert b.depth == 3


def test_a_full_queue_makes_room_by_purging_cancelled_requests():
    b = Batcher([1], max_queue_delay_s=10.0, max_queue_size=2)
    reqs = make_requests(2)
    b.add(reqs, now=0.0)
    reqs[0].future.cancel()
    b.add(make_requests(1), now=0.0)
    assert b.depth == 2


def test_bad_knobs_and_policies_are_rejected_up_front():
    with pytest.raises(ConfigError):
        Batcher([1], max_batch_groups=0)
    with pytest.raises(ConfigError, match="picks N=8 at queue depth 10"):
        Batcher([1, 2], max_queue_size=20, policy=lambda depth: 8 if depth >= 10 else 1)


def test_the_engine_side_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, revmux.serve.batcher, revmux.serve.engine, revmux.serve.http; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# ---- tenant isolation ---------------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.integers(0, 7), st.integers(1, 40), st.floats(0, 0.02)), min_size=1, max_size=120
    ),
    max_batch_groups=st.integers(1, 8),
    widths=st.sampled_from([(1, 2), (1, 2, 4), (1, 4), (1, 2, 4, 8)]),
    length_aware=st.booleans(),
)
def test_tenant_isolation_never_mixes_tenants_and_answers_everyone(
    arrivals, max_batch_groups, widths, length_aware
):
    """Random arrival times, tenants and lengths: every group holds one tenant, no step exceeds
    max_batch_groups composites, and every request is scheduled exactly once."""
    b = Batcher(
        widths,
        max_queue_delay_s=0.005,
        max_batch_groups=max_batch_groups,
        max_queue_size=1000,
        policy=fixed(max(widths)),
        length_aware=length_aware,
        isolation="tenant",
    )
    now, seen = 0.0, []
    for tenant, tokens, gap in arrivals:
        now += gap
        b.add([Request(n_tokens=tokens, arrival_s=now, deadline_s=now + 60, tenant=f"t{tenant}")], now)
        while (step := b.schedule(now)) is not None:
            assert len(step.groups) <= max_batch_groups
            for g in step.groups:
                assert len({r.tenant for r in g.requests}) == 1 and len(g.requests) == g.width
            seen += step.requests
    while (step := b.schedule(now, force=True)) is not None:
        assert all(len({r.tenant for r in g.requests}) == 1 for g in step.groups)
        seen += step.requests
    assert len(seen) == len(arrivals) == len({r.id for r in seen})


def test_a_lone_request_of_a_tenant_runs_at_a_smaller_width():
    b = Batcher([1, 2, 4], max_queue_delay_s=0.0, policy=fixed(4), isolation="tenant")
    reqs = [Request(n_tokens=5, arrival_s=0.0, deadline_s=60.0, tenant=t) for t in "abaaa"]
    b.add(reqs, 0.0)
    step = b.schedule(0.0)
    assert sorted((g.width, g.requests[0].tenant) for g in step.groups) == [(1, "b"), (4, "a")]
    shared = Batcher([1, 2, 4], max_queue_delay_s=0.0, policy=fixed(4))  # isolation "none": strangers share
    shared.add([Request(n_tokens=5, arrival_s=0.0, deadline_s=60.0, tenant=t) for t in "abaaa"], 0.0)
    assert any(len({r.tenant for r in g.requests}) == 2 for g in shared.schedule(0.0).groups)
    with pytest.raises(ConfigError, match="--isolation must be one of none, tenant"):
        Batcher([1, 2], isolation="strict")
