"""`revmux bench` (plain vs multiplexed timing, side by side) and `revmux plot` (PNGs of its results).

Every BenchConfig field is a `revmux bench` flag, derived from the dataclass by `config_flags` (same name
with dashes, help and default from the field); the options here choose what is timed and where it goes."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from revmux.bench_config import BenchConfig
from revmux.cli.common import MuxOption, console, err_console, fail, mux_options
from revmux.config import DEFAULT_K, DEFAULT_KIND, DEFAULT_N
from revmux.config_flags import config_flags
from revmux.errors import RevmuxError


@config_flags(BenchConfig, panel="Bench config")
def bench_cmd(
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="Adapter directory (mux_config.json + weights).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Backbone directory or zoo name ('minilm'): fresh adapters of --mux."),
    ] = None,
    n: Annotated[
        int | None, typer.Option("--n", min=1, help="Requests per composite (with --model).")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", min=0, help="Split layer (with --model).")] = None,
    mux: Annotated[str | None, typer.Option("--mux", help="Mux kind (with --model): revmux, ora...")] = None,
    mux_option: MuxOption = None,
    task: Annotated[
        str | None, typer.Option(help="Task whose dev split gives the texts (default sst2).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="GLUE download for --task (default: bundled sst2).")
    ] = None,
    texts: Annotated[str | None, typer.Option("--texts", help="Text file, one request per line.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the JSON object on stdout (table to stderr).")
    ] = False,
    out: Annotated[str | None, typer.Option("--out", help="Also write the JSON object to this file.")] = None,
    overrides: dict | None = None,
) -> None:
    """Time plain (padded, sorted, int8, bf16, ONNX Runtime), pipeline and multiplexed inference side by side."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cfg = BenchConfig.from_dict(overrides or {}, source="flags")  # checked before anything loads
    except RevmuxError as exc:
        fail(exc)
    _check_bench_sources(adapter, model, (n, k, mux), mux_option, texts, task, data_dir)
    from revmux.bench import bench_texts, run_bench

    try:
        text_list, pairs, source = bench_texts(task, data_dir, texts)
        muxed = _bench_model(adapter, model, mux, n, k, cfg.max_length, mux_option)
        report = run_bench(muxed, text_list, pairs=pairs, config=cfg, progress=True)
    except RevmuxError as exc:
        fail(exc)
    report.meta |= {"adapter": adapter, "texts": source}
    _print_bench(report.to_dict(), as_json, out)


def _check_bench_sources(adapter, model, nkmux, mux_option, texts, task, data_dir) -> None:
    """One of --adapter / --model; --n, --k, --mux only with --model; --texts or --task, not both."""
    if (adapter is None) == (model is None):
        raise typer.BadParameter(
            "pass exactly one of --adapter DIR (a saved adapter) or --model DIR_OR_ZOO_NAME (fresh adapters)",
            param_hint="'--adapter' / '--model'",
        )
    if adapter is not None and (nkmux != (None, None, None) or mux_option):
        raise typer.BadParameter(
            "--n, --k, --mux and --mux-option come from the adapter's mux_config.json; drop them, or use "
            "--model instead.",
            param_hint="'--n' / '--k' / '--mux'",
        )
    if texts is not None and (task is not None or data_dir is not None):
        raise typer.BadParameter("pass --texts FILE or --task/--data-dir, not both.", param_hint="'--texts'")


def _bench_model(adapter, model, mux, n, k, max_length, mux_option):
    """The saved adapter, or fresh adapters of --mux on --model (defaults shared with `revmux train`)."""
    from revmux.model import MuxModel

    if adapter is not None:
        return MuxModel.from_pretrained(adapter)
    from revmux.backbones import load_backbone

    view = load_backbone(model)
    return MuxModel.from_backbone(
        view,
        kind=mux or DEFAULT_KIND,
        n=DEFAULT_N if n is None else n,
        k=DEFAULT_K if k is None else k,
        backbone_path=model,
        max_length=max_length,
        options=mux_options(mux_option),
    )


def _print_bench(result: dict, as_json: bool, out: str | None) -> None:
    """The table (to stderr with --json), the JSON file of --out, and with --json one JSON line."""
    from revmux.cli.tables import bench_table

    (err_console if as_json else console).print(bench_table(result))
    if out is not None:
        from pathlib import Path

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        err_console.print(f"wrote {out}")
    if as_json:
        print(json.dumps(result))


def plot_cmd(
    out: Annotated[str, typer.Option("--out", help="Directory for the PNG files.")],
    bench: Annotated[
        list[str] | None, typer.Option("--bench", help="JSON from `revmux bench --out` (repeatable).")
    ] = None,
    frontier: Annotated[
        str | None,
        typer.Option("--frontier", help="Frontier JSON: rows of task, mux, n, k, accuracies, bound."),
    ] = None,
) -> None:
    """PNGs in --out: throughput vs batch size (--bench), accuracy drop vs speedup (--frontier)."""
    from revmux.plots import make_plots

    if not bench and frontier is None:
        raise typer.BadParameter(
            "pass --bench FILE.json and/or --frontier FILE.json.", param_hint="'--bench'"
        )
    try:
        paths = make_plots(bench or [], frontier, out)
    except RevmuxError as exc:
        fail(exc)
    for path in paths:
        console.print(f"wrote {path}")
