"""The HTTP front: a thin FastAPI app over an Engine, with TEI / pipeline request and response shapes.

What it is: `create_app(engine, config)` with POST /predict, GET /health, /ready, /info, /metrics.
The engine is started and drained by the app's lifespan (no globals). /predict takes
`{"inputs": X, "top_k": 1 | null, "raw_scores": false, "truncate": true, "debug": false}` where X is
a string, a pair `{"text", "text_pair"}`, or a list of those (a batch; a flat list of two strings is a
batch of two, never a pair). It answers `[{"label", "score"}, ...]` per input (a list of those for a
batch). With `"debug": true` (or header `X-Revmux-Debug: 1`) it answers
`{"result": <that>, "debug": {"request_id", "items": [{"input_sha256", "width", "group", "fallback",
"fallback_failed"}]}}` (`group`: the composite the input shared, "step.index"; with --isolation tenant
only requests of the sender's own tenant share it), where input_sha256 is the hash of the token ids the server made of that input
at admission (contract.token_hash): which input was answered, not a proof that the demux swapped
nothing (that is tested under load against N = 1 answers).
Errors are JSON `{"error", "error_type"}`: 422 bad input (also unknown fields and a body that is not
UTF-8 or not JSON), 413 body or batch too large, 429 + Retry-After queue full, 504 deadline, 401 bad
or missing bearer token when an API key is set (/health and /ready stay open), 503 draining.
A client that disconnects mid-request has its queued inputs dropped; nothing of a request's text is
logged or used as a metric label.
`parse_predict` and `predict_response` hold the request and response shapes, for any front to reuse.
What it is not: the batching logic (engine.py) or the process (server.py runs uvicorn).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from revmux.errors import InputError
from revmux.serve.config import ServeConfig
from revmux.serve.contract import Output
from revmux.serve.engine import Engine, Item, format_scores
from revmux.serve.errors import Draining, PayloadTooLarge, QueueFull, ServeError, Unauthorized, status_of
from revmux.serve.tenants import Tenants

log = logging.getLogger("revmux.serve")
FIELDS = ("inputs", "top_k", "raw_scores", "truncate", "debug")
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"; never reaches the client


def create_app(engine: Engine, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving `engine`; its lifespan starts the engine and drains it on shutdown."""
    from revmux import __version__

    config = config or engine.config
    metrics = engine.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        await asyncio.to_thread(engine.stop, config.drain_timeout_s)

    app = FastAPI(
        title="revmux",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine = engine

    tenants = Tenants.from_config(config)

    def authorize(request: Request) -> None:
        tenants.authorize(request.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "error_type": "NotFound"}, status_code=exc.status_code)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if engine.ready:
            return JSONResponse({"status": "ready"})
        why = "draining: the server is shutting down" if engine.draining else "the engine is not started"
        return _error(Draining(why))

    @app.get("/info")
    async def info(request: Request) -> JSONResponse:
        try:
            authorize(request)
        except ServeError as exc:
            return _error(exc)
        return JSONResponse(engine.info())

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        try:
            authorize(request)
        except ServeError as exc:
            return _error(exc)
        return Response(metrics.render(), media_type=metrics.content_type)

    _add_predict(app, engine, config, tenants)
    return app


def _add_predict(app: FastAPI, engine: Engine, config: ServeConfig, tenants: Tenants) -> None:
    """POST /predict: authorize and name the tenant, parse, queue, await the answers, count the outcome."""
    metrics = engine.metrics

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        request_id = _request_id(request)
        status = 500
        try:
            tenant = tenants.tenant_of(request.headers)
            if engine.draining:
                raise Draining("the server is draining (shutting down) and accepts no new requests.")
            body = await _read_body(request, config.max_payload_bytes)
            parsed = parse_predict(body, max_batch_size=config.max_batch_size)
            debug = parsed["debug"] or request.headers.get("x-revmux-debug", "") in ("1", "true")
            task = asyncio.ensure_future(
                engine.predict(parsed["items"], truncate=parsed["truncate"], debug=debug, tenant=tenant)
            )
            outputs = await _unless_disconnected(task, request)
            if outputs is None:
                status = CLIENT_CLOSED
                return Response(status_code=CLIENT_CLOSED)
            result = predict_response(outputs, parsed, engine.runner.label_names, request_id, debug=debug)
            status = 200
            return JSONResponse(result, headers={"x-request-id": request_id})
        except ClientDisconnect:  # gone while sending its body: nothing was queued
            status = CLIENT_CLOSED
            return Response(status_code=CLIENT_CLOSED)
        except (ServeError, InputError) as exc:
            status = status_of(exc)[0]
            _count_rejection(metrics, exc)
            return _error(exc, request_id)
        except Exception as exc:  # a bug: answer 500 without details, log only the type
            log.error("predict failed: %s", type(exc).__name__)  # no message: it may quote the input
            log.debug("predict failure", exc_info=True)
            return _error(RuntimeError("internal error; see the server log."), request_id)
        finally:
            metrics.requests.labels(status=str(status)).inc()
            metrics.request_duration.observe(time.perf_counter() - t0)


