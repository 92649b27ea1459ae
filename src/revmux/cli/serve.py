"""`revmux serve`: adapters over HTTP (or Ray Serve). Every ServeConfig field is a flag, derived from the
dataclass by `config_flags` (same name with dashes, help and default from the field)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from revmux.cli.common import err_console, fail
from revmux.config_flags import config_flags
from revmux.errors import RevmuxError
from revmux.serve.config import ServeConfig


@config_flags(ServeConfig, panel="Serve config")
def serve_cmd(
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="One adapter directory: serves widths {1, its N}.")
    ] = None,
    pack: Annotated[
        str | None,
        typer.Option("--pack", help="Directory of adapter directories for several N on one teacher."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Teacher directory (default: the one the adapters name).")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML of ServeConfig knobs; flags override it.")
    ] = None,
    use_ray: Annotated[
        bool, typer.Option("--ray", help="Deploy on Ray Serve, an engine per replica (needs the ray extra).")
    ] = False,
    replicas: Annotated[
        int | None, typer.Option(help="--ray: replicas (default 1); with --max-replicas, the minimum.")
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="--ray: autoscale up to this many replicas on ongoing requests.")
    ] = None,
    overrides: dict | None = None,
) -> None:
    """Serve adapters over HTTP (POST /predict, /health, /ready, /info, /metrics), picking N from load."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if (adapter is None) == (pack is None):
        raise typer.BadParameter(
            "pass exactly one of --adapter DIR (one adapter) or --pack DIR (adapters for several N).",
            param_hint="'--adapter' / '--pack'",
        )
    if not use_ray and (replicas is not None or max_replicas is not None):
        raise typer.BadParameter("--replicas and --max-replicas need --ray.", param_hint="'--ray'")
    try:
        cfg = ServeConfig.from_yaml(config, overrides)
        if use_ray:
            try:
                from revmux.serve.ray_app import run_ray
            except ImportError as exc:
                raise typer.BadParameter(str(exc), param_hint="'--ray'") from None
            args = cfg.to_dict(redact=False) | {"adapter": adapter, "pack": pack, "model": model}
            run_ray(args | {"num_replicas": replicas, "max_replicas": max_replicas})
            err_console.print("revmux serve --ray: stopped")
            return
        from revmux.serve.server import build_engine, run_server

        engine = build_engine(cfg, adapter=adapter, pack=pack, model=model)
    except RevmuxError as exc:
        fail(exc)
    stats = run_server(engine, cfg)
    err_console.print(
        f"revmux serve: stopped; accepted {stats['accepted']} requests, answered {stats['answered']}"
    )
