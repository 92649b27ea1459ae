"""The rich tables the `revmux` commands print. Each takes plain results (dicts, report dataclasses) and
returns a `rich.table.Table`; printing is the command's job."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _mark(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]NO[/]"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def verify_table(model: str, report: Any, tolerance: float) -> Table:
    """`revmux verify`: one row per split point k and per mux width N, with its largest error."""
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
    return table


def eval_table(r: Any) -> Table:
    """`revmux eval`: accuracy over the groupings beside the teacher's, per class, and the bound."""
    table = Table(
        title=f"revmux eval: {r.task} ({r.num_examples} rows), {r.mux} N={r.n} k={r.k} on {r.backbone}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row(
        f"accuracy (mean ± std over {r.groupings})", f"{r.accuracy_mean:.2%} ± {r.accuracy_std:.2%}"
    )
    table.add_row("teacher accuracy (N=1)", _pct(r.teacher_accuracy))
    table.add_row("agreement with teacher", _pct(r.agreement))
    table.add_row("partner sensitivity", _pct(r.partner_sensitivity))
    for name, acc in r.per_class_accuracy.items():
        table.add_row(f"  class {name}", f"{_pct(acc)} (teacher {_pct(r.teacher_per_class_accuracy[name])})")
    table.add_row("speedup bound S(k, N)", f"{r.bound:.2f}x")
    table.add_row("trainable parameters", f"{r.trainable_params:,}")
    return table


def predict_table(title: str, texts: list[str], results: list[list[dict[str, Any]]]) -> Table:
    """`revmux predict`: each text with its labels, highest score first."""
    table = Table(title=title)
    table.add_column("text", overflow="fold")
    table.add_column("label")
    table.add_column("score", justify="right")
    for text, preds in zip(texts, results, strict=True):
        for j, p in enumerate(preds):
            table.add_row(text if j == 0 else "", p["label"], f"{p['score']:.4f}")
    return table


def bench_table(result: dict) -> Table:
    """The human table of a bench result: one row per batch size."""
    from revmux.bench import fmt_best, fmt_mb, fmt_share, fmt_sorted, peak_mb

    table = Table(
        title=f"revmux bench: {result['model']} ({result['model_type']}, L={result['num_layers']}) "
        f"{result['mux']} N={result['n']} k={result['k']} on {result['device']}, {result['threads']} threads",
        caption=f"median of {result['repeats']} interleaved repeats; pipeline includes tokenization; "
        f"mux backbone {result.get('quantize', 'none')}; efficiency against "
        f"{result.get('efficiency_baseline', 'plain (padded)')}",
    )
    rates = ("plain\nreq/s", "pipeline\nreq/s", "mux\nreq/s")
    for col in (
        "batch",
        *rates,
        "speedup",
        "bound",
        "effic-\niency",
        "vs sorted\nplain",
        "vs best\nplain",
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
            fmt_best(r),
            fmt_share(r),
            f"{fmt_mb(peak_mb(r, 'plain'))}/{fmt_mb(peak_mb(r, 'mux'))}",
        )
    return table


def demo_table(result: dict, n: int, k: int) -> Table:
    """`revmux demo`: the teacher, the multiplexed adapters and their measured speed, in one table."""
    table = Table(title=f"revmux demo: MiniLM-L6 on SST-2 (bundled sample), N={n}, k={k}")
    table.add_column("")
    table.add_column("value", justify="right")

    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    table.add_row("teacher accuracy (N=1, dev)", pct(result["teacher_accuracy"]))
    table.add_row(
        f"multiplexed accuracy (N={n}, mean ± std, {result['groupings']} groupings)",
        f"{pct(result['accuracy_mean'])} ± {100 * result['accuracy_std']:.1f}",
    )
    table.add_row("agreement with teacher", pct(result["agreement"]))
    table.add_row("partner sensitivity", pct(result["partner_sensitivity"] or 0.0))
    table.add_row(f"plain req/s (batch {result['bench_batch_size']})", f"{result['plain_rps']:.1f}")
    table.add_row("multiplexed req/s", f"{result['mux_rps']:.1f}")
    table.add_row("speedup vs padded plain (same run)", f"{result['speedup']:.2f}x")
    if result.get("best_plain"):  # results written before the honest baselines lack it
        table.add_row(
            f"speedup vs best plain ({result['best_plain']})", f"{result['speedup_vs_best_plain']:.2f}x"
        )
    if "quantized_accuracy_mean" in result:
        table.add_row(
            f"teacher accuracy, {result['quantize']} backbone", pct(result["quantized_teacher_accuracy"])
        )
        table.add_row(
            f"multiplexed accuracy, {result['quantize']} backbone", pct(result["quantized_accuracy_mean"])
        )
    table.add_row("cost-model bound S(k,N)", f"{result['bound']:.2f}x")
    table.add_row("total time", f"{result['total_seconds'] / 60:.1f} min")
    return table
