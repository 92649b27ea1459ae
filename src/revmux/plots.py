"""Figures from `revmux bench` JSON and accuracy-frontier JSON, written as PNG with matplotlib's Agg backend.

What it is: readers that check the JSON and turn it into plain series (no matplotlib needed), and two
drawing functions: throughput (req/s) vs batch size, plain and mux per bench file; accuracy drop
(points) vs speedup, one series per mux kind and one panel per task. What it is not: a dashboard or a
report generator. matplotlib is optional and imported only inside `_pyplot`.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revmux.errors import DataError, RevmuxError

FRONTIER_KEYS = ("task", "backbone", "mux", "n", "k", "accuracy_mean", "teacher_accuracy", "bound")


@dataclass
class Series:
    """One line of a figure: x and y values in x order, a legend label, and whether points are measured."""

    label: str
    x: list[float]
    y: list[float]
    measured: list[bool] | None = None
    notes: list[str] | None = None
    dashed: bool = False


# ---- readers (no matplotlib) -------------------------------------------------------------------------
def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file {path} not found.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} file {path} is not valid JSON ({exc}).") from exc


def load_bench_reports(path: str | Path) -> list[dict[str, Any]]:
    """The reports in a bench JSON: one `revmux bench` object, a list of them, or {"reports": [...]}."""
    data = _read_json(path, "bench")
    reports = data.get("reports", [data]) if isinstance(data, dict) else data
    if not isinstance(reports, list) or not reports:
        raise DataError(
            f"bench file {path} holds no report; expected the JSON written by `revmux bench --out`."
        )
    for i, report in enumerate(reports):
        runs = report.get("runs") if isinstance(report, dict) else None
        if not isinstance(runs, list) or not runs:
            raise DataError(
                f"bench file {path}, report {i}: no 'runs' list; was it written by `revmux bench`?"
            )
        for j, run in enumerate(runs):
            missing = [key for key in ("batch_size", "plain_rps", "mux_rps") if key not in run]
            if missing:
                raise DataError(f"bench file {path}, report {i}, run {j}: missing keys {missing}.")
    return reports


def throughput_series(reports: Sequence[dict[str, Any]], name: str) -> list[Series]:
    """Plain req/s (median over reports per batch size, since plain ignores N and k), then mux per report."""
    plain: dict[int, list[float]] = defaultdict(list)
    out: list[Series] = []
    for report in reports:
        runs = sorted(report["runs"], key=lambda r: r["batch_size"])
        for r in runs:
            plain[int(r["batch_size"])].append(float(r["plain_rps"]))
        label = f"{name} {report.get('mux', 'mux')} N={report.get('n', runs[0].get('n'))} k={report.get('k', runs[0].get('k'))}"
        out.append(Series(label, [r["batch_size"] for r in runs], [float(r["mux_rps"]) for r in runs]))
    sizes = sorted(plain)
    base = Series(f"{name} plain", list(sizes), [statistics.median(plain[b]) for b in sizes], dashed=True)
    return [base, *out]


def load_frontier(path: str | Path) -> list[dict[str, Any]]:
    """Frontier rows (a list, or {"rows": [...]}) with the keys of FRONTIER_KEYS; DataError names what is missing."""
    data = _read_json(path, "frontier")
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows:
        raise DataError(
            f"frontier file {path} must hold a non-empty list of rows with keys {list(FRONTIER_KEYS)}."
        )
    for i, row in enumerate(rows):
        missing = [key for key in FRONTIER_KEYS if not isinstance(row, dict) or key not in row]
        if missing:
            raise DataError(f"frontier file {path}, row {i}: missing keys {missing}.")
    return rows


def frontier_series(rows: Sequence[dict[str, Any]]) -> dict[str, list[Series]]:
    """Per task, one Series per mux kind: x = speedup (measured if present, else the bound), y = accuracy drop in points.

    Accuracies in [0, 1] are fractions and are scaled to points (x100); larger ones are already percentages.
    """
    by_task: dict[str, dict[str, list[tuple[float, float, bool, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        acc, teacher = float(row["accuracy_mean"]), float(row["teacher_accuracy"])
        scale = 100.0 if max(acc, teacher) <= 1.0 else 1.0
        measured = row.get("measured_speedup") is not None
        x = float(row["measured_speedup"] if measured else row["bound"])
        point = (x, (teacher - acc) * scale, measured, f"N={row['n']},k={row['k']}")
        recipe = row.get("recipe", "default")
        label = f"{row['mux']} ({row['backbone']}{'' if recipe == 'default' else ', ' + recipe})"
        by_task[str(row["task"])][label].append(point)
    out: dict[str, list[Series]] = {}
    for task, kinds in sorted(by_task.items()):
        out[task] = []
        for kind, points in sorted(kinds.items()):
            points.sort()
            out[task].append(
                Series(
                    kind,
                    [p[0] for p in points],
                    [p[1] for p in points],
                    measured=[p[2] for p in points],
                    notes=[p[3] for p in points],
                )
            )
    return out


# ---- drawing -----------------------------------------------------------------------------------------
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RevmuxError(
            "revmux plot needs matplotlib, which is not installed. Install it with: pip install matplotlib"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(bench_files: Sequence[str | Path], out_dir: str | Path) -> Path:
    """throughput.png: req/s vs batch size, one panel per bench file, plain (dashed) and mux lines."""
    panels = [(Path(f).stem, throughput_series(load_bench_reports(f), Path(f).stem)) for f in bench_files]
    plt = _pyplot()
    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels, strict=True):
        for s in series:
            label = s.label.removeprefix(f"{name} ")
            ax.plot(s.x, s.y, linestyle="--" if s.dashed else "-", marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({x for s in series for x in s.x}))
        ax.get_xaxis().set_major_formatter(ScalarFormatter())
        ax.set_xlabel("batch size (requests)")
        ax.set_ylabel("throughput (requests/s)")
        ax.set_title(f"{name}: plain vs multiplexed")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, plt, Path(out_dir) / "throughput.png")


def plot_frontier(frontier_file: str | Path | Sequence[dict[str, Any]], out_dir: str | Path) -> Path:
    """frontier.png: accuracy drop (points) vs speedup, one series per mux kind, one panel per task.

    `frontier_file` is a frontier JSON file or its rows already loaded."""
    rows = load_frontier(frontier_file) if isinstance(frontier_file, (str, Path)) else list(frontier_file)
    panels = frontier_series(rows)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (task, series) in zip(axes[0], panels.items(), strict=True):
        for s in series:
            (line,) = ax.plot(s.x, s.y, linestyle="-", label=s.label)
            for x, y, measured, note in zip(s.x, s.y, s.measured or [], s.notes or [], strict=True):
                face = line.get_color() if measured else "none"
                ax.plot([x], [y], marker="o", color=line.get_color(), markerfacecolor=face)
                ax.annotate(note, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(task)
        ax.set_xlabel("speedup (filled: measured, hollow: bound S(k,N))")
        ax.set_ylabel("accuracy drop vs teacher (points)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, plt, Path(out_dir) / "frontier.png")


def make_plots(
    bench_files: Sequence[str | Path], frontier_file: str | Path | None, out_dir: str | Path
) -> list[Path]:
    """Every figure the inputs allow: throughput.png if bench files are given, frontier.png if a frontier is."""
    if not bench_files and frontier_file is None:
        raise DataError(
            "nothing to plot: pass --bench FILE.json (from `revmux bench --out`) and/or --frontier FILE.json."
        )
    paths = []
    if bench_files:
        paths.append(plot_throughput(bench_files, out_dir))
    if frontier_file is not None:
        paths.append(plot_frontier(frontier_file, out_dir))
    return paths


def plot_fallback(records: Sequence[dict[str, Any]], out_dir: str | Path) -> Path:
    """fallback.png: accuracy vs the share of answers re-run at N = 1, one line per adapter (its margins
    marked), the teacher's accuracy dashed (records of benchmarks/partners.py)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in records:
        sweep = r["fallback"]
        x = [100 * f["rerun_share"] for f in sweep]
        y = [100 * f["accuracy_mean"] for f in sweep]
        (line,) = ax.plot(x, y, marker="o", label=f"{r['adapter']} ({r['task']})")
        ax.axhline(100 * sweep[0]["teacher_accuracy"], color=line.get_color(), linestyle="--", alpha=0.6)
        for f, xi, yi in zip(sweep, x, y, strict=True):
            ax.annotate(
                f"{f['margin']:.1f}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7
            )
    ax.set_xlabel("answers re-run at N = 1 (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("confidence fallback: accuracy vs re-run share (labels: margin)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, plt, Path(out_dir) / "fallback.png")


def _save(fig: Any, plt: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
