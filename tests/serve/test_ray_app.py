"""The Ray Serve front (serve/ray_app.py): its arguments are checked before anything is deployed, and two
replicas of the tiny pack on a local Ray answer 40 concurrent /predict requests (singles, pairs, batches)
through Ray's proxy on 127.0.0.1 exactly as one process does, each answer for its own request, with
traffic reaching both replicas. Skipped only when ray is not installed (pip install "revmux[ray]")."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from revmux.errors import ConfigError  # noqa: E402
from revmux.serve import ray_app  # noqa: E402
from revmux.serve.config import ServeConfig  # noqa: E402
from revmux.serve.server import build_engine  # noqa: E402

from .http_util import asgi_client  # noqa: E402

WORDS = "the a film plot cast great dull funny slow moving superb awful not quite bad good story".split()


def test_arguments_are_typed_and_checked_before_deploying(pack_dir):
    config, sources, options = ray_app.parse_args(
        {
            "pack": str(pack_dir),
            "widths": "1,2",
            "max_queue_delay_ms": "2",
            "num_replicas": "2",
            "num_cpus": "0.5",
        }
    )
    assert config.widths == [1, 2] and config.max_queue_delay_ms == 2.0
    assert sources == {"adapter": None, "pack": str(pack_dir.resolve()), "model": None}
    assert (options.num_replicas, options.num_cpus) == (2, 0.5)
    fixed = ray_app.deployment_options(config, options)
    assert fixed["num_replicas"] == 2 and fixed["ray_actor_options"] == {"num_cpus": 0.5}
    assert fixed["max_ongoing_requests"] == config.max_queue_size  # the engine, not Ray, answers 429
    scaled = ray_app.deployment_options(config, ray_app.RayOptions(num_replicas=2, max_replicas=4))
    assert scaled["autoscaling_config"] == {
        "min_replicas": 2,
        "max_replicas": 4,
        "target_ongoing_requests": 64,
    }
    assert "num_replicas" not in scaled
    bad = [
        ({"pack": str(pack_dir), "replicas": "2"}, "unknown argument"),
        ({"pack": str(pack_dir), "adapter": str(pack_dir / "n2")}, "exactly one of"),
        ({"pack": str(pack_dir), "num_replicas": "0"}, "num_replicas must be an integer >= 1"),
        ({"pack": str(pack_dir), "max_replicas": "1", "num_replicas": "2"}, "max_replicas=1 is below"),
        ({"pack": str(pack_dir), "max_queue_delay_ms": "-1"}, "--max-queue-delay-ms"),
    ]
    for args, message in bad:
        with pytest.raises(ConfigError, match=message):
            ray_app.build_app(args)


@pytest.fixture(scope="module")
def ray_url():
    """A local Ray (2 CPUs, no dashboard) with Serve's proxy on a free 127.0.0.1 port; always shut down."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        with socket.socket() as s:  # after ray.init: Ray's own agents have taken their ports (52365...)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _bodies() -> list[dict]:
    sentence = lambda i, n: " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(n))  # noqa: E731
    bodies = []
    for i in range(40):
        if i % 4 == 0:
            inputs = {"text": sentence(i, 5), "text_pair": sentence(i + 1, 3)}
        elif i % 4 == 1:
            inputs = [sentence(i, 2 + i % 9), sentence(i + 2, 4), sentence(i + 3, 1)]
        else:
            inputs = sentence(i, 1 + i % 12)
        bodies.append({"inputs": inputs, "debug": True, "top_k": None})
    return bodies


def test_two_replicas_answer_concurrent_requests_like_one_process(ray_url, pack_dir):
    args = {"pack": str(pack_dir), "widths": "1", "num_replicas": "2", "num_cpus": "0.5"}
    args |= {"max_queue_delay_ms": "2", "drain_timeout_s": "5", "threads": "1"}
    serve.run(ray_app.build_app(args), name=ray_app.APP_NAME, route_prefix="/")
    bodies = _bodies()

    async def over_ray():
        async with httpx.AsyncClient(base_url=ray_url, timeout=60) as c:
            ready, info = await c.get("/ready"), await c.get("/info")
            answers = await asyncio.gather(*(c.post("/predict", json=b) for b in bodies))
            bad = await c.post("/predict", json={"inputs": "  "})
            return ready, info, answers, bad

    async def in_process():
        engine = build_engine(ServeConfig(widths=[1], threads=1), pack=pack_dir)
        async with asgi_client(engine) as c:
            return [(await c.post("/predict", json=b)).json() for b in bodies]

    ready, info, answers, bad = asyncio.run(over_ray())
    want = asyncio.run(in_process())
    assert ready.status_code == 200 and info.json()["widths"] == [1]
    assert bad.status_code == 422 and bad.json()["error_type"] == "Validation"
    assert [r.status_code for r in answers] == [200] * len(bodies)
    for response, expected in zip(answers, want, strict=True):
        got = response.json()

        def same(items):  # group ids number each process's own steps
            return [{k: v for k, v in item.items() if k != "group"} for item in items]

        assert same(got["debug"]["items"]) == same(expected["debug"]["items"])  # hashes, N = 1, no fallback
        rows = got["result"] if isinstance(got["result"][0], list) else [got["result"]]
        rows_want = expected["result"] if isinstance(expected["result"][0], list) else [expected["result"]]
        for row, row_want in zip(rows, rows_want, strict=True):
            assert [s["label"] for s in row] == [s["label"] for s in row_want]
            assert [s["score"] for s in row] == pytest.approx([s["score"] for s in row_want], abs=1e-5)
    replicas = {r.headers[ray_app.REPLICA_HEADER] for r in answers}

    async def more_rounds(
        seen: set[str],
    ) -> set[str]:  # a replica the router learns of late gets later rounds
        async with httpx.AsyncClient(base_url=ray_url, timeout=60) as c:
            for _ in range(10):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.5)
                more = await asyncio.gather(*(c.post("/predict", json=b) for b in bodies))
                seen |= {r.headers[ray_app.REPLICA_HEADER] for r in more}
        return seen

    replicas = asyncio.run(more_rounds(replicas))
    assert len(replicas) == 2, f"all traffic went to {replicas}"
