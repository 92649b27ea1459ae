"""Helpers to talk to a revmux app: in-process (ASGI, lifespan run) or a live uvicorn on 127.0.0.1."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn

from revmux.serve.engine import Engine
from revmux.serve.http import create_app


@contextlib.asynccontextmanager
async def asgi_client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in this process, with the app's lifespan (engine start and drain) run."""
    app = create_app(engine, engine.config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://revmux.test") as client:
            yield client


@contextlib.contextmanager
def live_server(engine: Engine) -> Iterator[str]:
    """uvicorn serving the engine's app on a free 127.0.0.1 port, in a thread; yields the base URL."""
    config = uvicorn.Config(create_app(engine, engine.config), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 20 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
