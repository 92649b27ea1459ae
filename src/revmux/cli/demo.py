"""`revmux demo`: the main job on the embedded default (MiniLM + the bundled SST-2 sample), offline."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from revmux.cli.common import console, fail
from revmux.cli.evaluate import Quantize
from revmux.errors import RevmuxError


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
    quantize: Quantize = "none",
) -> None:
    """The main job on the embedded default: MiniLM + bundled SST-2 sample, offline.

    Fine-tunes a teacher, trains N=2 RevMUX adapters on it (backbone frozen), evaluates over 10 random
    groupings of the dev set, and times plain vs multiplexed inference side by side. --quantize int8 / bf16
    also evaluates the adapters on that backbone and times the mux on it.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from revmux.cli.tables import demo_table
    from revmux.demo import DemoSettings, run_demo

    try:
        result = run_demo(out, DemoSettings(n=n, k=k, quantize=quantize), progress=not as_json)
    except RevmuxError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(result))
        return
    console.print(demo_table(result, n, k))
    console.print(f"teacher: {result['teacher_dir']}\nadapters: {result['adapter_dir']}")
