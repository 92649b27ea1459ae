"""Correctness under load: 64 concurrent clients against a live server on 127.0.0.1, singles, pairs and
batches mixed, each request carrying a client id. Every response arrives exactly once for its own request:
at N = 1 every label equals transformers' pipeline("text-classification") on the teacher; with adaptive N
every answer echoes the hash of the token ids that produced it. CI-sized (REVMUX_LOAD_REQUESTS, default
1024 per run); benchmarks/load.py runs the full 10,000."""

from __future__ import annotations

import asyncio
import os
import random
import ssl
from collections import Counter

import httpx
import pytest
import transformers

from revmux.serve.config import ServeConfig
from revmux.serve.contract import token_hash
from revmux.serve.server import build_engine

from .http_util import live_server

CLIENTS = 64
REQUESTS = int(os.environ.get("REVMUX_LOAD_REQUESTS", "1024"))
WORDS = (
    "the a film plot cast great dull funny slow moving superb awful not quite bad good story ending".split()
)


def make_pool(seed: int = 0) -> list[tuple[str, str | None]]:
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 24)))  # noqa: E731
    return [(sentence(), None) for _ in range(48)] + [(sentence(), sentence()) for _ in range(16)]


def make_plan(pool, n_requests: int, seed: int = 1) -> dict[str, list[tuple[str, str | None]]]:
    """request id -> its inputs; a third singles, a third pairs, a third batches of 2-6 mixed inputs."""
    rng = random.Random(seed)
    singles, pairs = [p for p in pool if p[1] is None], [p for p in pool if p[1] is not None]
    plan = {}
    for i in range(n_requests):
        kind = i % 3
        if kind == 0:
            inputs = [rng.choice(singles)]
        elif kind == 1:
            inputs = [rng.choice(pairs)]
        else:
            inputs = [rng.choice(pool) for _ in range(rng.randint(2, 6))]
        plan[f"c{i % CLIENTS}-r{i}"] = inputs
    return plan


def body_of(inputs, batch: bool) -> dict:
    wire = [t if p is None else {"text": t, "text_pair": p} for t, p in inputs]
    return {"inputs": wire if batch else wire[0], "debug": True, "top_k": None}


async def hammer(url: str, plan) -> dict[str, list[httpx.Response]]:
    """64 clients, each sending its share of the plan one request after another."""
    got: dict[str, list[httpx.Response]] = {rid: [] for rid in plan}
    ids = list(plan)

    tls = (
        ssl.create_default_context()
    )  # plain http on loopback; shared so 64 clients do not load CA files 64 times

    async def client(c: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, verify=tls) as http:  # one connection each
            for rid in ids[c::CLIENTS]:
                inputs = plan[rid]
                body = body_of(inputs, len(inputs) > 1)
                got[rid].append(await http.post("/predict", json=body, headers={"x-request-id": rid}))

    await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    return got


def check_every_answer_is_its_own(plan, got, tokenizer) -> list[list[dict]]:
    """Exactly one 200 per request id, echoing that id and the token hash of each of its inputs."""
    rows = []
    for rid, inputs in plan.items():
        assert len(got[rid]) == 1, rid
        r = got[rid][0]
        assert r.status_code == 200, (rid, r.text)
        assert r.headers["x-request-id"] == rid
        data = r.json()
        assert data["debug"]["request_id"] == rid
        result = data["result"] if len(inputs) > 1 else [data["result"]]
        assert len(result) == len(data["debug"]["items"]) == len(inputs)
        for (text, pair), item in zip(inputs, data["debug"]["items"], strict=True):
            ids = tokenizer(text, text_pair=pair, truncation=True, max_length=64)["input_ids"]
            assert item["input_sha256"] == token_hash(ids), rid
        rows.append(list(zip(inputs, result, data["debug"]["items"], strict=True)))
    return rows


@pytest.fixture(scope="module")
def pipeline_answers(teacher_dir):
    clf = transformers.pipeline("text-classification", model=str(teacher_dir), device="cpu")
    pool = make_pool()
    wire = [t if p is None else {"text": t, "text_pair": p} for t, p in pool]
    return {inp: out for inp, out in zip(pool, clf(wire, top_k=None), strict=True)}


def test_n1_under_load_equals_the_pipeline_on_the_teacher(pack_dir, pipeline_answers):
    config = ServeConfig(widths=[1], max_queue_delay_ms=2.0, max_batch_groups=32, max_queue_size=4096)
    engine = build_engine(config, pack=pack_dir)
    plan = make_plan(make_pool(), REQUESTS)
    with live_server(engine) as url:
        got = asyncio.run(hammer(url, plan))
    for answered in check_every_answer_is_its_own(plan, got, engine.runner.tokenizer):
        for inputs, scores, item in answered:
            want = pipeline_answers[inputs]
            assert item["width"] == 1
            assert [s["label"] for s in scores] == [w["label"] for w in want]
            assert [s["score"] for s in scores] == pytest.approx([w["score"] for w in want], abs=1e-5)
    assert engine.accepted == engine.answered == len(plan)


def test_adaptive_n_under_load_loses_and_swaps_nothing(pack_dir):
    config = ServeConfig(
        width_thresholds={2: 2, 4: 8}, max_queue_delay_ms=2.0, max_batch_groups=8, max_queue_size=4096
    )
    engine = build_engine(config, pack=pack_dir)
    plan = make_plan(make_pool(), REQUESTS, seed=2)
    with live_server(engine) as url:
        got = asyncio.run(hammer(url, plan))
    widths = Counter(
        item["width"]
        for answered in check_every_answer_is_its_own(plan, got, engine.runner.tokenizer)
        for *_, item in answered
    )
    assert widths[2] + widths[4] > 0, widths  # multiplexing did happen under load
    assert sum(widths.values()) == sum(len(v) for v in plan.values())
