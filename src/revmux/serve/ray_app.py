"""The Ray Serve front: the same Engine and the same FastAPI app as `revmux serve`, one Engine per replica.

What it is: `build_app(args) -> Application`, Ray's application builder, so
`serve run revmux.serve.ray_app:app pack=DIR num_replicas=2` (or a Serve config file whose
`import_path` is `revmux.serve.ray_app:app`) deploys it, and `run_ray(args)`, behind
`revmux serve --ray`, which starts Ray, deploys, and blocks until SIGTERM or SIGINT. Each replica
builds its own Engine (`server.build_engine`: load the pack, warm up) and serves
`http.create_app(engine)` through `@serve.ingress`, so /predict, /health, /ready, /info and
/metrics answer exactly as in one process, and the app's lifespan starts the engine and drains it
when Ray stops the replica. Every response carries `x-revmux-replica` (the replica that answered).

`args` holds `adapter` or `pack` (and `model`), `config` (a serve YAML), any ServeConfig knob, and
the deployment's own: `num_replicas` (fixed), or autoscaling between `min_replicas` (default:
num_replicas) and `max_replicas` on `target_ongoing_requests` per replica (Ray's queue-depth
signal; default 2 * max_batch_groups, so a replica reaches multiplexed widths before another is
added), `max_ongoing_requests` (default max_queue_size: the engine, not Ray, answers 429),
`num_cpus` (fractional allowed) and `num_gpus` per replica. Values may be strings (`key=value`
on the `serve run` line). host and port are the proxy's (serve.start), used by `run_ray` only.

What it is not: a second batcher or HTTP layer (Ray routes requests to replicas, each replica's
engine groups them), nor imported by any other module: it is the only one that imports ray
(`pip install "revmux[ray]"`). /metrics is per replica, as Ray's proxy answers from any one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import ray
    from ray import serve
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'revmux.serve.ray_app needs Ray Serve; install it with pip install "revmux[ray]".'
    ) from exc

from revmux.config import CONFIG_NAME, config_from_dict
from revmux.errors import CheckpointError, ConfigError, RevmuxError
from revmux.serve.config import ServeConfig

log = logging.getLogger("revmux.serve")
APP_NAME = "revmux"
REPLICA_HEADER = "x-revmux-replica"
SOURCES = ("adapter", "pack", "model", "config")


@dataclass
class RayOptions:
    """How the deployment is replicated and what each replica reserves (see the module docstring)."""

    num_replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None
    max_ongoing_requests: int | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_replicas", "min_replicas", "max_replicas", "max_ongoing_requests"):
            value, low = getattr(self, name), 0 if name == "min_replicas" else 1  # 0: scale to zero
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
        for name in ("target_ongoing_requests", "num_cpus", "num_gpus"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise ConfigError(f"{name} must be a number, got {value!r}.")
            if value is not None and (value < 0 or (value == 0 and name == "target_ongoing_requests")):
                raise ConfigError(f"{name} must be > 0 (num_cpus, num_gpus: >= 0), got {value!r}.")
        if self.max_replicas is None and self.min_replicas is not None:
            raise ConfigError(
                f"min_replicas={self.min_replicas} needs max_replicas (autoscaling); "
                "for a fixed count pass num_replicas."
            )
        if self.max_replicas is not None and self.max_replicas < self.floor:
            raise ConfigError(
                f"max_replicas={self.max_replicas} is below the autoscaling floor {self.floor} "
                "(min_replicas, else num_replicas); raise it."
            )

    @property
    def floor(self) -> int:
        """The fewest replicas when autoscaling: min_replicas, else num_replicas."""
        return self.num_replicas if self.min_replicas is None else self.min_replicas


def parse_args(args: dict[str, Any]) -> tuple[ServeConfig, dict[str, str | None], RayOptions]:
    """`args` (builder arguments, values possibly strings) -> (ServeConfig, sources, RayOptions), checked."""
    knob_names = {f.name for f in dataclasses.fields(ServeConfig)}
    option_names = {f.name for f in dataclasses.fields(RayOptions)}
    unknown = sorted(set(args) - knob_names - option_names - set(SOURCES))
    if unknown:
        raise ConfigError(
            f"revmux.serve.ray_app got unknown argument(s) {unknown}; it takes {', '.join(SOURCES)}, "
            f"the ServeConfig knobs ({', '.join(sorted(knob_names))}) and {', '.join(sorted(option_names))}."
        )
    knobs = {k: v for k, v in args.items() if k in knob_names}
    config = ServeConfig.from_yaml(args.get("config"), knobs)
    sources = {k: _path(args.get(k)) for k in ("adapter", "pack", "model")}
    if (sources["adapter"] is None) == (sources["pack"] is None):
        raise ConfigError(
            "pass exactly one of adapter=DIR (one adapter) or pack=DIR (adapters for several N)."
        )
    if sources["adapter"] is not None and not (Path(sources["adapter"]) / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"adapter={sources['adapter']} is not an adapter directory (no {CONFIG_NAME}); pass the "
            "directory written by `revmux train` (it must exist at this path on every Ray node)."
        )
    if sources["pack"] is not None and not Path(sources["pack"]).is_dir():
        raise CheckpointError(
            f"pack={sources['pack']} is not a directory; pass a directory of adapter directories "
            "(it must exist at this path on every Ray node)."
        )
    given = {k: v for k, v in args.items() if k in option_names and v is not None}
    options = config_from_dict(RayOptions, given, source="revmux.serve.ray_app", flag=lambda name: name)
    from revmux.serve.pack import check_pack  # one teacher and one request encoder, before anything deploys

    check_pack(pack=sources["pack"], adapter=sources["adapter"])
    return config, sources, options


def deployment_options(config: ServeConfig, options: RayOptions) -> dict[str, Any]:
    """Keyword arguments of `serve.deployment` for these knobs: replicas, autoscaling, resources."""
    num_gpus = options.num_gpus
    if num_gpus is None:
        num_gpus = 1 if config.device.startswith("cuda") else 0
    actor: dict[str, Any] = {"num_cpus": options.num_cpus}
    if num_gpus:
        actor["num_gpus"] = num_gpus
    result: dict[str, Any] = {
        "name": APP_NAME,
        "ray_actor_options": actor,
        "max_ongoing_requests": options.max_ongoing_requests or config.max_queue_size,
        "graceful_shutdown_timeout_s": config.drain_timeout_s,
    }
    if options.max_replicas is None:
        result["num_replicas"] = options.num_replicas
    else:
        result["autoscaling_config"] = {
            "min_replicas": options.floor,
            "max_replicas": options.max_replicas,
            "target_ongoing_requests": options.target_ongoing_requests or 2 * config.max_batch_groups,
        }
    return result


def build_app(args: dict[str, Any]) -> serve.Application:
    """The revmux deployment for `args` (checked here, before anything is deployed), ready to `serve.run`."""
    return _application(*parse_args(args))


app = build_app  # `serve run revmux.serve.ray_app:app pack=DIR ...` calls it with the key=value pairs


def _application(
    config: ServeConfig, sources: dict[str, str | None], options: RayOptions
) -> serve.Application:
    knobs = config.to_dict(redact=False)

    def build_asgi_app():  # runs inside each replica, when Ray starts it
        from revmux.serve.http import create_app
        from revmux.serve.server import build_engine

        replica_config = ServeConfig.from_dict(knobs)
        engine = build_engine(replica_config, **sources)
        app = create_app(engine, replica_config)
        app.add_middleware(ReplicaHeader, replica=_replica_id())
        return app

    class RevmuxReplica:
        """One replica: an Engine behind revmux's FastAPI app (built by build_asgi_app)."""

    ingress = serve.ingress(build_asgi_app)(RevmuxReplica)
    return serve.deployment(ingress, **deployment_options(config, options)).bind()


