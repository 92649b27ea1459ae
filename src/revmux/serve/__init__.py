"""revmux serve: a multiplexing inference server. The engine is independent of HTTP.

Files, in data-flow order:
- config.py   ServeConfig: the knobs (docs/serving.md), from `--config serve.yaml` and flags.
- errors.py   serving errors, each with its HTTP status and error_type.
- batcher.py  bounded queue, N policy, length-aware groups, deadlines; plain Python, no torch.
- contract.py Encoded / Output / the Runner protocol between engine and runner (no torch).
- pack.py     an adapter pack: MuxModels for several N on one teacher, checked at start-up.
- runner.py   owns the models on one device; runs one step; one output per request; fallback.
- metrics.py  the revmux_* Prometheus collectors, a registry per server.
- engine.py   batcher + runner + a worker thread behind `submit` / async `predict`.
- http.py     create_app(engine, config): the FastAPI front (thin).
- server.py   build_engine + run_server: the `revmux serve` process, drain on SIGTERM.

Names are imported lazily, so `revmux.serve.batcher` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ServeConfig": "revmux.serve.config",
    "Batcher": "revmux.serve.batcher",
    "Request": "revmux.serve.batcher",
    "threshold_policy": "revmux.serve.batcher",
    "Engine": "revmux.serve.engine",
    "Item": "revmux.serve.engine",
    "ModelRunner": "revmux.serve.runner",
    "load_pack": "revmux.serve.pack",
    "create_app": "revmux.serve.http",
    "build_engine": "revmux.serve.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'revmux.serve' has no attribute {name!r}")
