"""The `revmux` command line (typer). Thin: each command parses flags and calls the layer below."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from revmux.config import DEFAULT_K, DEFAULT_KIND, DEFAULT_MAX_LENGTH, DEFAULT_N
from revmux.config_flags import config_flags
from revmux.errors import RevmuxError
from revmux.mux.registry import options_help
from revmux.train.config import TrainConfig
from revmux.train.config import flag as train_flag

app = typer.Typer(
    help="revmux: serve frozen transformer classifiers several times faster with reversible multiplexing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the revmux version and exit.")] = False,
) -> None:
    """revmux: reversible data multiplexing for frozen transformer classifiers."""
    if version:
        from revmux import __version__

        print(__version__)
        raise typer.Exit(0)


def _parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{flag} takes comma-separated integers like 2,4,8; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"{flag} takes integers >= 1 like 2,4,8; got {text!r}")
    return values


def _fail(exc: RevmuxError) -> None:
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@app.command()
def verify(
    model: Annotated[
        str, typer.Option("--model", help="Model directory (or hub id when the hub is reachable).")
    ],
    n: Annotated[str, typer.Option("--n", help="Mux widths N to check, comma-separated.")] = "2,4,8",
    verbalizer: Annotated[
        str | None, typer.Option(help="Comma-separated verbalizer token ids (LM heads: decoders, T5).")
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Largest absolute error accepted.")] = 1e-5,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Check split == unsplit at every k and demux(mux(x)) == x for each N on MODEL. Exit 1 on failure."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.backbones import load_backbone
    from revmux.verify import verify_backbone

    ns = _parse_ints(n, "--n")
    verbalizer_ids = _parse_ints(verbalizer, "--verbalizer") if verbalizer else None
    try:
        view = load_backbone(model, verbalizer_ids=verbalizer_ids)
        report = verify_backbone(view, ns=ns, tolerance=tolerance)
    except RevmuxError as exc:
        _fail(exc)
    result = {"model": model, **report.to_dict()}
    if as_json:
        print(json.dumps(result))
    else:
        table = Table(
            title=f"revmux verify: {model} ({report.model_type}, L={report.num_layers}, d={report.hidden_size})"
        )
        table.add_column("check")
        table.add_column("max |error|", justify="right")
        table.add_column("ok")
        for k, e in report.split_errors.items():
            table.add_row(f"split at k={k}", f"{e:.2e}", _mark(e <= tolerance))
        for nn, e in report.inverse_errors.items():
            table.add_row(f"mux inverse N={nn}", f"{e:.2e}", _mark(e <= tolerance))
        console.print(table)
        console.print("[bold green]ok[/]" if report.ok else "[bold red]FAILED[/]")
    raise typer.Exit(0 if report.ok else 1)


def _mark(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]NO[/]"


# prompt + verbalizer teachers (revmux.prompting): the same three flags on finetune, train and eval
PromptStyle = Annotated[
    str | None,
    typer.Option(
        "--prompt-style",
        help="Read an LM as a prompt + verbalizer teacher: 'chat' (its chat template) or 'plain'.",
    ),
]
VerbalizerWords = Annotated[
    str | None,
    typer.Option(help="With --prompt-style: one single-token answer word per class, comma-separated."),
]
Instruction = Annotated[
    str | None, typer.Option(help="With --prompt-style: the instruction (default per task).")
]


def _resolve_prompt(
    model: str,
    data,
    task: str | None,
    verbalizer: str | None,
    style: str | None,
    words: str | None,
    instruction: str | None,
):
    """(PromptSpec or None, verbalizer ids or None) of --verbalizer / --prompt-style / --verbalizer-words /
    --instruction on backbone `model` and `data`: the one place finetune, train and eval resolve them."""
    from revmux.errors import ConfigError
    from revmux.prompting import default_prompt, verbalizer_ids

    ids = _parse_ints(verbalizer, "--verbalizer") if verbalizer else None
    if style is None:
        if words is not None or instruction is not None:
            raise ConfigError("--verbalizer-words and --instruction go with --prompt-style chat|plain.")
        return None, ids
    if ids is not None:
        raise ConfigError("--prompt-style gives the verbalizer (its words' token ids); drop --verbalizer.")
    word_list = words.split(",") if words is not None else None
    spec = default_prompt(
        style, task, data.label_names, words=word_list, instruction=instruction, is_pair=data.is_pair
    )
    from revmux.backbones.registry import load_tokenizer

    return spec, verbalizer_ids(load_tokenizer(model), spec)


def _load_data(
    task: str | None,
    split: str,
    data_dir: str | None,
    file: str | None,
    text_col: str,
    pair_col: str | None,
    label_col: str,
    label_names: list[str] | None = None,
):
    """The TaskData of a data file (csv/tsv/jsonl) if given, else of registry --task (GLUE layout in
    --data-dir, or the bundled sst2 sample)."""
    from revmux.data import load_hf_dataset, load_task, read_table
    from revmux.errors import DataError

    if task is not None and task.startswith("hf:"):  # a Hugging Face datasets name, e.g. hf:glue:sst2
        return load_hf_dataset(
            task[3:],
            split,
            text_col=text_col,
            pair_col=pair_col,
            label_col=label_col,
        )
    if file is not None:
        return read_table(
            file, text_col=text_col, pair_col=pair_col, label_col=label_col, label_names=label_names
        )
    if task is None:
        raise DataError(
            "no data selected: pass --task (sst2, mrpc, rte, qnli) or a data file (--train/--eval)."
        )
    return load_task(task, split, data_dir)


@app.command()
def finetune(
    model: Annotated[str, typer.Option("--model", help="Pretrained model directory, hub id, or 'minilm'.")],
    out: Annotated[str, typer.Option("--out", help="Directory to write the fine-tuned model to.")],
    task: Annotated[str | None, typer.Option(help="Task name: sst2, mrpc, rte, qnli.")] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="GLUE download (<dir>/SST-2/train.tsv); default: bundled sst2 sample.")
    ] = None,
    train: Annotated[
        str | None, typer.Option(help="Training file (csv, tsv or jsonl) instead of --task.")
    ] = None,
    text_col: Annotated[str, typer.Option(help="Text column of --train.")] = "text",
    pair_col: Annotated[str | None, typer.Option(help="Second-sentence column of --train.")] = None,
    label_col: Annotated[str, typer.Option(help="Label column of --train.")] = "label",
    epochs: Annotated[int, typer.Option(help="Passes over the training rows.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (linear warmup, then linear decay).")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Rows per step.")] = 32,
    max_length: Annotated[int, typer.Option(help="Tokens per row (longer rows are truncated).")] = 64,
    max_train_rows: Annotated[int | None, typer.Option(help="Train on a random subset of this size.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the hold-out split, shuffling and the new head.")] = 0,
    verbalizer: Annotated[
        str | None,
        typer.Option(help="Keep the LM head (decoders, T5): one answer token id per class, comma-separated."),
    ] = None,
    prompt_style: PromptStyle = None,
    verbalizer_words: VerbalizerWords = None,
    instruction: Instruction = None,
) -> None:
    """Fully fine-tune MODEL on a task: the teacher, saved as a standard Hugging Face directory in --out.

    Encoders and decoders get a classification head; with --verbalizer (or --prompt-style) an LM keeps its
    LM head and learns to answer each class's token (T5 needs this).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.train.finetune import finetune as run_finetune

    try:
        data = _load_data(task, "train", data_dir, train, text_col, pair_col, label_col)
        spec, ids = _resolve_prompt(
            model, data, task, verbalizer, prompt_style, verbalizer_words, instruction
        )
        if spec is not None:  # the teacher learns on the prompts its adapters' encoder will write
            from revmux.backbones.registry import load_tokenizer
            from revmux.encoding import RequestEncoder

            data = RequestEncoder(load_tokenizer(model), max_length, spec).prepare(data)
        result = run_finetune(
            model,
            data,
            out,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            max_length=max_length,
            max_train_rows=max_train_rows,
            seed=seed,
            verbalizer_ids=ids,
        )
    except RevmuxError as exc:
        _fail(exc)
    console.print(
        f"saved {result.out_dir}: hold-out accuracy {result.holdout_accuracy:.2%} after {result.steps} steps "
        f"in {result.train_seconds:.0f} s"
    )
    if prompt_style is not None:
        console.print(f"train its adapters with the same --prompt-style {prompt_style} (words, instruction)")
    elif ids is not None:
        console.print(f"train its adapters with --verbalizer {','.join(map(str, ids))}")


