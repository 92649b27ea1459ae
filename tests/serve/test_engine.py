"""engine.py with a fake runner: answers in order and to their own request, failures alone, deadlines, drain."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from revmux.serve.config import ServeConfig
from revmux.serve.engine import Engine, Item, format_scores
from revmux.serve.errors import DeadlineExceeded, Draining, QueueFull, RunnerContractError, TokenizationError

from .fakes import FakeRunner, expected_logits


def make_engine(runner: FakeRunner | None = None, **knobs) -> Engine:
    knobs.setdefault("max_queue_delay_ms", 1.0)
    engine = Engine(runner or FakeRunner(), ServeConfig(**knobs))
    engine.start()
    return engine


def test_predict_answers_each_input_with_its_own_output_in_order():
    engine = make_engine(width_thresholds={2: 0, 4: 0}, max_batch_groups=4)
    texts = [f"text number {'x' * i}" for i in range(11)]

    async def main():
        return await asyncio.gather(*(engine.predict([Item(t), Item(t, "pair")]) for t in texts))

    results = asyncio.run(main())
    for t, (single, paired) in zip(texts, results, strict=True):
        assert single.logits == expected_logits(t) and paired.logits == expected_logits(t, "pair")
    assert {w for step in engine.runner.steps for w, _ in step} - {1}  # multiplexed groups did run
    assert engine.stop(2.0) and engine.accepted == engine.answered == len(texts)


def test_a_failing_tokenization_fails_alone_and_never_enters_the_queue():
    engine = make_engine(max_queue_delay_ms=20.0)

    async def main():
        return await asyncio.gather(
            engine.predict([Item("fine one")]),
            engine.predict([Item("BOOM here")]),
            engine.predict([Item("fine two")]),
            return_exceptions=True,
        )

    good1, bad, good2 = asyncio.run(main())
    assert isinstance(bad, TokenizationError)
    assert good1[0].logits == expected_logits("fine one") and good2[0].logits == expected_logits("fine two")
    assert "BOOM here" not in engine.runner.seen_texts()
    engine.stop(2.0)


def test_a_batch_names_the_failing_input():
    engine = make_engine()
    with pytest.raises(TokenizationError, match=r"inputs\[1\]"):
        asyncio.run(engine.predict([Item("ok"), Item("BOOM")]))
    engine.stop(2.0)


@pytest.mark.parametrize(("marker", "error"), [("DROP", RunnerContractError), ("FAIL", RuntimeError)])
def test_a_missing_or_failed_output_fails_only_its_request(marker, error):
    engine = make_engine(width_thresholds={2: 0}, widths=None, max_queue_delay_ms=20.0)

    async def main():
        return await asyncio.gather(
            engine.predict([Item("partner a")]),
            engine.predict([Item(f"{marker} me")]),
            engine.predict([Item("partner b")]),
            return_exceptions=True,
        )

    a, bad, b = asyncio.run(main())
    assert isinstance(bad, error)
    assert a[0].logits == expected_logits("partner a") and b[0].logits == expected_logits("partner b")
    engine.stop(2.0)


def test_the_deadline_fires_while_a_forward_pass_runs():
    engine = make_engine(FakeRunner(delay_s=0.6), request_timeout_ms=150.0)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="request_timeout_ms=150"):
        asyncio.run(engine.predict([Item("slow")]))
    assert time.monotonic() - t0 < 0.5  # did not wait for the 0.6 s forward pass
    engine.stop(3.0)


def test_a_cancelled_request_is_dropped_before_launch_and_nothing_stalls():
    gate = threading.Event()
    engine = make_engine(FakeRunner(gate=gate))

    async def main():
        first = asyncio.ensure_future(engine.predict([Item("first")]))
        await asyncio.to_thread(engine.runner.started.wait, 5)  # the first step is running, blocked
        gone = asyncio.ensure_future(engine.predict([Item("client went away")]))
        await asyncio.sleep(0.05)
        gone.cancel()  # what http.py does on a disconnect
        await asyncio.sleep(0.05)
        gate.set()
        after = await engine.predict([Item("after")])
        return await first, after

    first, after = asyncio.run(main())
    assert first[0].logits == expected_logits("first") and after[0].logits == expected_logits("after")
    assert "client went away" not in engine.runner.seen_texts()
    assert engine.stop(2.0)


def test_queue_full_then_recovers():
    gate = threading.Event()
    engine = make_engine(
        FakeRunner(gate=gate), max_queue_size=2, max_batch_size=2, max_batch_groups=1, widths=None
    )

    async def main():
        first = asyncio.ensure_future(engine.predict([Item("running")]))
        await asyncio.to_thread(engine.runner.started.wait, 5)
        queued = asyncio.ensure_future(engine.predict([Item("a"), Item("b")]))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await engine.predict([Item("one too many")])
        gate.set()
        await first, await queued
        return await engine.predict([Item("later")])

    assert asyncio.run(main())[0].logits == expected_logits("later")
    engine.stop(2.0)


def test_drain_refuses_new_work_and_answers_accepted_work():
    gate = threading.Event()
    engine = make_engine(FakeRunner(gate=gate), max_queue_delay_ms=10_000.0, max_batch_groups=2, widths=[1])

    async def main():
        running = asyncio.ensure_future(engine.predict([Item("in flight"), Item("a full pass")]))
        await asyncio.to_thread(engine.runner.started.wait, 5)
        queued = asyncio.ensure_future(engine.predict([Item("queued")]))  # would wait 10 s for partners
        await asyncio.sleep(0.01)
        engine.begin_drain()
        assert not engine.ready
        with pytest.raises(Draining):
            await engine.predict([Item("new")])
        gate.set()
        return await running, await queued

    running, queued = asyncio.run(main())
    assert queued[0].logits == expected_logits("queued")
    assert engine.wait_idle(2.0) and engine.stop(2.0)


def test_format_scores_matches_the_pipeline_shape():
    rows = format_scores([0.0, 2.0, 1.0], ["a", "b", "c"], top_k=None)
    assert [r["label"] for r in rows] == ["b", "c", "a"] and sum(r["score"] for r in rows) == pytest.approx(
        1.0
    )
    assert format_scores([0.0, 2.0], ["a", "b"]) == [{"label": "b", "score": pytest.approx(0.8808, abs=1e-4)}]
    assert format_scores([0.5, -1.0], ["a", "b"], raw_scores=True, top_k=None)[1] == {
        "label": "b",
        "score": -1.0,
    }
    assert format_scores([0.0], ["only"])[0]["score"] == pytest.approx(0.5)  # one label: sigmoid


class SlowTokenizer(FakeRunner):
    """Tokenization takes 3 ms per input, as a real tokenizer does on long texts."""

    def tokenize(self, text, pair=None, *, truncate=True, debug=False):
        time.sleep(0.003)
        return super().tokenize(text, pair, truncate=truncate, debug=debug)


def test_a_64_input_tokenization_does_not_block_the_event_loop():
    engine = make_engine(SlowTokenizer())
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        await asyncio.sleep(0.01)
        out = await engine.predict([Item(f"input {i}") for i in range(64)])  # >= 128 ms of tokenizing
        stop.set()
        await task
        return out

    out = asyncio.run(main())
    assert len(out) == 64
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(gaps) < 0.1, f"the event loop stalled for {max(gaps) * 1000:.0f} ms"
    engine.stop(2.0)


class Fatal(BaseException):
    """Not an Exception: what used to kill the worker thread."""


class DiesOnce(FakeRunner):
    def run(self, groups):
        if any("FATAL" in "".join(map(chr, r.payload.input_ids)) for g in groups for r in g.requests):
            raise Fatal()
        return super().run(groups)


def test_a_base_exception_in_the_runner_fails_its_step_and_the_worker_lives_on():
    engine = make_engine(DiesOnce())
    with pytest.raises(RunnerContractError):
        asyncio.run(engine.predict([Item("FATAL input")]))
    out = asyncio.run(engine.predict([Item("next request")]))  # the worker thread is still there
    assert out[0].logits == expected_logits("next request")
    assert engine.stop(2.0)
