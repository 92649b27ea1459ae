"""`revmux serve --quantize`: every width runs on the one quantized backbone, adapters in fp32."""

from __future__ import annotations

import asyncio

import pytest
import torch

import revmux.serve.config as serve_config
from revmux.backbones.quantize import QUANTIZE_MODES, quantized_mode
from revmux.errors import ConfigError
from revmux.serve.config import ServeConfig
from revmux.serve.server import build_engine

from .http_util import asgi_client


def test_int8_serves_every_width_on_the_quantized_backbone(pack_dir):
    engine = build_engine(ServeConfig(quantize="int8", widths=[1, 2], width_thresholds={2: 0}), pack=pack_dir)
    runner = engine.runner
    assert quantized_mode(runner.view) == "int8"
    assert runner.pack.models  # N = 2 and 4
    for model in runner.pack.models.values():
        assert model.view is runner.view
        assert all(p.dtype == torch.float32 for p in model.mux.parameters())

    async def main():
        async with asgi_client(engine) as c:
            return (await c.post("/predict", json={"inputs": ["a fine film", "dull", "superb"]})).json()

    answers = asyncio.run(main())
    assert len(answers) == 3 and all(row[0]["label"] in ("neg", "neu", "pos") for row in answers)


def test_unknown_quantize_names_the_choices():
    assert serve_config.QUANTIZE_MODES == QUANTIZE_MODES  # spelled out there to keep torch out of the config
    with pytest.raises(ConfigError, match="--quantize must be one of none, int8, bf16, got 'int4'"):
        ServeConfig(quantize="int4")
