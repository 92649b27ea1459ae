"""The targets docs/RESULTS.md checks the measured rows against: docs/results/targets.yaml, evaluated.

benchmarks/render_results.py renders the table this module computes; the targets themselves (which
backbone and task, which baseline recipe, which limits) are data in docs/results/targets.yaml, and
tests/test_render_results.py checks that every target names a known backbone, task, recipe and check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from revmux.plots import bench_task

DISPLAY = {
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "rte": "RTE",
    "qnli": "QNLI",
    "minilm": "MiniLM",
    "mpnet": "MPNet",
    "smollm2": "SmolLM2",
}


def load_targets(path: Path) -> dict[str, Any]:
    """docs/results/targets.yaml: the backbone, task and baseline recipe the targets look at, and the targets."""
    import yaml

    return yaml.safe_load(path.read_text())


def _display(name: str) -> str:
    return DISPLAY.get(name, name)


def targets_section(
    rows: list[dict] | None,
    bench: dict | None,
    spec: dict[str, Any],
    demo: dict | None = None,
    honest: list[dict] | None = None,
    quantized: tuple[dict | None, dict | None] | None = None,
    llm_rows: list[dict] | None = None,
) -> list[str]:
    """The targets of `spec` (targets.yaml), checked against the measured rows (computed, never typed).

    `demo`: docs/results/demo.json's result, the row of the `demo` recipe for the fidelity targets.
    `honest`: `revmux bench` reports of the backbone timed against every plain variant (bench_honest_*);
    the speed targets read them, and the older bench grid (`bench`) only where there are none.
    `quantized`: `revmux eval --json` of one adapter on its fp32 and on its int8 backbone (int8_accuracy).
    `llm_rows`: the decoder rows (smollm2_trained.json), read by the fidelity targets only."""
    out = ["| target | measured | met |", "|---|---|---|"]
    every = list(rows or []) + list(llm_rows or []) + ([_demo_row(demo)] if demo else [])
    for t in (t for t in spec["targets"] if t["check"] == "fidelity"):
        out += _fidelity(every, t)
    scope = [r for r in rows or [] if r["task"] == spec["task"] and r["backbone"] == spec["backbone"]]
    where = f"{_display(spec['task'])} {_display(spec['backbone'])}"
    by_check: dict[str, list[dict]] = {}
    for t in spec["targets"]:
        by_check.setdefault(t["check"], []).append(t)
    for t in by_check.get("drop_within", []):
        out += _drop_within(scope, t, where)
    for t in by_check.get("int8_accuracy", []):
        out += _int8_accuracy(quantized or (None, None), t)
    for r in (r for r in scope if r["mux"] == "revmux"):
        for t in spec["targets"]:
            if t["check"] == "beats":
                out += _beats(scope, r, t, spec["baseline_recipe"])
            elif (
                t["check"] == "partner_sensitivity"
                and r["n"] == t["n"]
                and r.get("partner_sensitivity") is not None
            ):
                ps, limit = 100 * r["partner_sensitivity"], t["max_percent"]
                out.append(
                    f"| partner sensitivity <= {limit:g}% at N={t['n']} (k={r['k']}, recipe {r['recipe']}) "
                    f"| {ps:.1f}% | {'yes' if ps <= limit else 'no'} |"
                )
            elif t["check"] == "train_minutes":
                limit = t["max_minutes"]
                out.append(
                    f"| adapter training <= {limit:g} min on 2 cores (N={r['n']}, k={r['k']}, recipe "
                    f"{r['recipe']}) | {r['train_seconds'] / 60:.1f} min "
                    f"| {'yes' if r['train_seconds'] <= 60 * limit else 'no'} |"
                )
    honest_runs = [(report, run) for report in honest or [] for run in report["runs"]]
    out += speed_targets(honest_runs, spec)
    runs = [run for report in (bench or {}).get("reports", []) for run in report["runs"]]
    name = _display(spec["backbone"])
    for t in by_check.get("adapter_share", []):
        shares = [(run["adapter_share"], run) for run in runs if run.get("adapter_share") is not None]
        if shares:
            top, run = max(shares, key=lambda s: s[0])
            out.append(
                f"| adapters <= {t['max_share']:.0%} of the mux forward, {name} (largest over the grid) | "
                f"{top:.1%} (N={run['n']}, k={run['k']}, batch {run['batch_size']}) "
                f"| {'yes' if top <= t['max_share'] else 'no'} |"
            )
    for t in by_check.get("efficiency", []):
        if honest_runs:
            out += _honest_efficiency(honest_runs, t, name)
            continue
        for run in runs:
            if run["batch_size"] >= t["min_batch_size"] and run["k"] in t["ks"]:
                # against length-sorted plain (older files' `efficiency` divided padded plain's time instead)
                eff = (
                    run["speedup_vs_sorted"] / run["bound"]
                    if run.get("speedup_vs_sorted")
                    else run["efficiency"]
                )
                limit = t["min_efficiency"]
                out.append(
                    f"| bench efficiency (vs length-sorted plain) >= {limit:g}, {name} N={run['n']}, k={run['k']}, batch "
                    f"{run['batch_size']} | {eff:.2f} | {'yes' if eff >= limit else 'no'} |"
                )
    return out + [""]


def cpu_name(report: dict) -> str:
    """The CPU a bench report ran on, by what its matmuls run on (`machine.cpu_isa`). Reports made before that
    field are the AVX2-only AMD EPYC's of the first tables."""
    isa = report.get("machine", {}).get("cpu_isa")
    if isa is None:
        return "the AVX2 CPU"
    if "AMX-BF16" in isa:
        return "the AMX CPU"
    if "AVX512-BF16" in isa:
        return "the AVX-512 CPU without AMX"
    return "a CPU with " + (", ".join(isa) or "unnamed matmul units")


