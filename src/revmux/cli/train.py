"""`revmux finetune` (the teacher) and `revmux train` (its adapters, flags derived from TrainConfig)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from revmux.cli.common import (
    Instruction,
    MuxOption,
    PromptStyle,
    VerbalizerWords,
    console,
    fail,
    load_data,
    mux_options,
    resolve_prompt,
)
from revmux.config_flags import config_flags
from revmux.errors import RevmuxError
from revmux.train.config import TrainConfig
from revmux.train.config import flag as train_flag

if TYPE_CHECKING:
    from revmux.train.trainer import TrainResult

Unlabeled = Annotated[
    str | None,
    typer.Option(
        "--unlabeled",
        help="Extra text of the task, labelled by the teacher: one row per line (a tab between a pair's "
        "sentences), or a .csv/.tsv/.jsonl file read by --unlabeled-col.",
    ),
]
UnlabeledCol = Annotated[str, typer.Option(help="Text column of a table --unlabeled.")]
UnlabeledPairCol = Annotated[
    str | None, typer.Option(help="Second-sentence column of a table --unlabeled (pair tasks).")
]


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
        data = load_data(task, "train", data_dir, train, text_col, pair_col, label_col)
        spec, ids = resolve_prompt(model, data, task, verbalizer, prompt_style, verbalizer_words, instruction)
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
        fail(exc)
    console.print(
        f"saved {result.out_dir}: hold-out accuracy {result.holdout_accuracy:.2%} after {result.steps} steps "
        f"in {result.train_seconds:.0f} s"
    )
    if prompt_style is not None:
        console.print(f"train its adapters with the same --prompt-style {prompt_style} (words, instruction)")
    elif ids is not None:
        console.print(f"train its adapters with --verbalizer {','.join(map(str, ids))}")


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
    unlabeled: Unlabeled = None,
    unlabeled_col: UnlabeledCol = "text",
    unlabeled_pair_col: UnlabeledPairCol = None,
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
    from revmux.recipes import recipe_name
    from revmux.train.extra import read_unlabeled
    from revmux.train.trainer import train as run_train

    try:
        cfg = _train_config(recipe, config, overrides, mux_option)
        data = load_data(task, "train", data_dir, train_file, text_col, pair_col, label_col)
        extra = unlabeled and read_unlabeled(
            unlabeled, label_names=data.label_names, pair=data.is_pair, text_col=unlabeled_col,
            pair_col=unlabeled_pair_col,
        )  # fmt: skip
        spec, ids = resolve_prompt(
            teacher, data, task, verbalizer, prompt_style, verbalizer_words, instruction
        )
        view = load_backbone(teacher, verbalizer_ids=ids)  # the adapter saves the prompt for its encoder
        backbone_path = str(Path(teacher).resolve()) if Path(teacher).exists() else teacher
        name = task or (Path(train_file).stem if train_file else None)
        result = run_train(
            view, data, cfg, out, backbone_path=backbone_path, task=name, resume=resume, prompt=spec,
            recipe=recipe_name(recipe) if recipe else None, unlabeled=extra,
        )  # fmt: skip
    except RevmuxError as exc:
        fail(exc)
    console.print(_kept_summary(result))


def _kept_summary(result: TrainResult) -> str:
    """The line `revmux train` ends with: the epoch kept and its hold-out measures, time, size and path."""
    kept = result.history[result.best_epoch - 1]
    agreement, kl = kept.get("holdout_agreement"), kept.get("holdout_kl")  # absent in older runs
    measures = "" if agreement is None else f", agreement with the teacher {agreement:.2%}"
    measures += "" if kl is None else f", KL to the teacher {kl:.4f}"
    return (
        f"kept epoch {result.best_epoch} of {result.epochs}: hold-out accuracy {result.best_holdout_accuracy:.2%}"
        f"{measures}; train {result.train_seconds:.1f} s (cache {result.cache_build_seconds:.1f} s), "
        f"{result.trainable_params:,} adapter parameters; adapter saved to {result.out_dir}"
    )


def _train_config(
    recipe: str | None, config: str | None, overrides: dict | None, pairs: list[str] | None
) -> TrainConfig:
    """The recipe's values, then --config's, then the flags given, then --mux-option pairs."""
    from revmux.config import load_yaml
    from revmux.recipes import load_recipe

    values = load_recipe(recipe) if recipe else {}
    values |= load_yaml(config) if config else {}
    values |= overrides or {}
    if pairs:
        values["mux_options"] = dict(values.get("mux_options") or {}) | mux_options(pairs)
    source = f"--config {config}" if config else f"--recipe {recipe}" if recipe else "flags"
    return TrainConfig.from_dict(values, source=source)
