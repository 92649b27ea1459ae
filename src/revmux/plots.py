"""Figures from `revmux bench` JSON and accuracy-frontier JSON, written as PNG with matplotlib's Agg backend.

What it is: readers that check the JSON and turn it into plain series (no matplotlib needed), and two
drawing functions: throughput (req/s) vs batch size, plain and mux per bench file; accuracy against
measured requests/s, one panel per backbone and task, each mux kind's best recipe as a line and the plain
variants a user could deploy instead as reference lines. What it is not: a dashboard or a
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
    n: int | None = None  # a frontier line's N (its points differ in k)


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


PLAIN_VARIANTS = {
    "plain_sorted": "torch fp32",
    "plain_int8_sorted": "torch int8",
    "plain_bf16_sorted": "torch bf16",
    "ort_fp32_sorted": "ORT fp32",
    "ort_int8_sorted": "ORT int8",
}
"""The plain models a user could deploy instead (length-sorted), as `revmux bench` names them: their labels."""
FRONTIER_BATCH = 128  # the batch size whose measured requests/s place the frontier's points


@dataclass
class FrontierPanel:
    """One backbone and task: per mux kind its best timed recipe as a line of (requests/s, points vs teacher).

    `plain` holds each plain variant's requests/s (median over the panel's bench runs); `untimed` names the
    panel's rows without an honest timing at this batch size, which are in the tables but not the figure.
    """

    backbone: str
    task: str
    series: list[Series]
    plain: dict[str, float]
    untimed: list[str]


def bench_task(report: dict[str, Any]) -> str | None:
    """The task whose dev texts a bench report timed (its `task`, else read from its `texts` path)."""
    if report.get("task"):
        return str(report["task"])
    from revmux.data import TASKS

    path = str(report.get("texts") or "").replace("\\", "/")
    for name, spec in TASKS.items():
        if f"/{spec.dir}/" in path or f"/{name}/" in path:
            return name
    return None


def honest_timings(reports: Sequence[dict[str, Any]], batch: int) -> dict[tuple, dict[str, Any]]:
    """(backbone, task, N, k) -> the run at `batch` of every fp32 torch-backend report (as frontier rows are)."""
    out: dict[tuple, dict[str, Any]] = {}
    for report in reports:
        plain_backbone = report.get("quantize") in (None, "none") and report.get("backend") in (None, "torch")
        if (
            not plain_backbone
            or report.get("dtype", "fp32") not in ("fp32", "float32")
            or report.get("mux", "revmux") != "revmux"
        ):
            continue
        task = bench_task(report)
        for run in report["runs"]:
            if run["batch_size"] == batch and run.get("speedup_vs_best_plain") is not None:
                out[(report.get("model"), task, int(run["n"]), int(run["k"]))] = run
    return out


def frontier_panels(
    rows: Sequence[dict[str, Any]],
    reports: Sequence[dict[str, Any]],
    batch: int = FRONTIER_BATCH,
    prefer: Sequence[str] = (),
) -> list[FrontierPanel]:
    """Panels of the frontier figure: rows placed at the requests/s their (backbone, task, N, k) measured.

    Timings come from `revmux bench` reports (fp32, torch backend); the multiplexed speed does not depend
    on the adapters' weights, so one timing serves every kind and recipe at that cell. Each mux kind's line
    is the first recipe of `prefer` (e.g. the default recipe's names) with a timed cell of that kind, else
    its recipe with the most timed cells (then the highest mean accuracy); y = accuracy minus the row's own
    teacher, in points (accuracies in [0, 1] are fractions, larger ones percentages).
    """
    timings = honest_timings(reports, batch)
    by_panel: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if int(row["n"]) > 1:
            by_panel[(str(row["backbone"]), str(row["task"]))].append(row)
    panels = []
    for (backbone, task), sub in sorted(by_panel.items()):
        cells: dict[tuple[str, str], dict[tuple[int, int], list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        untimed = []
        for row in sub:
            acc, teacher = float(row["accuracy_mean"]), float(row["teacher_accuracy"])
            scale = 100.0 if max(acc, teacher) <= 1.0 else 1.0
            key = (int(row["n"]), int(row["k"]))
            if (backbone, task, *key) not in timings:
                untimed.append(f"{row['mux']} N={key[0]},k={key[1]} ({row.get('recipe', 'default')})")
                continue
            cells[(str(row["mux"]), str(row.get("recipe", "default")))][key].append((acc - teacher) * scale)
        series = []
        for (kind, n), recipe in sorted(_line_recipes(cells, prefer).items()):
            xy = sorted(  # one line per kind and N: its points differ in k
                (float(timings[(backbone, task, *c)]["mux_rps"]), statistics.mean(v), c)
                for c, v in cells[(kind, recipe)].items()
                if c[0] == n
            )
            label, notes = f"{kind} ({recipe})", [f"N={c[0]},k={c[1]}" for *_, c in xy]
            series.append(Series(label, [p[0] for p in xy], [p[1] for p in xy], notes=notes, n=n))
        runs = [run for key, run in timings.items() if key[:2] == (backbone, task)]
        plain = {
            v: statistics.median(float(r[f"{v}_rps"]) for r in runs if r.get(f"{v}_rps"))
            for v in PLAIN_VARIANTS
            if any(r.get(f"{v}_rps") for r in runs)
        }
        floor = plain.get("plain_sorted", 0.0)  # a variant slower than fp32 (emulated bf16) is no alternative
        plain = {v: rps for v, rps in plain.items() if rps >= floor}
        panels.append(FrontierPanel(backbone, task, series, plain, sorted(set(untimed))))
    return panels


def _line_recipes(
    cells: dict[tuple[str, str], dict[tuple[int, int], list[float]]], prefer: Sequence[str]
) -> dict[tuple[str, int], str]:
    """(kind, N) -> the recipe drawn: the kind's best recipe (the first of `prefer` it has, then the most
    timed cells, then the highest mean accuracy) at every N it has; an N it lacks comes from the next recipe
    of `prefer` the kind has at that N (none outside `prefer`: a panel stays one recipe per kind otherwise)."""

    def score(recipe: str, points: dict[tuple[int, int], list[float]]) -> tuple[int, int, float]:
        rank = len(prefer) - list(prefer).index(recipe) if recipe in prefer else 0
        return (rank, len(points), statistics.mean(statistics.mean(v) for v in points.values()))

    lines: dict[tuple[str, int], str] = {}
    own: dict[str, str] = {}  # kind -> its best recipe: first in this order, so its Ns are its own
    for (kind, recipe), points in sorted(cells.items(), key=lambda kv: score(kv[0][1], kv[1]), reverse=True):
        if own.setdefault(kind, recipe) == recipe or recipe in prefer:
            for n in {c[0] for c in points}:
                lines.setdefault((kind, n), recipe)
    return lines


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


def plot_frontier(
    frontier_file: str | Path | Sequence[dict[str, Any]],
    reports: Sequence[dict[str, Any]],
    out_dir: str | Path,
    batch: int = FRONTIER_BATCH,
    prefer: Sequence[str] = (),
) -> Path:
    """frontier.png: accuracy vs teacher (points) against measured requests/s, one panel per backbone and task
    with timings, each mux kind's best recipe as one line and the plain variants as vertical reference lines.

    `frontier_file` is a frontier JSON file or its rows already loaded; `reports` are `revmux bench` reports
    (fp32) of the same backbones and tasks; `prefer`: recipe names drawn first (`frontier_panels`). DataError
    when no row has a timing."""
    rows = load_frontier(frontier_file) if isinstance(frontier_file, (str, Path)) else list(frontier_file)
    panels = [p for p in frontier_panels(rows, reports, batch, prefer) if p.series]
    if not panels:
        raise DataError(
            f"no frontier row has a measured timing at batch {batch}: pass `revmux bench --out` JSON (fp32) of "
            "the rows' backbone, task (--task), N and k."
        )
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    styles = ["-", "--", "-.", ":"]  # per N, in increasing order: N=2 solid, N=4 dashed
    for ax, panel in zip(axes[0], panels, strict=True):
        colors: dict[str, Any] = {}
        ns = sorted({s.n for s in panel.series if s.n is not None})
        for s in panel.series:
            style = styles[ns.index(s.n) % len(styles)] if s.n in ns else "-"
            marker = "os^D"[ns.index(s.n) % 4] if s.n in ns else "o"
            label = s.label if s.label not in colors else None  # one legend entry per kind
            (line,) = ax.plot(
                s.x, s.y, linestyle=style, marker=marker, label=label, color=colors.get(s.label)
            )
            colors.setdefault(s.label, line.get_color())
            for x, y, note in zip(s.x, s.y, s.notes or [], strict=True):
                ax.annotate(note, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
        for i, (name, rps) in enumerate(sorted(panel.plain.items(), key=lambda kv: kv[1])):
            ax.axvline(rps, color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                PLAIN_VARIANTS[name], (rps, 0), xycoords=("data", "axes fraction"), rotation=90,
                xytext=(2, 4 + 50 * (i % 2)), textcoords="offset points", fontsize="x-small", color="grey",
            )  # fmt: skip
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{panel.backbone} {panel.task} (batch {batch})")
        lines = ", ".join(f"N={n} {'solid dashed dash-dot dotted'.split()[i % 4]}" for i, n in enumerate(ns))
        ax.set_xlabel(f"measured requests/s ({lines}; grey: plain, length-sorted)")
        ax.set_ylabel("accuracy vs its teacher (points)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="best")
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
        reports = [r for f in bench_files for r in load_bench_reports(f)]
        paths.append(plot_frontier(frontier_file, reports, out_dir))
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