def predict_response(
    outputs: list[Output], parsed: dict[str, Any], labels: list[str], request_id: str, *, debug: bool
) -> Any:
    """The /predict answer: per input, pipeline-shaped scores; a list of those for a batch; with debug,
    {"result": that, "debug": {"request_id", "items": [{"input_sha256", "width", "fallback", "fallback_failed"}]}}."""
    rows = [
        format_scores(o.logits, labels, top_k=parsed["top_k"], raw_scores=parsed["raw_scores"])
        for o in outputs
    ]
    result: Any = rows if parsed["batch"] else rows[0]
    if not debug:
        return result
    items = [
        {
            "input_sha256": o.input_hash,
            "width": o.width,
            "group": o.group_id,
            "fallback": o.fallback,
            "fallback_failed": o.fallback_failed,
        }
        for o in outputs
    ]
    return {"result": result, "debug": {"request_id": request_id, "items": items}}


def parse_predict(body: bytes, *, max_batch_size: int) -> dict[str, Any]:
    """The /predict body as {items, batch, top_k, raw_scores, truncate, debug}, or InputError / PayloadTooLarge."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError("the request body is not valid UTF-8; send UTF-8 encoded JSON.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"the request body is not valid JSON ({exc.msg} at position {exc.pos}).") from None
    if not isinstance(data, dict):
        raise InputError(
            f'the body must be a JSON object like {{"inputs": "text"}}, got {type(data).__name__}.'
        )
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InputError(f"unknown field(s) {unknown}; /predict takes {', '.join(FIELDS)}.")
    if "inputs" not in data:
        raise InputError('the body has no "inputs"; send a string, a {"text", "text_pair"} pair, or a list.')
    inputs = data["inputs"]
    batch = isinstance(inputs, list)
    raw = inputs if batch else [inputs]
    if not raw:
        raise InputError('"inputs" is an empty list; send at least one input.')
    if len(raw) > max_batch_size:
        raise PayloadTooLarge(
            f"the batch has {len(raw)} inputs, more than max_batch_size={max_batch_size}; split it.",
            reason="batch_too_large",
        )
    items = [_item(x, f"inputs[{i}]" if batch else "inputs") for i, x in enumerate(raw)]
    top_k = data.get("top_k", 1)
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise InputError(f'"top_k" must be an integer >= 1 or null (all labels), got {top_k!r}.')
    flags = {}
    for name, default in (("raw_scores", False), ("truncate", True), ("debug", False)):
        value = data.get(name, default)
        if not isinstance(value, bool):
            raise InputError(f'"{name}" must be true or false, got {value!r}.')
        flags[name] = value
    return {"items": items, "batch": batch, "top_k": top_k, **flags}


def _item(x: Any, where: str) -> Item:
    if isinstance(x, str):
        if not x.strip():
            raise InputError(f"{where} is empty; send non-empty text.")
        return Item(x)
    if isinstance(x, dict):
        extra = sorted(set(x) - {"text", "text_pair"})
        if extra:
            raise InputError(
                f'{where} has unknown key(s) {extra}; a pair is {{"text": ..., "text_pair": ...}}.'
            )
        for side in ("text", "text_pair"):
            if side not in x:
                raise InputError(f'{where} is a pair missing "{side}"; send both "text" and "text_pair".')
            if not isinstance(x[side], str) or not x[side].strip():
                raise InputError(f"{where}.{side} must be a non-empty string, got {type(x[side]).__name__}.")
        return Item(x["text"], x["text_pair"])
    raise InputError(f"{where} must be a string or a {{text, text_pair}} object, got {type(x).__name__}.")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or PayloadTooLarge as soon as it exceeds `limit` bytes (never buffered past it)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the body has {length} bytes, more than max_payload_bytes={limit}.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over max_payload_bytes={limit}.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _unless_disconnected(task: asyncio.Future, request: Request) -> Any:
    """The task's result, or None (task cancelled: queued inputs dropped) if the client disconnects first."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    return None


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    if given and len(given) <= 128 and given.isascii() and given.isprintable():
        return given
    return uuid.uuid4().hex


def _count_rejection(metrics: Any, exc: BaseException) -> None:
    reason = None
    if isinstance(exc, QueueFull):
        reason = "queue_full"
    elif isinstance(exc, Draining):
        reason = "draining"
    elif isinstance(exc, PayloadTooLarge):
        reason = exc.reason
    elif isinstance(exc, Unauthorized):
        reason = "unauthorized"
    elif isinstance(exc, InputError):
        reason = "invalid_input"
    if reason is not None:
        metrics.rejected.labels(reason=reason).inc()


def _error(exc: BaseException, request_id: str | None = None) -> JSONResponse:
    status, error_type = status_of(exc)
    headers = {"x-request-id": request_id} if request_id else {}
    if isinstance(exc, QueueFull):
        headers["retry-after"] = str(exc.retry_after_s)
    if isinstance(exc, Unauthorized):
        headers["www-authenticate"] = "Bearer"
    return JSONResponse({"error": str(exc), "error_type": error_type}, status_code=status, headers=headers)
