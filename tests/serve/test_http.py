"""http.py on a fake runner: every endpoint, the payload shapes, and every error code with its JSON."""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest

from revmux.serve.config import ServeConfig
from revmux.serve.engine import Engine

from .fakes import FakeRunner, expected_logits
from .http_util import asgi_client, live_server

METRICS = (
    "revmux_requests_total",
    "revmux_request_duration_seconds",
    "revmux_queue_duration_seconds",
    "revmux_inference_duration_seconds",
    "revmux_queue_size",
    "revmux_forward_batch_size",
    "revmux_group_width",
    "revmux_fallback_total",
    "revmux_rejected_total",
)


def engine_with(runner: FakeRunner | None = None, **knobs) -> Engine:
    knobs.setdefault("max_queue_delay_ms", 1.0)
    return Engine(runner or FakeRunner(), ServeConfig(**knobs))


def run(coro):
    return asyncio.run(coro)


def score_of(text: str, pair: str | None = None) -> float:
    import math

    a, b = expected_logits(text, pair)
    return math.exp(a) / (math.exp(a) + math.exp(b))


def test_health_ready_info_metrics():
    engine = engine_with()

    async def main():
        async with asgi_client(engine) as c:
            assert (await c.get("/health")).json() == {"status": "ok"}
            assert (await c.get("/ready")).status_code == 200
            info = (await c.get("/info")).json()
            assert info["widths"] == [1, 2, 4] and info["labels"] == ["neg", "pos"] and info["version"]
            assert info["batching"]["max_queue_delay_ms"] == 1.0 and "api_key" not in info["batching"]
            await c.post("/predict", json={"inputs": "hello"})
            r = await c.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            return r.text

    text = run(main())
    for name in METRICS:
        assert name in text
    assert 'revmux_requests_total{status="200"} 1.0' in text


def test_predict_shapes_single_pair_batch_top_k_raw_scores():
    engine = engine_with()

    async def main():
        async with asgi_client(engine) as c:
            post = lambda body: c.post("/predict", json=body)  # noqa: E731
            single = (await post({"inputs": "hello"})).json()
            assert single == [{"label": "neg", "score": pytest.approx(score_of("hello"))}]
            pair = (await post({"inputs": {"text": "ab", "text_pair": "cd"}})).json()
            assert pair[0]["score"] == pytest.approx(score_of("ab", "cd"))
            batch = (await post({"inputs": ["a", {"text": "b", "text_pair": "c"}, "dd"]})).json()
            assert [row[0]["score"] for row in batch] == pytest.approx(
                [score_of("a"), score_of("bc"), score_of("dd")]
            )
            two = (
                await post({"inputs": ["first", "second"]})
            ).json()  # a flat list of two: a batch, not a pair
            assert len(two) == 2 and two[0][0]["score"] == pytest.approx(score_of("first"))
            every = (await post({"inputs": "hey", "top_k": None})).json()
            assert [r["label"] for r in every] == ["neg", "pos"]
            raw = (await post({"inputs": "hey", "raw_scores": True, "top_k": None})).json()
            assert raw == [{"label": "neg", "score": 3.0}, {"label": "pos", "score": 0.0}]
            r = await c.post(
                "/predict", json={"inputs": "hey", "debug": True}, headers={"x-request-id": "client-7"}
            )
            dbg = r.json()
            assert r.headers["x-request-id"] == "client-7" and dbg["debug"]["request_id"] == "client-7"
            assert dbg["result"][0]["label"] == "neg" and dbg["debug"]["items"][0]["width"] == 1
            header = (await c.post("/predict", json={"inputs": "x"}, headers={"x-revmux-debug": "1"})).json()
            assert "debug" in header

    run(main())


