"""The `revmux` command line (typer). Thin: each command parses flags and calls the layer below.

One module per group of commands: `train` (finetune, train), `evaluate` (verify, eval, predict), `bench`
(bench, plot), `demo`, `serve`; `common` holds what they share and `tables` the tables they print.
Heavy imports (torch, transformers) stay inside the command functions, so `revmux --help` starts fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from revmux.cli.bench import bench_cmd, plot_cmd
from revmux.cli.demo import demo_cmd
from revmux.cli.evaluate import eval_cmd, predict_cmd, verify
from revmux.cli.serve import serve_cmd
from revmux.cli.train import finetune, train_cmd

app = typer.Typer(
    help="revmux: serve frozen transformer classifiers several times faster with reversible multiplexing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from revmux import __version__

        print(__version__)
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the revmux version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """revmux: reversible data multiplexing for frozen transformer classifiers."""


app.command()(verify)
app.command()(finetune)
app.command("eval")(eval_cmd)
app.command("predict")(predict_cmd)
app.command("bench")(bench_cmd)
app.command("plot")(plot_cmd)
app.command("train")(train_cmd)
app.command("demo")(demo_cmd)
app.command("serve")(serve_cmd)

__all__ = ["app"]
