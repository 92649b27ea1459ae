"""`revmux verify`, `revmux eval` and `revmux predict`: check a backbone, measure an adapter, classify texts."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Annotated

import typer

from revmux.cli.common import (
    Instruction,
    PromptStyle,
    VerbalizerWords,
    console,
    fail,
    load_data,
    parse_ints,
    resolve_prompt,
)
from revmux.config_flags import config_flags
from revmux.errors import RevmuxError
from revmux.eval_config import EvalConfig


def quantize_mode(value: str) -> str:
    """The --quantize value checked when the command line is parsed (before anything is loaded)."""
    from revmux.backbones.quantize import check_quantize_mode

    try:
        return check_quantize_mode(value)
    except RevmuxError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--quantize'") from None


# --quantize on eval, predict and demo: the frozen backbone in torch dynamic int8 or bf16, adapters fp32
Quantize = Annotated[
    str,
    typer.Option(
        "--quantize",
        callback=quantize_mode,
        help="Run the frozen backbone in none, int8 (torch dynamic int8, CPU) or bf16; adapters stay fp32.",
    ),
]


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
    from revmux.cli.tables import verify_table
    from revmux.verify import verify_backbone

    ns = parse_ints(n, "--n")
    verbalizer_ids = parse_ints(verbalizer, "--verbalizer") if verbalizer else None
    try:
        view = load_backbone(model, verbalizer_ids=verbalizer_ids)
        report = verify_backbone(view, ns=ns, tolerance=tolerance)
    except RevmuxError as exc:
        fail(exc)
    result = {"model": model, **report.to_dict()}
    if as_json:
        print(json.dumps(result))
    else:
        console.print(verify_table(model, report, tolerance))
        console.print("[bold green]ok[/]" if report.ok else "[bold red]FAILED[/]")
    raise typer.Exit(0 if report.ok else 1)


@config_flags(EvalConfig, panel="Eval config")
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    verbalizer: Annotated[
        str | None, typer.Option(help="Without --adapter: verbalizer token ids of an LM-head --model.")
    ] = None,
    prompt_style: PromptStyle = None,
    verbalizer_words: VerbalizerWords = None,
    instruction: Instruction = None,
    overrides: dict | None = None,
) -> None:
    """Accuracy of an adapter over R random groupings, beside the teacher, agreement and partner sensitivity.

    Without --adapter, --model alone is evaluated at N = 1 (the teacher: a classifier, or an LM read
    through --verbalizer ids or a --prompt-style prompt). --quantize: teacher and mux rows on that backbone.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.cli.tables import eval_table
    from revmux.evaluate import evaluate

    columns = (text_col, pair_col, label_col)
    prompt = (verbalizer, prompt_style, verbalizer_words, instruction)
    try:
        cfg = EvalConfig.from_dict(overrides or {}, source="flags")  # checked before anything loads
        if adapter is not None:
            mux, data, task = _adapter_and_data(
                adapter, model, task, split, data_dir, eval_file, columns, prompt
            )
        else:
            mux, data = _teacher_and_data(model, task, split, data_dir, eval_file, columns, prompt)
            mux.config.task, mux.config.max_length = task, cfg.max_length or mux.config.max_length
            cfg = dataclasses.replace(cfg, groupings=1)  # N = 1: every grouping gives the same predictions
        report = evaluate(mux, data, config=cfg, progress=not as_json, task=task or eval_file)
    except RevmuxError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    console.print(eval_table(report))
    for line in _partner_lines(report.extra):
        console.print(line)


def _partner_lines(report: dict) -> list[str]:
    lines = []
    if quantize := report.get("quantize"):
        lines.append(f"backbone in {quantize} (the teacher and multiplexed rows alike); adapters in fp32")
    if a := report.get("adversarial"):
        lines.append(
            f"adversarial partners ({a['candidates']} per row, every slot, {a['rows']} rows): some partner flips "
            f"{a['flippable_rows']:.1%} of rows; {a['flip_share']:.1%} of candidates flip a row"
        )
    for f in report.get("fallback", []):
        lines.append(
            f"fallback margin {f['margin']:.2f}: accuracy {f['accuracy_mean']:.2%} (teacher "
            f"{f['teacher_accuracy']:.2%}), re-run {f['rerun_share']:.1%}, bound {f['bound']:.2f}x"
        )
    return lines


def _adapter_and_data(adapter, model, task, split, data_dir, eval_file, columns, prompt):
    """(MuxModel, TaskData, task) of `revmux eval --adapter`: the prompt comes from the adapter."""
    from revmux.model import MuxModel

    if prompt != (None, None, None, None):
        raise typer.BadParameter(
            "the verbalizer and prompt come from the adapter's mux_config.json; drop --verbalizer, "
            "--prompt-style, --verbalizer-words and --instruction, or evaluate --model without --adapter."
        )
    mux = MuxModel.from_pretrained(adapter, backbone=model)
    task = task or (None if eval_file else mux.config.task)
    names = mux.config.label_names or None
    return mux, load_data(task, split, data_dir, eval_file, *columns, names), task


def _teacher_and_data(model, task, split, data_dir, eval_file, columns, prompt):
    """(MuxModel at N = 1, TaskData) of `revmux eval --model` without an adapter."""
    if model is None:
        raise typer.BadParameter(
            "pass --adapter DIR, or --model DIR_OR_ZOO_NAME to evaluate the backbone alone (N = 1).",
            param_hint="'--adapter' / '--model'",
        )
    data = load_data(task, split, data_dir, eval_file, *columns)
    spec, ids = resolve_prompt(model, data, task, *prompt)
    return teacher_only(model, spec, ids), data


def teacher_only(model: str, spec, verbalizer_ids: list[int] | None):
    """MuxModel at N = 1 (no adapters) on backbone `model`: plain, or read through a verbalizer or a prompt."""
    from revmux.backbones import load_backbone
    from revmux.model import MuxModel

    view = load_backbone(model, verbalizer_ids=verbalizer_ids)  # an LM head when there are ids
    return MuxModel.from_backbone(view, n=1, k=0, backbone_path=model, prompt=spec)


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
    quantize: Quantize = "none",
) -> None:
    """Classify TEXTS (or --file) with an adapter; --json prints [[{"label": ..., "score": ...}], ...]."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.backbones.quantize import quantize_backbone
    from revmux.cli.tables import predict_table
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
        quantize_backbone(mux.view, quantize)
        results = predict(mux, text_list, pairs, top_k=top_k or None)
    except RevmuxError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(results))
        return
    console.print(predict_table(f"revmux predict: {mux.config.kind} N={mux.n} k={mux.k}", text_list, results))
