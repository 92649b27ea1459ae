"""`revmux serve`: adapters over HTTP (or Ray Serve), with the knobs of ServeConfig as flags."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from revmux.cli.common import err_console, fail
from revmux.errors import RevmuxError


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
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="REVMUX_API_KEY", help="Require `Authorization: Bearer KEY`."),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML of ServeConfig knobs; flags override it.")
    ] = None,
    max_queue_delay_ms: Annotated[
        float | None, typer.Option(help="How long the oldest request waits for partners (default 5).")
    ] = None,
    max_batch_groups: Annotated[
        int | None, typer.Option(help="Composites per forward pass (default 32).")
    ] = None,
    max_queue_size: Annotated[
        int | None, typer.Option(help="Queued inputs beyond which requests get 429 (default 1024).")
    ] = None,
    request_timeout_ms: Annotated[
        float | None, typer.Option(help="Per-request deadline, 504 past it (default 30000).")
    ] = None,
    drain_timeout_s: Annotated[
        float | None, typer.Option(help="SIGTERM: answer in-flight work and exit within this (default 30).")
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Inputs per /predict request, 413 beyond (default 64).")
    ] = None,
    max_payload_bytes: Annotated[
        int | None, typer.Option(help="Request body size, 413 beyond (default 1 MiB).")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Tokens per input (default: the adapters' max_length).")
    ] = None,
    widths: Annotated[
        str | None, typer.Option(help="Widths N to use, e.g. 1,2,4 (default: all loaded; 1: no mux).")
    ] = None,
    width_thresholds: Annotated[
        str | None, typer.Option(help="Queue depth from which each N is used, e.g. 2:33,4:65.")
    ] = None,
    fallback_margin: Annotated[
        float | None, typer.Option(help="Re-run at N=1 when top-1 minus top-2 prob is below (0: off).")
    ] = None,
    length_aware: Annotated[
        bool | None, typer.Option("--length-aware/--no-length-aware", help="Group similar lengths.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default cpu).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch.set_num_threads.")] = None,
    log_level: Annotated[str | None, typer.Option(help="critical|error|warning|info|debug.")] = None,
    use_ray: Annotated[
        bool, typer.Option("--ray", help="Deploy on Ray Serve, an engine per replica (needs the ray extra).")
    ] = False,
    replicas: Annotated[
        int | None, typer.Option(help="--ray: replicas (default 1); with --max-replicas, the minimum.")
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="--ray: autoscale up to this many replicas on ongoing requests.")
    ] = None,
) -> None:
    """Serve adapters over HTTP (POST /predict, /health, /ready, /info, /metrics), picking N from load."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if (adapter is None) == (pack is None):
        raise typer.BadParameter(
            "pass exactly one of --adapter DIR (one adapter) or --pack DIR (adapters for several N).",
            param_hint="'--adapter' / '--pack'",
        )
    from revmux.serve.config import ServeConfig

    flags = {"host": host, "port": port, "api_key": api_key, "max_queue_delay_ms": max_queue_delay_ms}
    flags |= {"max_batch_groups": max_batch_groups, "max_queue_size": max_queue_size}
    flags |= {"request_timeout_ms": request_timeout_ms, "drain_timeout_s": drain_timeout_s}
    flags |= {"max_batch_size": max_batch_size, "max_payload_bytes": max_payload_bytes}
    flags |= {"max_length": max_length, "widths": widths, "width_thresholds": width_thresholds}
    flags |= {"fallback_margin": fallback_margin, "length_aware": length_aware, "device": device}
    flags |= {"threads": threads, "log_level": log_level}
    if not use_ray and (replicas is not None or max_replicas is not None):
        raise typer.BadParameter("--replicas and --max-replicas need --ray.", param_hint="'--ray'")
    try:
        cfg = ServeConfig.from_yaml(config, flags)
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