BAD_INPUTS = [
    (b'{"inputs": ""}', "empty"),
    (b'{"inputs": "   "}', "empty"),
    (b'{"inputs": 3}', "must be a string"),
    (b'{"inputs": ["ok", 3]}', "inputs[1]"),
    (b'{"inputs": [["nested"]]}', "inputs[0]"),
    (b'{"inputs": []}', "empty list"),
    (b'{"inputs": {"text": "a"}}', 'missing "text_pair"'),
    (b'{"inputs": {"text_pair": "a"}}', 'missing "text"'),
    (b'{"inputs": {"text": "a", "text_pair": ""}}', "non-empty"),
    (b'{"inputs": {"text": "a", "text_pair": "b", "extra": 1}}', "unknown key"),
    (b'{"inputs": "a", "temperature": 1}', "unknown field"),
    (b'{"text": "a"}', "unknown field"),
    (b"{}", 'no "inputs"'),
    (b'{"inputs": "a", "top_k": 0}', "top_k"),
    (b'{"inputs": "a", "top_k": "1"}', "top_k"),
    (b'{"inputs": "a", "top_k": true}', "top_k"),
    (b'{"inputs": "a", "raw_scores": "yes"}', "raw_scores"),
    (b'{"inputs": "a", "truncate": 1}', "truncate"),
    (b'["a", "b"]', "JSON object"),
    (b'{"inputs": "caf\xe9"}', "UTF-8"),
    (b'{"inputs": ', "not valid JSON"),
    (b'{"inputs": "BOOM"}', "tokenizer"),
]


@pytest.mark.parametrize(("body", "needle"), BAD_INPUTS)
def test_bad_input_is_422_with_a_json_error(body, needle):
    engine = engine_with()

    async def main():
        async with asgi_client(engine) as c:
            r = await c.post("/predict", content=body, headers={"content-type": "application/json"})
            return r.status_code, r.json()

    status, data = run(main())
    assert status == 422 and set(data) == {"error", "error_type"} and needle in data["error"]


def test_payload_and_batch_limits_are_413():
    engine = engine_with(max_payload_bytes=200, max_batch_size=3)

    async def main():
        async with asgi_client(engine) as c:
            big = await c.post("/predict", json={"inputs": "x" * 300})
            batch = await c.post("/predict", json={"inputs": ["a", "b", "c", "d"]})
            ok = await c.post("/predict", json={"inputs": ["a", "b", "c"]})
            metrics = (await c.get("/metrics")).text
            return big, batch, ok, metrics

    big, batch, ok, metrics = run(main())
    assert big.status_code == 413 and "max_payload_bytes=200" in big.json()["error"]
    assert batch.status_code == 413 and "max_batch_size=3" in batch.json()["error"]
    assert ok.status_code == 200
    assert 'revmux_rejected_total{reason="payload_too_large"} 1.0' in metrics
    assert 'revmux_rejected_total{reason="batch_too_large"} 1.0' in metrics


def test_queue_full_is_429_with_retry_after_then_recovers():
    gate = threading.Event()
    engine = engine_with(FakeRunner(gate=gate), max_queue_size=2, max_batch_size=2, max_batch_groups=1)

    async def main():
        async with asgi_client(engine) as c:
            first = asyncio.ensure_future(c.post("/predict", json={"inputs": "running"}))
            await asyncio.to_thread(engine.runner.started.wait, 5)
            queued = asyncio.ensure_future(c.post("/predict", json={"inputs": ["a", "b"]}))
            await asyncio.sleep(0.05)
            full = await c.post("/predict", json={"inputs": "one too many"})
            gate.set()
            answers = [await first, await queued]
            later = await c.post("/predict", json={"inputs": "later"})
            return full, answers, later, (await c.get("/metrics")).text

    full, answers, later, metrics = run(main())
    assert full.status_code == 429 and full.headers["retry-after"] == "1"
    assert full.json()["error_type"] == "Overloaded"
    assert [a.status_code for a in answers] == [200, 200] and later.status_code == 200
    assert 'revmux_rejected_total{reason="queue_full"} 1.0' in metrics


def test_deadline_is_504_while_the_model_is_busy():
    engine = engine_with(FakeRunner(delay_s=0.5), request_timeout_ms=100.0)

    async def main():
        async with asgi_client(engine) as c:
            return await c.post("/predict", json={"inputs": "slow"})

    r = run(main())
    assert r.status_code == 504 and r.json()["error_type"] == "Timeout"