def run_ray(args: dict[str, Any]) -> None:
    """Start Ray (joins RAY_ADDRESS if set, else a local instance), deploy on the config's host:port,
    serve until SIGTERM or SIGINT, then shut Ray Serve down (each replica drains) and Ray."""
    config, sources, options = parse_args(args)  # bad arguments fail before Ray starts
    application = _application(config, sources, options)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=config.log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    log.setLevel(config.log_level.upper())
    ray.init(logging_level=config.log_level.upper())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own handlers
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        ray_logs = {"log_level": config.log_level.upper()}
        serve.start(http_options={"host": config.host, "port": config.port}, logging_config=ray_logs)
        try:
            serve.run(application, name=APP_NAME, route_prefix="/", logging_config=ray_logs)
        except RuntimeError as exc:  # a replica failed to start; its traceback is in the log above
            raise RevmuxError(
                f"Ray Serve could not start the replicas ({exc}). The replica's error is in the log above: "
                "often a teacher or adapter path that does not exist on that node."
            ) from exc
        log.info("revmux serve --ray: deployed on http://%s:%d", config.host, config.port)
        while not stop.wait(0.5):
            pass
        log.info("revmux serve --ray: stopping (replicas drain within %gs)", config.drain_timeout_s)
    finally:
        serve.shutdown()
        ray.shutdown()


class ReplicaHeader:
    """ASGI middleware adding `x-revmux-replica: <id>` to every HTTP response."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a replica, or an older Ray's context
        return f"pid-{os.getpid()}"


def _path(value: Any) -> str | None:
    """An existing path made absolute (replicas may not start in this directory); else as given, or None."""
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    return str(path.resolve()) if path.exists() else str(value)
