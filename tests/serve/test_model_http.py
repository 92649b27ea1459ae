"""The HTTP front on the real tiny pack: /info names the adapters, and confidence fallback is answered at N = 1
and counted in revmux_fallback_total."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from revmux.serve.config import ServeConfig
from revmux.serve.server import build_engine

from .http_util import asgi_client


def test_info_names_the_teacher_and_every_adapter(pack_dir, teacher_dir):
    engine = build_engine(ServeConfig(), pack=pack_dir)

    async def main():
        async with asgi_client(engine) as c:
            return (await c.get("/info")).json()

    info = asyncio.run(main())
    assert info["widths"] == [1, 2, 4] and info["labels"] == ["neg", "neu", "pos"]
    assert info["backbone"] == teacher_dir.name and info["model_type"] == "bert"  # a name, never a path
    assert str(teacher_dir.parent) not in json.dumps(info)
    assert [(a["n"], a["k"], len(a["sha256"])) for a in info["adapters"]] == [(2, 1, 64), (4, 1, 64)]
    assert info["width_thresholds"] == {"1": 0, "2": 33, "4": 65} and info["version"]


def test_low_margin_answers_fall_back_to_n1_and_are_counted(pack_dir):
    config = ServeConfig(fallback_margin=1.0, widths=[1, 2], width_thresholds={2: 0}, max_queue_delay_ms=50.0)
    engine = build_engine(config, pack=pack_dir)
    texts = ["a fine film", "dull", "not bad at all", "superb acting"]

    async def main():
        async with asgi_client(engine) as c:
            r = await c.post(
                "/predict", json={"inputs": texts, "debug": True, "raw_scores": True, "top_k": None}
            )
            return r.json(), (await c.get("/metrics")).text

    data, metrics = asyncio.run(main())
    assert [(i["width"], i["fallback"]) for i in data["debug"]["items"]] == [(1, True)] * 4
    assert "revmux_fallback_total 4.0" in metrics
    tok = engine.runner.tokenizer
    with torch.inference_mode():
        enc = tok(texts, padding=True, return_tensors="pt")
        want = engine.runner.view.forward_unsplit(dict(enc))
    names = engine.runner.label_names
    for row, logits in zip(data["result"], want, strict=True):
        got = {s["label"]: s["score"] for s in row}
        assert [got[n] for n in names] == pytest.approx(logits.tolist(), abs=1e-5)
