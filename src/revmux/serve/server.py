"""The `revmux serve` process: load the pack, build the engine, run uvicorn, drain on SIGTERM.

What it is: `build_engine(...)` (everything that can fail at start-up fails here, before a port is
bound: a bad path, mismatched adapters, a bad knob) and `run_server(engine, config)`. On the first
SIGTERM or SIGINT, /ready turns 503 and /predict answers 503, the engine launches what is queued
without waiting for partners, every accepted request is answered, and uvicorn then closes its
connections; the process exits 0 within drain_timeout_s. A second signal forces uvicorn's exit.
What it is not: the HTTP routes (http.py) or the CLI flags (revmux.cli).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import FrameType

import uvicorn

from revmux.serve.config import ServeConfig
from revmux.serve.engine import Engine

log = logging.getLogger("revmux.serve")


def build_engine(
    config: ServeConfig,
    *,
    adapter: str | Path | None = None,
    pack: str | Path | None = None,
    model: str | Path | None = None,
) -> Engine:
    """Load the adapters (one, or a pack) on their teacher and wrap them in an Engine (not started)."""
    from revmux.backbones.quantize import quantize_backbone
    from revmux.serve.pack import load_pack
    from revmux.serve.runner import ModelRunner

    loaded = load_pack(pack=pack, adapter=adapter, model=model, device=config.device)
    quantize_backbone(loaded.view, config.quantize)  # every width shares this view; adapters stay fp32
    runner = ModelRunner(
        loaded,
        max_length=config.max_length,
        fallback_margin=config.fallback_margin,
        fallback_max_per_step=config.fallback_max_per_step,
        widths=config.widths,
        threads=config.threads,
    )
    runner.warmup()
    return Engine(runner, config)


def run_server(engine: Engine, config: ServeConfig) -> dict[str, int]:
    """Serve until a signal, drain, and return {accepted, answered} request counts."""
    from revmux.serve.http import create_app

    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    log.setLevel(config.log_level.upper())
    uv_config = uvicorn.Config(
        create_app(engine, config),
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        access_log=config.log_level == "debug",  # access lines carry no text, but cost time under load
        timeout_graceful_shutdown=config.drain_timeout_s,
        lifespan="on",
    )
    server = DrainingServer(uv_config, engine, config.drain_timeout_s)
    widths = ", ".join(map(str, engine.runner.widths))
    log.info("revmux serve: widths {%s} on http://%s:%d", widths, config.host, config.port)
    server.run()
    return {"accepted": engine.accepted, "answered": engine.answered}


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains the engine before uvicorn shuts down."""

    def __init__(self, config: uvicorn.Config, engine: Engine, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.engine = engine
        self.drain_timeout_s = drain_timeout_s
        self._drain_started = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started:
            super().handle_exit(sig, frame)  # a second signal: uvicorn's own exit
            return
        self._drain_started = True
        threading.Thread(target=self._drain, args=(sig,), name="revmux-drain", daemon=True).start()

    def _drain(self, sig: int) -> None:
        """Stop intake, wait for every accepted request to be answered, then let uvicorn close connections."""
        t0 = time.monotonic()
        self.engine.begin_drain()  # here, not in the signal handler, which may interrupt the engine's lock
        log.info("signal %d: draining (no new work; %d inputs queued)", sig, self.engine.batcher.depth)
        idle = self.engine.wait_idle(self.drain_timeout_s)
        if not idle:
            log.warning("drain_timeout_s=%g passed with requests still open", self.drain_timeout_s)
        self.config.timeout_graceful_shutdown = max(0.5, self.drain_timeout_s - (time.monotonic() - t0))
        self.should_exit = True
