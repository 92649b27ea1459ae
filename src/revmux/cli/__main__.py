"""`python -m revmux.cli`: the `revmux` command."""

from revmux.cli import app

app()
