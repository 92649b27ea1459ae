"""What the `revmux` commands share: the consoles, the error exit, int lists, data loading, prompt and
verbalizer resolution, and `--mux-option KEY=VALUE` parsing. No command lives here."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from revmux.errors import RevmuxError
from revmux.mux.registry import options_help

console = Console()
err_console = Console(stderr=True)


def parse_ints(text: str, flag: str) -> list[int]:
    """ "2,4,8" -> [2, 4, 8] for `flag`, or typer.BadParameter naming the flag."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{flag} takes comma-separated integers like 2,4,8; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"{flag} takes integers >= 1 like 2,4,8; got {text!r}")
    return values


def fail(exc: RevmuxError) -> None:
    """Print a user error in one line and exit with status 2."""
    err_console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


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


def resolve_prompt(
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

    ids = parse_ints(verbalizer, "--verbalizer") if verbalizer else None
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


def load_data(
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


def mux_options(pairs: list[str] | None) -> dict[str, str]:
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
