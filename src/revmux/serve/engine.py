"""The engine: batcher + runner + one worker thread, behind `submit` / `predict`. No HTTP inside.

What it is: the piece every front shares (http.py here; a Ray Serve deployment can hold one
Engine per replica). `predict(items)` tokenizes each input at admission (a failure fails that
request alone, before it is queued), queues all its inputs or none (QueueFull), and awaits their
futures with the request's deadline, so a 504 fires even while a forward pass runs. Cancelling the
awaiting task (client gone) cancels the futures: queued inputs are dropped before launch. The worker
thread loops `batcher.schedule()` -> `runner.run()` -> resolve futures, checking one output per
request (a missing one fails that request only). `begin_drain()` stops intake and launches what is
queued at once; `wait_idle()` returns when every accepted request has been answered.
What it is not: an HTTP server, an asyncio task (it works from any event loop, or none via
`submit`), or a place that touches tensors.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from revmux.errors import RevmuxError
from revmux.serve.batcher import Batcher, Policy, Request, Step, threshold_policy
from revmux.serve.config import ServeConfig
from revmux.serve.contract import Output, Runner
from revmux.serve.errors import DeadlineExceeded, Draining, RunnerContractError
from revmux.serve.metrics import ServeMetrics

log = logging.getLogger("revmux.serve")


@dataclass
class Item:
    """One input of a request: a text, or a pair (text, text_pair)."""

    text: str
    text_pair: str | None = None


class Engine:
    """Queue, group and run requests on one runner (see the module docstring)."""

    def __init__(
        self,
        runner: Runner,
        config: ServeConfig | None = None,
        *,
        metrics: ServeMetrics | None = None,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.config = config or ServeConfig()
        self.metrics = metrics or ServeMetrics()
        self.clock = clock
        c = self.config
        widths = runner.widths
        self.policy = policy or threshold_policy(
            widths, c.width_thresholds, max_batch_groups=c.max_batch_groups
        )
        self.batcher = Batcher(
            widths,
            max_queue_delay_s=c.max_queue_delay_ms / 1000,
            max_batch_groups=c.max_batch_groups,
            max_queue_size=c.max_queue_size,
            policy=self.policy,
            length_aware=c.length_aware,
            isolation=c.isolation,
        )
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._draining = False
        self._stopping = False
        self._in_flight = 0  # inputs of the step now running
        self.accepted = 0  # predict() calls admitted
        self.answered = 0  # predict() calls that returned or raised after admission
        self.steps = 0

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="revmux-engine", daemon=True)
                self._thread.start()

    @property
    def ready(self) -> bool:
        """Started and accepting work."""
        return self._thread is not None and self._thread.is_alive() and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    def begin_drain(self) -> None:
        """Stop intake (new requests get Draining) and launch what is queued without waiting for partners."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until nothing is queued, running, or awaiting its answer; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self.batcher.depth and not self._in_flight and self.accepted == self.answered,
                timeout_s,
            )

    def stop(self, timeout_s: float | None = None) -> bool:
        """Drain, then end the worker thread; True when every accepted request was answered in time."""
        self.begin_drain()
        idle = self.wait_idle(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        return idle

    # ---- intake ---------------------------------------------------------------------------------
    def submit(
        self, items: Sequence[Item], *, truncate: bool = True, debug: bool = False, tenant: str | None = None
    ) -> list[Future]:
        """Queue `items` (all or none); one future per item, resolved with an Output or an error."""
        return self._admit(items, truncate=truncate, debug=debug, track=False, tenant=tenant)

    def _admit(
        self, items: Sequence[Item], *, truncate: bool, debug: bool, track: bool, tenant: str | None = None
    ) -> list[Future]:
        if self._thread is None:
            raise Draining("the engine is not started; call engine.start() (the app's lifespan does).")
        if self._draining:
            raise Draining(
                "the server is draining (shutting down) and accepts no new requests; retry elsewhere."
            )
        encoded = []
        for i, item in enumerate(items):
            try:
                encoded.append(
                    self.runner.tokenize(item.text, item.text_pair, truncate=truncate, debug=debug)
                )
            except RevmuxError as exc:
                raise (type(exc)(f"inputs[{i}]: {exc}") if len(items) > 1 else exc) from None
        now = self.clock()
        deadline = now + self.config.request_timeout_ms / 1000
        reqs = [
            Request(n_tokens=e.n_tokens, arrival_s=now, deadline_s=deadline, payload=e, tenant=tenant)
            for e in encoded
        ]
        with self._cond:
            if self._draining:
                raise Draining("the server is draining (shutting down) and accepts no new requests.")
            self.batcher.add(reqs, now)
            self.accepted += int(track)
            self.metrics.queue_size.set(self.batcher.depth)
            self._cond.notify_all()
        return [r.future for r in reqs]

    async def predict(
        self, items: Sequence[Item], *, truncate: bool = True, debug: bool = False, tenant: str | None = None
    ) -> list[Output]:
        """The Outputs of `items` in order, or the first error; DeadlineExceeded past request_timeout_ms.
        `tenant` names the sender: with isolation "tenant" its inputs share composites only with its own."""
        start = self.clock()
        # tokenization runs off the event loop: a large batch must not stall other connections
        futures = await asyncio.to_thread(
            self._admit, items, truncate=truncate, debug=debug, track=True, tenant=tenant
        )
        try:
            timeout = max(0.0, start + self.config.request_timeout_ms / 1000 - self.clock())
            waits = [asyncio.wrap_future(f) for f in futures]
            try:
                return list(await asyncio.wait_for(asyncio.gather(*waits), timeout))
            except asyncio.TimeoutError:
                raise DeadlineExceeded(
                    f"no answer within request_timeout_ms={self.config.request_timeout_ms:g}; the server is busy. "
                    "Retry, or raise --request-timeout-ms."
                ) from None
        finally:
            for f in futures:
                f.cancel()  # drops inputs still queued; no-op for running or done ones
            with self._cond:
                self.answered += 1
                self._cond.notify_all()

    # ---- the worker thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = self.clock()
                    step = self.batcher.schedule(now, force=self._draining)
                    self.metrics.queue_size.set(self.batcher.depth)
                    if step is not None:
                        self._in_flight = len(step)
                        break
                    self._cond.notify_all()  # wake wait_idle: expired or cancelled inputs may have left
                    if self._stopping:
                        return
                    self._cond.wait(self.batcher.next_launch_s(now))
            try:
                self._execute(step)
            except BaseException as exc:  # never let the worker die: fail the step's requests
                log.error("step failed: %s", type(exc).__name__)  # no message: it may quote an input
                log.debug("step failure", exc_info=True)
                for req in step.requests:
                    if not req.future.done():
                        req.future.set_exception(RunnerContractError("the step failed inside the server."))
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _execute(self, step: Step) -> None:
        m = self.metrics
        t0 = self.clock()
        for req in step.requests:
            m.queue_duration.observe(max(0.0, t0 - req.arrival_s))
        for g in step.groups:
            m.group_width.observe(g.width)
            for req in g.requests:
                m.tenant_inputs.labels(tenant=m.tenant_label(req.tenant), width=str(g.width)).inc()
        m.forward_batch_size.observe(len(step))
        try:
            results = self.runner.run(step.groups)
        except BaseException as exc:  # anything the runner raises fails this step's requests, not the worker
            log.warning("runner failed on a step of %d inputs: %s", len(step), type(exc).__name__)
            if not isinstance(
                exc, Exception
            ):  # e.g. a BaseException from native code: never hand it to asyncio
                exc = RunnerContractError("the step failed inside the server.")
            results = {r.id: exc for r in step.requests}
        m.inference_duration.observe(max(0.0, self.clock() - t0))
        self.steps += 1
        group_of = {r.id: f"{self.steps}.{gi}" for gi, g in enumerate(step.groups) for r in g.requests}
        ids = {r.id for r in step.requests}
        if set(results) - ids:
            log.warning("runner returned %d outputs for requests it was not given", len(set(results) - ids))
        for req in step.requests:
            out = results.get(req.id)
            if out is None:
                out = RunnerContractError("the runner returned no output for this input; retry the request.")
            if isinstance(out, BaseException):
                req.future.set_exception(out)
            else:
                out.group_id = group_of[req.id]
                if out.fallback:
                    m.fallback.inc()
                if out.fallback_failed:
                    m.fallback_failed.inc()
                req.future.set_result(out)

    # ---- facts ----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The runner's facts plus the batching knobs and the width policy's thresholds."""
        from revmux import __version__

        c = self.config
        knobs = {
            k: v
            for k, v in c.to_dict().items()
            if k not in ("host", "port", "api_key", "device", "threads", "log_level", "widths")
        }
        return {
            **self.runner.info(),
            "version": __version__,
            "width_thresholds": getattr(self.policy, "thresholds", None),
            "batching": knobs,
        }


def format_scores(
    logits: Sequence[float], labels: Sequence[str], *, top_k: int | None = 1, raw_scores: bool = False
) -> list[dict[str, Any]]:
    """Pipeline-shaped scores: softmax (sigmoid for one label) or raw logits, highest first, top_k of them."""
    if raw_scores:
        scores = list(logits)
    elif len(logits) == 1:
        scores = [1.0 / (1.0 + math.exp(-logits[0]))]
    else:
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        total = sum(exps)
        scores = [e / total for e in exps]
    names = list(labels) if len(labels) == len(scores) else [f"LABEL_{i}" for i in range(len(scores))]
    rows = sorted(
        ({"label": name, "score": float(s)} for name, s in zip(names, scores, strict=True)),
        key=lambda r: r["score"],
        reverse=True,
    )
    return rows if top_k is None else rows[:top_k]