def _variant(report: dict, cpu: bool = True) -> str:
    """How a bench report ran the mux's backbone: fp32, int8, int8 on ONNX Runtime layers, ..., and (`cpu`) on
    which CPU where it is not the first tables' AVX2 one (`cpu_name`)."""
    quant = report.get("quantize") or "none"
    name = "fp32" if quant == "none" else quant
    name += " (ONNX Runtime layers)" if report.get("backend") == "onnx" else ""
    where = cpu_name(report)
    return name + (f" on {where}" if cpu and where != "the AVX2 CPU" else "")


def _honest_efficiency(runs: list[tuple[dict, dict]], t: dict[str, Any], name: str) -> list[str]:
    """Efficiency against the length-sorted plain model of the mux's own precision, per honest bench run
    (SST-2 first, then the other tasks' texts)."""

    def order(rr: tuple[dict, dict]) -> tuple:
        task = bench_task(rr[0]) or ""
        return (task != "sst2", task, rr[1]["n"], rr[1]["k"], _variant(rr[0]), rr[1]["batch_size"])

    out = []
    for report, run in sorted(runs, key=order):
        if run["batch_size"] >= t["min_batch_size"] and run["k"] in t["ks"]:
            eff, limit = run["efficiency"], t["min_efficiency"]
            texts = _display(bench_task(report) or "own texts")
            out.append(
                f"| bench efficiency (vs length-sorted plain, {run.get('efficiency_baseline')}) >= {limit:g}, "
                f"{name} {texts} N={run['n']}, k={run['k']}, {_variant(report)}, batch {run['batch_size']} "
                f"| {eff:.2f} | {'yes' if eff >= limit else 'no'} |"
            )
    return out


def speed_targets(runs: list[tuple[dict, dict]], spec: dict[str, Any]) -> list[str]:
    """`vs_best_plain` targets: on each CPU (`cpu_name`), the fastest measured configuration at N (and k, if
    given), any backend, against the fastest plain variant timed in the same run (`runs`: (report, run) of the
    honest benches), at each batch size named. A CPU with no run of that N and batch gets no row; where no CPU
    has one, the row says it is not measured yet."""
    by_cpu: dict[str, list[tuple[dict, dict]]] = {}
    for report, run in runs:
        by_cpu.setdefault(cpu_name(report), []).append((report, run))
    out = []
    for t in (t for t in spec["targets"] if t["check"] == "vs_best_plain"):
        for batch in t["batch_sizes"]:
            cell = f"N={t['n']}" + (f", k={t['k']}" if t.get("k") is not None else " (any k)")
            rows = []
            for cpu, cpu_runs in by_cpu.items():
                cands = [
                    (run["speedup_vs_best_plain"], report, run)
                    for report, run in cpu_runs
                    if run["n"] == t["n"] and run["batch_size"] == batch and t.get("k") in (None, run["k"])
                ]
                if not cands:
                    continue
                ratio, report, run = max(cands, key=lambda c: c[0])
                rows.append(
                    f"| fastest {cell}, any backend, on {cpu}, >= {t['min_ratio']:g}x the best plain variant, "
                    f"batch {batch} | {ratio:.2f}x (k={run['k']}, {_variant(report, cpu=False)}, vs "
                    f"{run['best_plain']}) | {'yes' if ratio >= t['min_ratio'] else 'no'} |"
                )
            out += rows or [
                f"| fastest {cell}, any backend, >= {t['min_ratio']:g}x the best plain variant, batch {batch} "
                "| not measured yet | no |"
            ]
    return out


def _int8_accuracy(reports: tuple[dict | None, dict | None], t: dict[str, Any]) -> list[str]:
    """The int8 multiplexed model's accuracy within max_points of the same adapter's on its fp32 backbone."""
    fp32, int8 = reports
    what = f"the int8 multiplexed model within {t['max_points']:g} pts of the fp32 one"
    if not fp32 or not int8:
        return [f"| {what} | not measured yet | no |"]
    gap = 100 * (fp32["accuracy_mean"] - int8["accuracy_mean"])
    where = f"{_display(fp32['task'])}, N={fp32['n']}, k={fp32['k']}, the demo adapter"
    return [f"| {what} | {gap:.2f} pts ({where}) | {'yes' if gap <= t['max_points'] else 'no'} |"]


