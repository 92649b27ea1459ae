"""`revmux bench` (plain vs multiplexed timing, side by side) and `revmux plot` (PNGs of its results)."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from revmux.cli.common import MuxOption, console, err_console, fail, mux_options, parse_ints
from revmux.cli.evaluate import quantize_mode
from revmux.config import DEFAULT_K, DEFAULT_KIND, DEFAULT_MAX_LENGTH, DEFAULT_N
from revmux.errors import RevmuxError

# the longer options of `revmux bench`, kept out of its signature
BaselinesOption = Annotated[
    str,
    typer.Option(
        "--baselines",
        help="Plain baselines also timed, length-sorted: 'all', 'none' or a comma list of int8, bf16, "
        "ort_fp32, ort_int8 (ONNX Runtime ones need the onnx extra; those that cannot run are noted).",
    ),
]
QuantizeOption = Annotated[
    str,
    typer.Option(
        "--quantize",
        callback=quantize_mode,
        help="Run the mux on the backbone in none, int8 (torch dynamic, CPU) or bf16; adapters stay fp32.",
    ),
]
BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Where the mux's backbone layers run: torch, or onnx (ONNX Runtime, fp32 or with --quantize "
        "int8; adapters in torch; needs the onnx extra).",
    ),
]
CompileOption = Annotated[
    bool, typer.Option("--compile", help="torch.compile the backbone layers (plain and mux alike) first.")
]
DtypeOption = Annotated[
    str | None, typer.Option("--dtype", help="Backbone dtype: fp32, bf16 or fp16 (adapters stay fp32).")
]


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
    batch_sizes: Annotated[
        str, typer.Option("--batch-sizes", help="Comma-separated batch sizes.")
    ] = "8,32,128",
    max_length: Annotated[
        int, typer.Option(min=2, help="Tokens per request (longer are truncated).")
    ] = DEFAULT_MAX_LENGTH,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    dtype: DtypeOption = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch.set_num_threads for the run.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed rounds; the median is reported.")] = 7,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed rounds first.")] = 2,
    task: Annotated[
        str | None, typer.Option(help="Task whose dev split gives the texts (default sst2).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="GLUE download for --task (default: bundled sst2).")
    ] = None,
    texts: Annotated[str | None, typer.Option("--texts", help="Text file, one request per line.")] = None,
    pipeline: Annotated[
        bool, typer.Option("--pipeline/--no-pipeline", help="Also time transformers.pipeline.")
    ] = True,
    length_aware: Annotated[
        bool, typer.Option("--length-aware/--no-length-aware", help="Group requests of similar length.")
    ] = True,
    compile_: CompileOption = False,
    baselines: BaselinesOption = "all",
    quantize: QuantizeOption = "none",
    backend: BackendOption = "torch",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the JSON object on stdout (table to stderr).")
    ] = False,
    out: Annotated[str | None, typer.Option("--out", help="Also write the JSON object to this file.")] = None,
) -> None:
    """Time plain (padded, sorted, int8, bf16, ONNX Runtime), pipeline and multiplexed inference side by side."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = parse_ints(batch_sizes, "--batch-sizes")
    _check_bench_sources(adapter, model, (n, k, mux), mux_option, texts, task, data_dir)
    from revmux.bench import bench_texts, parse_baselines, run_bench

    try:
        parse_baselines(baselines)  # a cheap check before loading
        text_list, pairs, source = bench_texts(task, data_dir, texts)
        muxed = _bench_model(adapter, model, mux, n, k, max_length, mux_option)
        report = run_bench(
            muxed,
            text_list,
            pairs=pairs,
            batch_sizes=sizes,
            max_length=max_length,
            device=device,
            dtype=dtype,
            threads=threads,
            repeats=repeats,
            warmup=warmup,
            length_aware=length_aware,
            pipeline=pipeline,
            progress=True,
            compile=compile_,
            baselines=baselines,
            quantize=quantize,
            backend=backend,
        )
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