def test_api_key_guards_everything_but_health_and_ready():
    engine = engine_with(api_key="s3cret")

    async def main():
        async with asgi_client(engine) as c:
            out = {
                "none": await c.post("/predict", json={"inputs": "a"}),
                "wrong": await c.post(
                    "/predict", json={"inputs": "a"}, headers={"authorization": "Bearer nope"}
                ),
                "right": await c.post(
                    "/predict", json={"inputs": "a"}, headers={"authorization": "Bearer s3cret"}
                ),
                "info": await c.get("/info"),
                "metrics": await c.get("/metrics"),
                "health": await c.get("/health"),
                "ready": await c.get("/ready"),
            }
            return {k: v.status_code for k, v in out.items()}, out["none"]

    codes, none = run(main())
    assert codes == {
        "none": 401,
        "wrong": 401,
        "right": 200,
        "info": 401,
        "metrics": 401,
        "health": 200,
        "ready": 200,
    }
    assert none.headers["www-authenticate"] == "Bearer" and none.json()["error_type"] == "Unauthorized"


def test_draining_is_503_on_predict_and_ready():
    engine = engine_with()

    async def main():
        async with asgi_client(engine) as c:
            engine.begin_drain()
            return await c.post("/predict", json={"inputs": "a"}), await c.get("/ready")

    predict, ready = run(main())
    assert predict.status_code == 503 and ready.status_code == 503
    assert "draining" in predict.json()["error"] and "draining" in ready.json()["error"]


def test_unknown_route_and_method_are_json_errors():
    async def main():
        async with asgi_client(engine_with()) as c:
            return await c.get("/nope"), await c.get("/predict")

    missing, method = run(main())
    assert missing.status_code == 404 and set(missing.json()) == {"error", "error_type"}
    assert method.status_code == 405


def test_one_bad_request_fails_alone_among_concurrent_partners():
    engine = engine_with(width_thresholds={2: 0, 4: 0}, max_queue_delay_ms=20.0)

    async def main():
        async with asgi_client(engine) as c:
            bodies = [
                {"inputs": "good one"},
                {"inputs": "BOOM bad"},
                {"inputs": "FAIL bad"},
                {"inputs": "good two"},
            ]
            return await asyncio.gather(*(c.post("/predict", json=b) for b in bodies))

    good1, boom, fail, good2 = run(main())
    assert (boom.status_code, fail.status_code) == (422, 500)
    assert good1.json()[0]["score"] == pytest.approx(score_of("good one"))
    assert good2.json()[0]["score"] == pytest.approx(score_of("good two"))


def test_a_disconnected_client_does_not_stall_its_group():
    gate = threading.Event()
    engine = engine_with(FakeRunner(gate=gate), max_batch_groups=1)
    with live_server(engine) as url:

        async def main():
            async with httpx.AsyncClient(base_url=url) as c:
                first = asyncio.ensure_future(c.post("/predict", json={"inputs": "first"}))
                await asyncio.to_thread(engine.runner.started.wait, 5)
                with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
                    await c.post("/predict", json={"inputs": "gone"}, timeout=0.3)
                await asyncio.sleep(0.2)
                gate.set()
                return await first, await c.post("/predict", json={"inputs": "after"}, timeout=10)

        first, after = run(main())
        assert first.status_code == 200 and after.status_code == 200
        assert "gone" not in engine.runner.seen_texts()
        metrics = engine.metrics.render().decode()
        assert 'revmux_requests_total{status="499"} 1.0' in metrics


def test_no_request_text_in_logs_or_metric_labels(caplog):
    engine = engine_with()
    secret = "my-private-diagnosis-1234"

    async def main():
        async with asgi_client(engine) as c:
            await c.post("/predict", json={"inputs": secret})
            await c.post("/predict", json={"inputs": [secret, "BOOM " + secret]})
            await c.post("/predict", json={"inputs": "FAIL " + secret})
            return (await c.get("/metrics")).text

    with caplog.at_level(logging.INFO):
        metrics = run(main())
    assert secret not in caplog.text and secret not in metrics