@app.command("eval")
def eval_cmd(
    adapter: Annotated[
        str | None,
        typer.Option("--adapter", help="Adapter directory written by `revmux train` (none: --model at N=1)."),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Task name: sst2, mrpc, rte, qnli (default: the adapter's task).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="GLUE download (<dir>/SST-2/dev.tsv); default: bundled sst2 sample.")
    ] = None,
    eval_file: Annotated[
        str | None, typer.Option("--eval", help="Evaluation file (csv, tsv or jsonl) instead of --task.")
    ] = None,
    text_col: Annotated[str, typer.Option(help="Text column of --eval.")] = "text",
    pair_col: Annotated[str | None, typer.Option(help="Second-sentence column of --eval.")] = None,
    label_col: Annotated[str, typer.Option(help="Label column of --eval.")] = "label",
    split: Annotated[str, typer.Option(help="Split of --task to evaluate (GLUE reports dev).")] = "dev",
    model: Annotated[
        str | None,
        typer.Option("--model", help="Backbone directory or zoo name (default: the one the adapter names)."),
    ] = None,
    groupings: Annotated[int, typer.Option(help="Random groupings R to average over.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Groups per forward pass.")] = 64,
    seed: Annotated[int, typer.Option(help="Grouping r is drawn with seed + r.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    max_length: Annotated[
        int | None, typer.Option(help="Tokens per row (default: the adapter's, or 128 without one).")
    ] = None,
    verbalizer: Annotated[
        str | None, typer.Option(help="Without --adapter: verbalizer token ids of an LM-head --model.")
    ] = None,
    prompt_style: PromptStyle = None,
    verbalizer_words: VerbalizerWords = None,
    instruction: Instruction = None,
) -> None:
    """Accuracy of an adapter over R random groupings, beside the teacher, agreement and partner sensitivity.

    Without --adapter, --model alone is evaluated at N = 1 (the teacher: a classifier, or an LM read
    through --verbalizer ids or a --prompt-style prompt).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.evaluate import evaluate
    from revmux.model import MuxModel

    try:
        if adapter is not None:
            if (verbalizer, prompt_style, verbalizer_words, instruction) != (None, None, None, None):
                raise typer.BadParameter(
                    "the verbalizer and prompt come from the adapter's mux_config.json; drop --verbalizer, "
                    "--prompt-style, --verbalizer-words and --instruction, or evaluate --model without --adapter."
                )
            mux = MuxModel.from_pretrained(adapter, backbone=model)
            task = task or (None if eval_file else mux.config.task)
            names = mux.config.label_names or None
            data = _load_data(task, split, data_dir, eval_file, text_col, pair_col, label_col, names)
        else:
            if model is None:
                raise typer.BadParameter(
                    "pass --adapter DIR, or --model DIR_OR_ZOO_NAME to evaluate the backbone alone (N = 1).",
                    param_hint="'--adapter' / '--model'",
                )
            data = _load_data(task, split, data_dir, eval_file, text_col, pair_col, label_col)
            spec, ids = _resolve_prompt(
                model, data, task, verbalizer, prompt_style, verbalizer_words, instruction
            )
            mux = _teacher_only(model, spec, ids)
            mux.config.task, mux.config.max_length = task, max_length or mux.config.max_length
            groupings = 1  # N = 1: every grouping gives the same predictions
        report = evaluate(
            mux,
            data,
            groupings=groupings,
            batch_size=batch_size,
            seed=seed,
            max_length=max_length,
            progress=not as_json,
            task=task or eval_file,
        )
    except RevmuxError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    r = report

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2%}"

    table = Table(
        title=f"revmux eval: {r.task} ({r.num_examples} rows), {r.mux} N={r.n} k={r.k} on {r.backbone}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(
        f"accuracy (mean ± std over {r.groupings})", f"{r.accuracy_mean:.2%} ± {r.accuracy_std:.2%}"
    )
    table.add_row("teacher accuracy (N=1)", pct(r.teacher_accuracy))
    table.add_row("agreement with teacher", pct(r.agreement))
    table.add_row("partner sensitivity", pct(r.partner_sensitivity))
    for name, acc in r.per_class_accuracy.items():
        table.add_row(f"  class {name}", f"{pct(acc)} (teacher {pct(r.teacher_per_class_accuracy[name])})")
    table.add_row("speedup bound S(k, N)", f"{r.bound:.2f}x")
    table.add_row("trainable parameters", f"{r.trainable_params:,}")
    console.print(table)


def _teacher_only(model: str, spec, verbalizer_ids: list[int] | None):
    """MuxModel at N = 1 (no adapters) on backbone `model`: plain, or read through a verbalizer or a prompt."""
    from revmux.backbones import load_backbone
    from revmux.model import MuxModel

    view = load_backbone(model, verbalizer_ids=verbalizer_ids)  # an LM head when there are ids
    return MuxModel.from_backbone(view, n=1, k=0, backbone_path=model, prompt=spec)


@app.command("predict")
def predict_cmd(
    adapter: Annotated[str, typer.Option("--adapter", help="Adapter directory written by `revmux train`.")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.", show_default=False)] = None,
    file: Annotated[
        str | None, typer.Option(help="File of one text per line (.tsv: text<TAB>pair) instead of TEXTS.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Backbone directory (default: the one the adapter names).")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Labels per text, highest score first; 0 for all.")] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON array (pipeline-shaped) instead of a table.")
    ] = False,
) -> None:
    """Classify TEXTS (or --file) with an adapter; --json prints [[{"label": ..., "score": ...}], ...]."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.errors import InputError
    from revmux.model import MuxModel
    from revmux.predict import predict, read_texts

    try:
        if bool(texts) == (file is not None):
            raise InputError("pass either TEXTS or --file (one text per line), not both and not neither.")
        if top_k < 0:
            raise InputError(f"--top-k must be >= 0 (0 for all labels), got {top_k}.")
        text_list, pairs = read_texts(file) if file is not None else (list(texts or []), None)
        mux = MuxModel.from_pretrained(adapter, backbone=model)
        results = predict(mux, text_list, pairs, top_k=top_k or None)
    except RevmuxError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(results))
        return
    table = Table(title=f"revmux predict: {mux.config.kind} N={mux.n} k={mux.k}")
    table.add_column("text", overflow="fold")
    table.add_column("label")
    table.add_column("score", justify="right")
    for text, preds in zip(text_list, results, strict=True):
        for j, p in enumerate(preds):
            table.add_row(text if j == 0 else "", p["label"], f"{p['score']:.4f}")
    console.print(table)


@app.command("bench")
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
    dtype: Annotated[
        str | None, typer.Option(help="Backbone dtype: fp32, bf16 or fp16 (adapters stay fp32).")
    ] = None,
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
    compile_: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile the backbone layers (plain and mux alike) first."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the JSON object on stdout (table to stderr).")
    ] = False,
    out: Annotated[str | None, typer.Option("--out", help="Also write the JSON object to this file.")] = None,
) -> None:
    """Time plain, pipeline (tokenization included) and multiplexed inference side by side."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sizes = _parse_ints(batch_sizes, "--batch-sizes")
    if (adapter is None) == (model is None):
        raise typer.BadParameter(
            "pass exactly one of --adapter DIR (a saved adapter) or --model DIR_OR_ZOO_NAME (fresh adapters)",
            param_hint="'--adapter' / '--model'",
        )
    if adapter is not None and ((n, k, mux) != (None, None, None) or mux_option):
        raise typer.BadParameter(
            "--n, --k, --mux and --mux-option come from the adapter's mux_config.json; drop them, or use "
            "--model instead.",
            param_hint="'--n' / '--k' / '--mux'",
        )
    if texts is not None and (task is not None or data_dir is not None):
        raise typer.BadParameter("pass --texts FILE or --task/--data-dir, not both.", param_hint="'--texts'")
    from revmux.bench import bench_texts, run_bench
    from revmux.model import MuxModel

    try:
        text_list, pairs, source = bench_texts(task, data_dir, texts)  # cheap checks before loading
        if adapter is not None:
            muxed = MuxModel.from_pretrained(adapter)
        else:
            from revmux.backbones import load_backbone

            view = load_backbone(model)
            muxed = MuxModel.from_backbone(
                view,
                kind=mux or DEFAULT_KIND,
                n=DEFAULT_N if n is None else n,
                k=DEFAULT_K if k is None else k,
                backbone_path=model,
                max_length=max_length,
                options=_mux_options(mux_option),
            )
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
        )
    except RevmuxError as exc:
        _fail(exc)
    report.meta |= {"adapter": adapter, "texts": source}
    result = report.to_dict()
    (err_console if as_json else console).print(_bench_table(result))
    if out is not None:
        from pathlib import Path

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        err_console.print(f"wrote {out}")
    if as_json:
        print(json.dumps(result))


def _bench_table(result: dict) -> Table:
    """The human table of a bench result: one row per batch size."""
    from revmux.bench import fmt_mb, fmt_share, fmt_sorted, peak_mb

    table = Table(
        title=f"revmux bench: {result['model']} ({result['model_type']}, L={result['num_layers']}) "
        f"{result['mux']} N={result['n']} k={result['k']} on {result['device']}, {result['threads']} threads",
        caption=f"median of {result['repeats']} interleaved repeats; pipeline includes tokenization",
    )
    rates = ("plain\nreq/s", "pipeline\nreq/s", "mux\nreq/s")
    for col in (
        "batch",
        *rates,
        "speedup",
        "bound",
        "effic-\niency",
        "vs sorted\nplain",
        "adapt.\n% mux",
        "peak MB\nplain/mux",
    ):
        table.add_column(col, justify="right")
    for r in result["runs"]:
        pipe = "n/a" if r["pipeline_rps"] is None else f"{r['pipeline_rps']:.1f}"
        table.add_row(
            str(r["batch_size"]),
            f"{r['plain_rps']:.1f}",
            pipe,
            f"{r['mux_rps']:.1f}",
            f"{r['speedup']:.2f}x",
            f"{r['bound']:.2f}x",
            f"{r['efficiency']:.0%}",
            fmt_sorted(r),
            fmt_share(r),
            f"{fmt_mb(peak_mb(r, 'plain'))}/{fmt_mb(peak_mb(r, 'mux'))}",
        )
    return table


@app.command("plot")
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
        _fail(exc)
    for path in paths:
        console.print(f"wrote {path}")


def _mux_options(pairs: list[str] | None) -> dict[str, str]:
    """--mux-option KEY=VALUE (repeatable) -> {KEY: VALUE}; the kind's options dataclass converts and checks."""
    from revmux.errors import ConfigError

    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--mux-option takes KEY=VALUE (e.g. pca_composite=false), got {pair!r}.")
        out[key.strip()] = value.strip()
    return out


MuxOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mux-option",
        help="An option of the mux kind as KEY=VALUE (repeatable). " + options_help().replace("\n", "; "),
    ),
]


@app.command("train")
@config_flags(TrainConfig, flag=train_flag, exclude=("mux_options",), panel="Training config")
def train_cmd(
    teacher: Annotated[
        str,
        typer.Option("--teacher", help="Fine-tuned teacher model directory (frozen: only adapters train)."),
    ],
    out: Annotated[str, typer.Option("--out", help="Output: best adapter, checkpoints/, train_log.json.")],
    task: Annotated[
        str | None, typer.Option(help="Task: sst2, mrpc, rte, qnli (with --train: the adapter's task name).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="GLUE download (<dir>/SST-2/train.tsv); default: bundled sst2 sample.")
    ] = None,
    train_file: Annotated[
        str | None, typer.Option("--train", help="Training file (csv, tsv or jsonl) instead of --task.")
    ] = None,
    text_col: Annotated[str, typer.Option(help="Text column of --train.")] = "text",
    pair_col: Annotated[str | None, typer.Option(help="Second-sentence column of --train.")] = None,
    label_col: Annotated[str, typer.Option(help="Label column of --train.")] = "label",
    mux_option: MuxOption = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest epoch in --out.")
    ] = False,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML of TrainConfig fields; flags override it.")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            help="Recipe name (src/revmux/configs/recipes/) or YAML path; --config and flags override it.",
        ),
    ] = None,
    verbalizer: Annotated[
        str | None, typer.Option(help="Comma-separated verbalizer token ids (LM heads: decoders, T5).")
    ] = None,
    prompt_style: PromptStyle = None,
    verbalizer_words: VerbalizerWords = None,
    instruction: Instruction = None,
    overrides: dict | None = None,
) -> None:
    """Train the adapters of a frozen teacher to serve N requests per forward pass; keep the best epoch."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pathlib import Path

    from revmux.backbones import load_backbone
    from revmux.config import load_yaml
    from revmux.recipes import load_recipe, recipe_name
    from revmux.train.trainer import train as run_train

    try:
        values = load_recipe(recipe) if recipe else {}
        values |= load_yaml(config) if config else {}
        values |= overrides or {}
        if mux_option:
            values["mux_options"] = dict(values.get("mux_options") or {}) | _mux_options(mux_option)
        source = f"--config {config}" if config else f"--recipe {recipe}" if recipe else "flags"
        cfg = TrainConfig.from_dict(values, source=source)
        data = _load_data(task, "train", data_dir, train_file, text_col, pair_col, label_col)
        spec, ids = _resolve_prompt(
            teacher, data, task, verbalizer, prompt_style, verbalizer_words, instruction
        )
        view = load_backbone(teacher, verbalizer_ids=ids)  # the adapter saves the prompt for its encoder
        backbone_path = str(Path(teacher).resolve()) if Path(teacher).exists() else teacher
        name = task or (Path(train_file).stem if train_file else None)
        result = run_train(
            view, data, cfg, out, backbone_path=backbone_path, task=name, resume=resume, prompt=spec,
            recipe=recipe_name(recipe) if recipe else None,
        )  # fmt: skip
    except RevmuxError as exc:
        _fail(exc)
    console.print(
        f"best epoch {result.best_epoch} of {cfg.epochs}: hold-out accuracy {result.best_holdout_accuracy:.2%}; "
        f"train {result.train_seconds:.1f} s (cache {result.cache_build_seconds:.1f} s), "
        f"{result.trainable_params:,} adapter parameters; adapter saved to {result.out_dir}"
    )


@app.command("demo")
def demo_cmd(
    out: Annotated[
        str,
        typer.Option(
            help="Directory for the teacher, the adapters and demo_result.json (a rerun replaces them)."
        ),
    ] = "revmux-demo",
    n: Annotated[int, typer.Option("--n", help="Requests per composite.")] = 2,
    k: Annotated[int, typer.Option("--k", help="Prefill layers run per request before mixing.")] = 2,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """The main job on the embedded default: MiniLM + bundled SST-2 sample, offline.

    Fine-tunes a teacher, trains N=2 RevMUX adapters on it (backbone frozen), evaluates over 10 random
    groupings of the dev set, and times plain vs multiplexed inference side by side.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.demo import DemoSettings, run_demo

    try:
        result = run_demo(out, DemoSettings(n=n, k=k), progress=not as_json)
    except RevmuxError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title=f"revmux demo: MiniLM-L6 on SST-2 (bundled sample), N={n}, k={k}")
    table.add_column("")
    table.add_column("value", justify="right")
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    table.add_row("teacher accuracy (N=1, dev)", pct(result["teacher_accuracy"]))
    table.add_row(
        f"multiplexed accuracy (N={n}, mean ± std, {result['groupings']} groupings)",
        f"{pct(result['accuracy_mean'])} ± {100 * result['accuracy_std']:.1f}",
    )
    table.add_row("agreement with teacher", pct(result["agreement"]))
    table.add_row("partner sensitivity", pct(result["partner_sensitivity"] or 0.0))
    table.add_row(f"plain req/s (batch {result['bench_batch_size']})", f"{result['plain_rps']:.1f}")
    table.add_row("multiplexed req/s", f"{result['mux_rps']:.1f}")
    table.add_row("speedup (measured, same run)", f"{result['speedup']:.2f}x")
    table.add_row("cost-model bound S(k,N)", f"{result['bound']:.2f}x")
    table.add_row("total time", f"{result['total_seconds'] / 60:.1f} min")
    console.print(table)
    console.print(f"teacher: {result['teacher_dir']}\nadapters: {result['adapter_dir']}")


@app.command("serve")
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
        _fail(exc)
    stats = run_server(engine, cfg)
    err_console.print(
        f"revmux serve: stopped; accepted {stats['accepted']} requests, answered {stats['answered']}"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
