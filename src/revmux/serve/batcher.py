"""The batcher: a bounded queue of single inputs and the scheduler that cuts it into groups of N.

What it is: plain Python (no torch, no tensors, no clock of its own: every call takes `now` in
seconds, so tests drive it with a fake clock, like vLLM's scheduler tests). It decides; the runner
executes. One `Request` is one input (a text or a pair) with its token count measured at admission
and a `concurrent.futures.Future` the runner's answer resolves.

Scheduling, per `schedule(now)`:
1. Cancelled requests (client gone, deadline hit in the handler) and expired ones are dropped before
   launch; an expired request's future fails with DeadlineExceeded.
2. The policy picks N from the queue depth (`threshold_policy`: N = 1 when traffic is light, larger N
   under load). A step launches when `max_batch_groups * N` requests wait, when the oldest has waited
   `max_queue_delay_s`, or when forced (draining).
3. The oldest `max_batch_groups * N` requests are taken (FIFO), sorted by token count when
   `length_aware` so partners pad little, and cut into groups of N. What is left (fewer than N) runs
   as groups of the largest smaller width, down to N = 1: a group is never padded with another
   user's data or with fake requests. At most `max_batch_groups` composites per step; the rest waits
   (only when a cancel races the claim can the re-cut remainder add a few small groups).
4. With `isolation="tenant"` a group only ever holds requests of one tenant (`Request.tenant`): the
   oldest requests are taken as before, but grouped per tenant, so a tenant's lone request runs at a
   smaller N (N = 1 at worst), never beside another tenant's. The step stops taking requests before its
   groups would exceed `max_batch_groups`.

What it is not: thread-safe (the engine holds a lock around it) or aware of HTTP.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from revmux.errors import ConfigError
from revmux.serve.errors import DeadlineExceeded, QueueFull

Policy = Callable[[int], int]
ISOLATIONS = ("none", "tenant")
_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """One input waiting for partners. `payload` is opaque here (the runner's encoded tokens)."""

    n_tokens: int
    arrival_s: float
    deadline_s: float
    payload: Any = None
    id: int = field(default_factory=lambda: next(_ids))
    future: Future = field(default_factory=Future)
    launched_s: float | None = None
    tenant: str | None = None  # who sent it; with isolation "tenant", groups never mix tenants


@dataclass
class Group:
    """`width` requests that share one composite (width 1: run alone, unmultiplexed)."""

    width: int
    requests: list[Request]


@dataclass
class Step:
    """What one forward pass runs: groups of possibly different widths."""

    groups: list[Group]

    @property
    def requests(self) -> list[Request]:
        return [r for g in self.groups for r in g.requests]

    def __len__(self) -> int:
        return sum(len(g.requests) for g in self.groups)


def threshold_policy(
    widths: Iterable[int], thresholds: Mapping[int, int] | None = None, *, max_batch_groups: int = 32
) -> Policy:
    """depth -> N: the largest width whose threshold (queue depth from which it is used) is reached.

    N = 1 always has threshold 0. A width without a threshold gets one full pass of the next smaller
    width plus one (`max_batch_groups * previous + 1`): multiplex only once N = 1 cannot keep up.
    """
    ws = sorted(set(widths) | {1})
    thresholds = dict(thresholds or {})
    unknown = sorted(set(thresholds) - set(ws))
    if unknown:
        raise ConfigError(
            f"--width-thresholds names widths {unknown}, but the loaded widths are {ws}. "
            "Give thresholds only for loaded widths (or load adapters for those N)."
        )
    table = {1: 0}
    for prev, w in itertools.pairwise(ws):
        table[w] = thresholds.get(w, max_batch_groups * prev + 1)

    def policy(depth: int) -> int:
        return max(w for w in ws if depth >= table[w])

    policy.thresholds = table  # type: ignore[attr-defined]
    return policy


class Batcher:
    """A bounded FIFO of Requests and the scheduler that forms groups of N (see the module docstring)."""

    def __init__(
        self,
        widths: Iterable[int],
        *,
        max_queue_delay_s: float = 0.005,
        max_batch_groups: int = 32,
        max_queue_size: int = 1024,
        policy: Policy | None = None,
        length_aware: bool = True,
        isolation: str = "none",
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ConfigError(f"--isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}.")
        self.isolation = isolation
        if max_batch_groups < 1 or max_queue_size < 1 or max_queue_delay_s < 0:
            raise ConfigError(
                "max_batch_groups and max_queue_size must be >= 1 and max_queue_delay_s >= 0, got "
                f"{max_batch_groups}, {max_queue_size}, {max_queue_delay_s}."
            )
        self.widths = sorted(set(widths) | {1})
        self.max_queue_delay_s = max_queue_delay_s
        self.max_batch_groups = max_batch_groups
        self.max_queue_size = max_queue_size
        self.policy = policy or threshold_policy(self.widths, max_batch_groups=max_batch_groups)
        bad = {d: n for d in range(max_queue_size + 1) if (n := self.policy(d)) not in self.widths}
        if bad:
            depth, n = next(iter(bad.items()))
            raise ConfigError(
                f"the width policy picks N={n} at queue depth {depth}, but only widths {self.widths} are loaded."
            )
        self.length_aware = length_aware
        self.queue: deque[Request] = deque()
        self.dropped_cancelled = 0
        self.dropped_expired = 0

    @property
    def depth(self) -> int:
        """Requests queued (cancelled ones count until the next purge)."""
        return len(self.queue)

    def add(self, requests: list[Request], now: float) -> None:
        """Queue all of `requests` or none (QueueFull when they do not fit)."""
        if len(self.queue) + len(requests) > self.max_queue_size:
            self._purge(now)
        if len(self.queue) + len(requests) > self.max_queue_size:
            raise QueueFull(
                f"the queue holds {len(self.queue)} of max_queue_size={self.max_queue_size} inputs and this "
                f"request brings {len(requests)}; retry later or raise --max-queue-size."
            )
        self.queue.extend(requests)

    def next_launch_s(self, now: float) -> float | None:
        """Seconds until a step should launch (0: now), or None when the queue is empty."""
        if not self.queue:
            return None
        if len(self.queue) >= self.max_batch_groups * self.policy(len(self.queue)):
            return 0.0
        return max(0.0, self.queue[0].arrival_s + self.max_queue_delay_s - now)

    def schedule(self, now: float, *, force: bool = False) -> Step | None:
        """The next step, or None if nothing should launch yet. Claims (marks running) what it returns."""
        self._purge(now)
        if not self.queue:
            return None
        n = self.policy(min(len(self.queue), self.max_queue_size))  # checked for every depth at __init__
        target = self.max_batch_groups * n
        waited_enough = now >= self.queue[0].arrival_s + self.max_queue_delay_s
        if not (force or len(self.queue) >= target or waited_enough):
            return None
        if self.isolation == "tenant":
            count = self._tenant_window(min(len(self.queue), target), n)
        else:
            count = sum(self._cut_sizes(min(len(self.queue), target), n)[: self.max_batch_groups])
        taken: list[Request] = []
        while self.queue and len(taken) < count:
            req = self.queue.popleft()
            if req.future.set_running_or_notify_cancel():  # False: cancelled since the purge
                req.launched_s = now
                taken.append(req)
            else:
                self.dropped_cancelled += 1
        if not taken:
            return None
        if self.isolation == "tenant":
            parts: dict[str | None, list[Request]] = {}
            for req in taken:
                parts.setdefault(req.tenant, []).append(req)
            return Step([g for part in parts.values() for g in self._groups(part, n)])
        return Step(self._groups(taken, n))

    def _groups(self, requests: list[Request], n: int) -> list[Group]:
        """`requests` cut into groups of n (the remainder at smaller widths), by length when length_aware."""
        if self.length_aware:
            requests = sorted(requests, key=lambda r: r.n_tokens, reverse=True)  # stable: FIFO among equals
        groups, i = [], 0
        for width in self._cut_sizes(len(requests), n):
            groups.append(Group(width, requests[i : i + width]))
            i += width
        return groups

    def _tenant_window(self, limit: int, n: int) -> int:
        """How many of the oldest requests (at most `limit`) fit in max_batch_groups groups when each tenant's
        requests are grouped apart."""
        counts: dict[str | None, int] = {}
        groups = taken = 0
        for req in itertools.islice(self.queue, limit):
            before = len(self._cut_sizes(counts.get(req.tenant, 0), n))
            after = len(self._cut_sizes(counts.get(req.tenant, 0) + 1, n))
            if groups + after - before > self.max_batch_groups:
                break
            counts[req.tenant] = counts.get(req.tenant, 0) + 1
            groups += after - before
            taken += 1
        return taken

    def _cut_sizes(self, count: int, n: int) -> list[int]:
        """Widths of the groups for `count` requests: n each, the remainder as the largest smaller widths."""
        sizes: list[int] = []
        while count > 0:
            width = n if count >= n else max(w for w in self.widths if w <= count)
            sizes.append(width)
            count -= width
        return sizes

    def _purge(self, now: float) -> None:
        """Drop cancelled requests; fail expired ones with DeadlineExceeded."""
        live: deque[Request] = deque()
        for req in self.queue:
            if req.future.cancelled():
                self.dropped_cancelled += 1
            elif req.deadline_s <= now:
                if req.future.set_running_or_notify_cancel():
                    req.future.set_exception(
                        DeadlineExceeded(
                            f"the request waited {now - req.arrival_s:.3f} s in the queue, past its deadline; "
                            "retry, or raise --request-timeout-ms."
                        )
                    )
                self.dropped_expired += 1
            else:
                live.append(req)
        self.queue = live