def _drop_within(scope: list[dict], t: dict[str, Any], where: str) -> list[str]:
    """The smallest RevMUX drop at N = t["n"] over k <= t["max_k"] and every recipe."""
    cands = [r for r in scope if r["mux"] == "revmux" and r["n"] == t["n"] and r["k"] <= t["max_k"]]
    r = min(cands, key=lambda r: r["teacher_accuracy"] - r["accuracy_mean"], default=None)
    if r is None:
        return []
    drop, limit = 100 * (r["teacher_accuracy"] - r["accuracy_mean"]), t["max_points"]
    return [
        f"| {where} revmux N={t['n']}, k<={t['max_k']}: within {limit:.1f} pts of the teacher | {drop:.2f} pts "
        f"(k={r['k']}, recipe {r['recipe']}) | {'yes' if drop <= limit else 'no'} |"
    ]


def _beats(scope: list[dict], r: dict, t: dict[str, Any], baseline_recipe: str) -> list[str]:
    """RevMUX row `r` against each baseline kind at its N and k: trained with the same recipe when there
    is one, else with the baseline recipe."""
    out = []
    for kind in t["baselines"]:
        base = {o["recipe"]: o for o in scope if (o["mux"], o["n"], o["k"]) == (kind, r["n"], r["k"])}
        other = base.get(r["recipe"], base.get(baseline_recipe))
        if other is None:
            continue
        better = r["accuracy_mean"] > other["accuracy_mean"]
        out.append(
            f"| revmux ({r['recipe']}) beats {kind} ({other['recipe']}) at N={r['n']}, k={r['k']} | "
            f"{100 * r['accuracy_mean']:.1f} vs {100 * other['accuracy_mean']:.1f} | {'yes' if better else 'no'} |"
        )
    return out


def _demo_row(demo: dict) -> dict:
    """demo.json's result as a row of the `demo` recipe (MiniLM SST-2, the bundled sample, one seed)."""
    row = {**demo, "backbone": demo["model"], "task": "sst2", "mux": "revmux", "recipe": "demo", "seed": 0}
    return row | {"train_seconds": demo.get("adapter_train_seconds")}


def _fidelity(rows: list[dict], t: dict[str, Any]) -> list[str]:
    """Issue-level fidelity target: the default recipe's row at (backbone, task, N, k) within max_points of
    its teacher, with agreement and partner sensitivity in bounds and, where the target sets max_minutes, the
    adapters trained within it (mean over seeds); "not measured" where no row exists."""
    cell = f"{_display(t['backbone'])} {_display(t['task'])} revmux N={t['n']}, k={t['k']}"
    limit = t.get("max_minutes")
    goal = (
        f"{cell} ({', '.join(t['recipes'])}): within {t['max_points']:g} pts, agreement >= "
        f"{t['min_agreement']:g}%, partner sensitivity <= {t['max_sensitivity']:g}%"
        + (f", training <= {limit:g} min" if limit is not None else "")
    )
    found = [
        r for r in rows
        if (r["backbone"], r["task"], r["mux"], r["n"], r["k"]) == (t["backbone"], t["task"], "revmux", t["n"], t["k"])
        and r["recipe"] in t["recipes"]
    ]  # fmt: skip
    if not found:
        return [f"| {goal} | not measured yet | no |"]
    by_recipe = {r["recipe"]: r for r in found}  # the last row of each recipe
    out = []
    for recipe, r in by_recipe.items():
        seeds = r.get("seeds") or sorted({o.get("seed", 0) for o in found if o["recipe"] == recipe})
        drop = 100 * (r["teacher_accuracy"] - r["accuracy_mean"])
        agree, sens = 100 * r["agreement"], 100 * (r["partner_sensitivity"] or 0)
        met = drop <= t["max_points"] and agree >= t["min_agreement"] and sens <= t["max_sensitivity"]
        minutes = r["train_seconds"] / 60 if r.get("train_seconds") is not None else None
        if limit is not None:
            met = met and minutes is not None and minutes <= limit
        took = "" if limit is None else (", time not recorded" if minutes is None else f", {minutes:.0f} min")
        spread = "" if r.get("seed_std") is None else f", accuracy ± {100 * r['seed_std']:.2f} over seeds"
        out.append(
            f"| {goal} | {drop:.2f} pts, {agree:.1f}%, {sens:.1f}%{took} (recipe {recipe}, {len(seeds)} seed"
            f"{'s' if len(seeds) > 1 else ''}{spread}) | {'yes' if met else 'no'} |"
        )
    return out
