"""The `revmux` command line (typer). Thin: each command parses flags and calls the layer below."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from revmux.errors import RevmuxError

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


if __name__ == "__main__":  # pragma: no cover
    app()
