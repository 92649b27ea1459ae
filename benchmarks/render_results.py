"""Render docs/RESULTS.md (and its plots) from the JSON files under docs/results/.

Every table is generated from the JSON written by the command shown beside it, so the document
is regenerated, never edited by hand: rerun the commands, then `python benchmarks/render_results.py`.
Prose that is not a measurement lives in docs/results/notes.md and is included verbatim; the targets
the rows are checked against live in docs/results/targets.yaml. This script only reads docs/results/:
it writes docs/RESULTS.md and the plots, never its inputs.

Longer than the ~400 lines our modules aim for, on purpose: it is one small function per RESULTS
section, in the order the document reads, and nothing else; splitting it would only scatter that order.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from result_targets import (  # sibling script: benchmarks/ is on sys.path
    load_targets,
    targets_section,
)

from revmux.backbones.encoder import EncoderView
from revmux.bench import fmt_mb, fmt_share, fmt_sorted, peak_mb
from revmux.demo import DemoSettings
from revmux.grid import merge_seeds
from revmux.plots import (
    FRONTIER_BATCH,
    bench_task,
    frontier_panels,
    honest_timings,
    plot_fallback,
    plot_frontier,
    plot_throughput,
)

RESULTS = Path("docs/results")
DOC = Path("docs/RESULTS.md")
RECIPES = "../src/revmux/configs/recipes"  # recipe files, relative to docs/RESULTS.md


def _load(name: str) -> Any:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def demo_section(demo: dict | None) -> list[str]:
    if not demo:
        return ["_No demo result yet: run `revmux demo --json > docs/results/demo.json`._", ""]
    r = demo["result"]
    best = f"{r['best_plain']} ({r['best_plain_rps']:.1f})" if r.get("best_plain") else "n/a"
    vs_best = f"{r['speedup_vs_best_plain']:.2f}x" if r.get("speedup_vs_best_plain") else "n/a"
    return [
        f"Command: `{demo['command']}` (the code and defaults of `revmux demo`, recording command, machine "
        "and date)  ",
        f"Machine: {demo['machine']}; date: {demo['date']}; recipe {recipe({'recipe': DemoSettings().recipe})}",
        "",
        "| teacher acc | mux acc (N={n}, k={k}) | drop | agreement | partner sensitivity | plain req/s | mux req/s "
        "| speedup vs padded | best plain (req/s) | mux vs best plain | bound | total time |".format(
            n=r["n"], k=r["k"]
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        f"| {100 * r['teacher_accuracy']:.2f}% | {100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}% "
        f"| {100 * (r['teacher_accuracy'] - r['accuracy_mean']):.2f} pts | {100 * r['agreement']:.1f}% "
        f"| {100 * (r['partner_sensitivity'] or 0):.1f}% | {r['plain_rps']:.1f} | {r['mux_rps']:.1f} "
        f"| {r['speedup']:.2f}x | {best} | {vs_best} | {r['bound']:.2f}x | {r['total_seconds'] / 60:.1f} min |",
        "",
        f"Its bench: batch {r['bench_batch_size']}, the fp32 mux against the plain variants that can be the "
        f"fastest here (`--baselines {DemoSettings().bench_baselines}`: all but ONNX Runtime fp32, which no "
        f"bench here found fastest; bf16 where native), medians of "
        f"{DemoSettings().bench_repeats} interleaved rounds. Teacher {r['teacher_train_seconds']:.0f} s and "
        f"adapters {r['adapter_train_seconds']:.0f} s of the total.",
        "",
    ]


def attach_measured_speedups(rows: list[dict], honest: list[dict]) -> None:
    """Rows get the speedup against the fastest plain variant that the honest bench measured at their
    backbone, task, N and k (fp32, batch FRONTIER_BATCH): the multiplexed speed does not depend on the
    adapters' weights or kind. Rows without such a timing get none."""
    timings = honest_timings(honest, FRONTIER_BATCH)
    for row in rows:
        run = timings.get((row["backbone"], row["task"], row["n"], row["k"]))
        row.pop("measured_speedup", None)
        if run is not None:
            row["measured_speedup"] = run["speedup_vs_best_plain"]


def default_recipes(targets: dict[str, Any]) -> list[str]:
    """The recipes the fidelity targets judge (what `revmux train` does without flags), in targets.yaml's
    order: the frontier figure draws each mux kind's rows of the first of them it has."""
    names = [r for t in targets["targets"] if t["check"] == "fidelity" for r in t["recipes"]]
    return list(dict.fromkeys(names))


def frontier_caption(rows: list[dict], honest: list[dict], prefer: list[str]) -> list[str]:
    """What frontier.png shows, and which rows it leaves out for want of a timing."""
    panels = frontier_panels(rows, honest, FRONTIER_BATCH, prefer)
    drawn = [p for p in panels if p.series]
    if not drawn:
        return [
            "_No frontier figure: no row has an honest timing yet (the commands of the throughput section)._",
            "",
        ]
    left = [f"{p.backbone} {p.task}" for p in panels if not p.series]
    partial = [
        f"{p.backbone} {p.task}, {len(p.untimed)} rows at "
        + ", ".join(sorted({u.split(" ")[1] for u in p.untimed}))
        for p in drawn
        if p.untimed
    ]
    return [
        "![accuracy vs measured throughput](frontier.png)",
        "",
        "Each panel places one recipe per mux kind: the default recipe's rows where that kind has them (the "
        f"first of {', '.join(f'`{r}`' for r in prefer)} present, so RevMUX and its baselines share a recipe), "
        "else the kind's recipe with the most timed cells (then the highest mean accuracy); an N that recipe has "
        "no row of comes from the next of those default recipes the kind has there (its legend names it). A "
        "point sits at the "
        f"requests/s its N and k measured at batch {FRONTIER_BATCH} in the honest bench "
        "(fp32, torch; the multiplexed speed does not depend on the adapters' weights), against its own "
        "teacher; dotted lines are the plain models a user could deploy instead, timed in the same bench runs (those "
        "slower than torch fp32, such as bf16 on a CPU that emulates it, are left out)."
        + (f" No timing yet, so no panel: {', '.join(left)}." if left else "")
        + (f" Left out for want of a timing of their N and k: {'; '.join(partial)}." if partial else ""),
        "",
    ]


def recipe(row: dict) -> str:
    """A row's recipe as a link to its file (src/revmux/configs/recipes/<name>.yaml)."""
    return f"[{row['recipe']}]({RECIPES}/{row['recipe']}.yaml)"


def machines(rows: list[dict]) -> str:
    """'Machine: M' for rows run on one machine, else 'Machines: M1; M2' (each once, in row order)."""
    seen = list(dict.fromkeys(r["machine"] for r in rows))
    return f"Machine{'s' if len(seen) > 1 else ''}: {'; '.join(seen)}"


def grid_commands(rows: list[dict], out: str) -> list[str]:
    """One `benchmarks/grid.py` command per (backbone, task, recipe, data) that reruns these rows: rows whose
    own command had no --data-dir were trained on the bundled SST-2 sample, and their command has none."""
    cells: dict[tuple[str, str, str, str], list[str]] = {}
    for r in rows:
        cell = "teacher:1:0" if r["n"] == 1 else f"{r['mux']}:{r['n']}:{r['k']}"
        data = " --data-dir ../shared/data/glue" if "--data-dir" in r.get("command", "--data-dir") else ""
        cells.setdefault((r["backbone"], r["task"], r["recipe"], data), []).append(cell)
    return [
        f"python benchmarks/grid.py --backbone {b} --task {t} --recipe {name} --grid {','.join(c)}{data} "
        f"--out {out}"
        for (b, t, name, data), c in cells.items()
    ]


def frontier_section(rows: list[dict] | None) -> list[str]:
    if not rows:
        return ["_No frontier rows yet: run benchmarks/grid.py._", ""]
    out = []
    for task in sorted({r["task"] for r in rows}):
        sub = [r for r in rows if r["task"] == task]
        out += [f"#### {task}", ""]
        out += [
            "| backbone | mux | recipe | N | k | accuracy (mean ± std over groupings; over seeds) | teacher | drop (pts) | agreement "
            f"| partner sens. | bound S(k,N) | measured vs best plain (batch {FRONTIER_BATCH}) | trainable params "
            "| train s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(sub, key=lambda r: (r["backbone"], r["k"], r["n"], r["mux"])):  # stable: run order
            ps = r.get("partner_sensitivity")
            ms = r.get("measured_speedup")
            seeds = (
                ""
                if r.get("seed_std") is None
                else f" (seeds {len(r['seeds'])}: ± {100 * r['seed_std']:.1f})"
            )
            out.append(
                f"| {r['backbone']} | {r['mux']} | {recipe(r)} | {r['n']} | {r['k']} | {100 * r['accuracy_mean']:.1f} ± "
                f"{100 * r['accuracy_std']:.1f}{seeds} | {100 * r['teacher_accuracy']:.1f} | "
                f"{100 * (r['teacher_accuracy'] - r['accuracy_mean']):.1f} | {100 * r['agreement']:.1f} | "
                f"{'n/a' if ps is None else f'{100 * ps:.1f}%'} | {r['bound']:.2f}x | "
                f"{'—' if ms is None else f'{ms:.2f}x'} | {r['trainable_params']:,} | {r['train_seconds']:.0f} |"
            )
        cmds = sorted({c for r in sub for c in r.get("commands", [r["command"]])})
        out += ["", "Commands (each row's exact command is also in frontier.json):", ""]
        out += [f"- `{c}`" for c in cmds]
        out += ["", "The same rows from their recipes with the grid runner:", ""]
        out += [f"- `{c}`" for c in grid_commands(sub, "docs/results/frontier.json")]
        dates = sorted({d for r in sub for d in r.get("dates", [r["date"]])})  # every seed's run
        out += ["", f"{machines(sub)}; dates: {', '.join(dates)}", ""]
    return out


def bench_section(name: str, bench: dict | None) -> list[str]:
    if not bench:
        return [f"_No {name} bench yet: run benchmarks/bench_grid.py._", ""]
    first = bench["reports"][0]
    out = [
        f"Command: `{bench['command']}`  ",
        f"Machine: {bench['machine']}; torch {first['torch_version']}; date: {bench['date']}  ",
        f"Median of {first['repeats']} interleaved repeats (plain, pipeline, mux) after warm-up; fresh RevMUX "
        "adapters (speed does not depend on trained weights); real SST-2 dev sentences.",
        "",
        "| N | k | batch | plain req/s | pipeline req/s | mux req/s | speedup | bound | efficiency "
        "| speedup vs length-sorted plain | adapters % of mux | peak MB plain | peak MB mux |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for report in bench["reports"]:
        for r in report["runs"]:
            pipe = r.get("pipeline_rps")
            out.append(
                f"| {r['n']} | {r['k']} | {r['batch_size']} | {r['plain_rps']:.1f} | "
                f"{'—' if pipe is None else f'{pipe:.1f}'} | {r['mux_rps']:.1f} | {r['speedup']:.2f}x | "
                f"{r['bound']:.2f}x | {r['efficiency']:.0%} | {fmt_sorted(r)} | {fmt_share(r)} | "
                f"{fmt_mb(peak_mb(r, 'plain'))} | "
                f"{fmt_mb(peak_mb(r, 'mux'))} |"
            )
    return out + [""]


def runs_by_cell(bench: dict) -> dict[tuple[int, int, int], dict]:
    """A bench grid's runs keyed by (N, k, batch size)."""
    return {(r["n"], r["k"], r["batch_size"]): r for rep in bench["reports"] for r in rep["runs"]}


def length_aware_section(on: dict | None, off: dict | None) -> list[str]:
    if not (on and off):
        return ["_No length-aware comparison yet._", ""]
    out = [
        f"Commands: `{on['command']}` and `{off['command']}`  ",
        f"Machine: {on['machine']}; dates: {on['date']}, {off['date']}  ",
        "Both runs time plain and mux interleaved; the speedup columns are each run's own ratio. Slot waste is "
        "the share of padded request slots inside the composites' attended span.",
        "",
        "| N | k | batch | speedup, length-aware | speedup, arrival order | slot waste, length-aware "
        "| slot waste, arrival order | padding in plain batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs_off = runs_by_cell(off)
    for rep in on["reports"]:
        for r in rep["runs"]:
            o = runs_off.get((r["n"], r["k"], r["batch_size"]))
            if o is None:
                continue
            out.append(
                f"| {r['n']} | {r['k']} | {r['batch_size']} | {r['speedup']:.2f}x | {o['speedup']:.2f}x | "
                f"{r['slot_waste_mux']:.1%} | {o['slot_waste_mux']:.1%} | {r['padding_waste_plain']:.1%} |"
            )
    return out + [""]


def compile_section(eager: dict | None, compiled: dict | None) -> list[str]:
    """Eager vs torch.compile'd layers: each run's own plain and mux req/s and speedup."""
    if not (eager and compiled):
        return ["_No torch.compile comparison yet._", ""]
    first = compiled["reports"][0]
    out = [
        f"Commands: `{eager['command']}` (eager) and `{compiled['command']}` (compiled), run one after the "
        "other  ",
        f"Machine: {compiled['machine']}; dates: {eager['date']}, {compiled['date']}  ",
        "In the compiled run every backbone layer is wrapped in `torch.compile(dynamic=True)`, so plain and "
        "mux both run compiled layers; compilation happens in the warm-up rounds "
        f"({first.get('compile_seconds', 0):.2f} s to wrap, compile time itself excluded from the medians). "
        "Speedups are each run's own plain/mux ratio; req/s of the two runs are minutes apart.",
        "",
        "| N | k | batch | plain req/s eager | plain req/s compiled | mux req/s eager | mux req/s compiled "
        "| speedup eager | speedup compiled |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    eager_runs = runs_by_cell(eager)
    for rep in compiled["reports"]:
        for r in rep["runs"]:
            e = eager_runs.get((r["n"], r["k"], r["batch_size"]))
            if e is None:
                continue
            out.append(
                f"| {r['n']} | {r['k']} | {r['batch_size']} | {e['plain_rps']:.1f} | {r['plain_rps']:.1f} | "
                f"{e['mux_rps']:.1f} | {r['mux_rps']:.1f} | {e['speedup']:.2f}x | {r['speedup']:.2f}x |"
            )
    return out + [""]


def cache_section(c: dict | None) -> list[str]:
    """Adapter training with the prefill/teacher cache vs running the backbone live."""
    if not c:
        return ["_No cache measurement yet: run benchmarks/cache_speedup.py._", ""]
    return [
        f"Command: `{c['command']}`  ",
        f"Machine: {c['machine']}; date: {c['date']}  ",
        f"{c['task']}, {c['rows']} train rows, revmux N={c['n']}, k={c['k']}, {c['epochs']} epoch(s), same seed "
        "for both runs.",
        "",
        "| cache build (once) | epoch with cache | epoch without cache (live backbone) | speedup per epoch |",
        "|---:|---:|---:|---:|",
        f"| {c['cache_build_seconds']:.1f} s | {c['epoch_seconds_cached']:.1f} s | {c['epoch_seconds_live']:.1f} s "
        f"| {c['speedup']:.2f}x |",
        "",
    ]


def llm_section(llm: dict | None, rows: list[dict] | None) -> list[str]:
    """SmolLM2: zero-shot prompt teacher per task, multiplexed speed per (N, k), and any trained rows."""
    if not llm:
        return ["_No SmolLM2 rows yet: run benchmarks/llm_rows.py._", ""]
    out = []
    for task, t in llm["tasks"].items():
        z, p = t["zero_shot"], t["prompt"]
        out += [
            f"#### {task}",
            "",
            f"Command: `{t['command']}`  ",
            f"Machine: {t['machine']}; date: {t['date']}  ",
            *(
                [
                    f"Zero-shot figures kept from `{t['zero_shot_command']}` ({t['zero_shot_date']}), same prompt  "
                ]
                if t.get("zero_shot_date", t["date"]) != t["date"]
                else []
            ),
            f"Teacher: {t['model']} ({t['num_layers']} layers), {p['style']} prompt, instruction "
            f'"{p["instruction"]}", verbalizer {", ".join(p["words"])}; zero-shot accuracy on dev '
            f"({z['num_examples']} rows): **{100 * z['teacher_accuracy']:.1f}%** (per class: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in z["teacher_per_class_accuracy"].items())
            + ").",
            "",
            "| N | k | batch | plain req/s | mux req/s | speedup | bound | efficiency "
            "| speedup vs length-sorted plain | adapters % of mux |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in t["bench"]:
            out.append(
                f"| {r['n']} | {r['k']} | {r['batch_size']} | {r['plain_rps']:.2f} | {r['mux_rps']:.2f} | "
                f"{r['speedup']:.2f}x | {r['bound']:.2f}x | {r['efficiency']:.0%} | {fmt_sorted(r)}"
                + (
                    f" ({r['plain_sorted_runs']} / {r['mux_runs']} runs)"
                    if r.get("plain_sorted_runs")
                    else ""
                )
                + f" | {fmt_share(r)} |"
            )
        out += [
            f"Medians of {t['repeats']} interleaved rounds; the length-sorted plain model at its own fastest run "
            "count (sorted plain / mux runs in brackets); efficiency against it."
            if t.get("repeats")
            else "Medians of 3 interleaved rounds, timed before the honest baselines (efficiency and the sorted "
            "plain model at the mux's own run count); not yet re-run.",
            "",
        ]
    return out


LLM_GRID = [(2, 8), (4, 8), (2, 15), (4, 15)]  # the (N, k) cells the SmolLM2 rows are asked for


def llm_trained_section(trained: list[dict] | None, llm: dict | None) -> list[str]:
    """SmolLM2 accuracy rows: the fine-tuned seq-cls teacher, and RevMUX adapters on the prompt teacher."""
    out: list[str] = []
    trained = trained or []
    for task in ("sst2", "rte"):
        sub = [r for r in trained if r["task"] == task]
        out += [f"#### {task}", ""]
        seqcls = [r for r in sub if r["teacher"] == "seqcls"]
        for r in seqcls:
            out += [
                f"Sequence-classification teacher (LlamaForSequenceClassification, fully fine-tuned on "
                f"{r['train_rows']:,} train rows, {r['epochs']} epoch(s), {r['train_seconds'] / 60:.1f} min wall including its hold-out check; "
                f"recipe {recipe(r)}): "
                f"**{100 * r['teacher_accuracy']:.1f}%** on dev ({r['num_examples']} rows).",
                "",
            ]
        if not seqcls:
            out += ["Sequence-classification teacher: not measured yet.", ""]
        prompt = sorted(
            (r for r in sub if r["teacher"] == "prompt"),
            key=lambda r: (r["k"], r["n"]),  # stable: rows of one cell in the order they were run
        )
        bench = {(b["n"], b["k"]): b for b in ((llm or {}).get("tasks", {}).get(task, {}).get("bench", []))}
        if prompt:
            out += [
                "RevMUX adapters on the frozen zero-shot prompt + verbalizer teacher:",
                "",
                "| N | k | recipe | accuracy (mean ± std) | teacher | drop (pts) | agreement | partner sens. | bound "
                "| measured speedup (batch 32) | trainable params | train rows | train s |",
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in prompt:
                ps, b = r.get("partner_sensitivity"), bench.get((r["n"], r["k"]))
                speed = "—" if b is None else f"{b['speedup']:.2f}x"
                out.append(
                    f"| {r['n']} | {r['k']} | {recipe(r)} | {100 * r['accuracy_mean']:.1f} ± "
                    f"{100 * r['accuracy_std']:.1f} | {100 * r['teacher_accuracy']:.1f} | "
                    f"{100 * (r['teacher_accuracy'] - r['accuracy_mean']):.1f} | "
                    f"{100 * r['agreement']:.1f} | {'n/a' if ps is None else f'{100 * ps:.1f}%'} | "
                    f"{r['bound']:.2f}x | {speed} | "
                    f"{r['trainable_params']:,} | {r['train_rows']:,} | {r['train_seconds']:.0f} |"
                )
            out.append("")
        missing = [
            f"N={n}, k={k}" for n, k in LLM_GRID if not any((r["n"], r["k"]) == (n, k) for r in prompt)
        ]
        if missing:
            out += [f"Adapters not trained yet: {'; '.join(missing)}.", ""]
        if sub:
            out += ["Commands:", "", *[f"- `{c}`" for c in sorted({r["command"] for r in sub})], ""]
            out += ["The same rows from their recipes with the grid runner:", ""]
            out += [f"- `{c}`" for c in grid_commands(sub, "docs/results/smollm2_trained.json")] + [""]
            out += [
                f"{machines(sub)}; dates: {', '.join(sorted({r['date'][:10] for r in sub}))}",
                "",
            ]
    return out


def cache_precision_section(c: dict | None) -> list[str]:
    """What rounding SmolLM2's layer-k states to fp16 (the prefill cache's dtype) does to the teacher."""
    if not c:
        return ["_Not measured yet: run benchmarks/cache_precision.py._", ""]
    out = [
        f"Command: `{c['command']}`  ",
        f"Machine: {c['machine']}; date: {c['date']}",
        "",
        "| task | k | rows | max abs state | mean abs state | max abs logit change | same prediction |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in c["rows"]:
        out.append(
            f"| {r['task']} | {r['k']} | {r['rows']} | {r['max_abs_state']:,.0f} | {r['mean_abs_state']:.2f} | "
            f"{r['max_abs_logit_diff']:.4f} | {100 * r['same_prediction']:.1f}% |"
        )
    return out + [""]


def load_section(load: dict | None) -> list[str]:
    if not load:
        return ["_No load run yet: run benchmarks/load.py._", ""]
    out = [
        f"Command: `{load.get('command', 'python benchmarks/load.py')}`  ",
        f"Machine: {load.get('machine', 'n/a')}; date: {load.get('date', 'n/a')}  ",
        f"{load['requests']} requests per server from {load['clients']} concurrent clients (singles, pairs and "
        "batches of 2-6 SST-2 dev sentences); the client runs on the same 2 cores as the server.",
        "",
        "| mode | req/s | inputs/s | vs fastest N=1 | p50 ms | p95 ms | p99 ms | errors | mean N | groups by N "
        "| composites holding two tenants |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    if "quantize" not in load:
        out[2] += (
            " Run before the N=1 server sorted its batch by length: its N=1 row is the padded, arrival-order "
            "teacher, not the fastest plain server."
        )
    singles = [r["inputs_per_s"] for r in load["results"] if r["mode"].startswith("N=1")]
    best = max(singles) if singles else None
    if load.get("tenants"):
        out[2] += (
            f" Clients belong to {load['tenants']} tenants (header X-Tenant); answers carry debug group ids."
        )
    for r in load["results"]:
        by_n = ", ".join(f"N={k}: {v}" for k, v in r["groups_by_width"].items())
        cross = (
            "-"
            if r.get("cross_tenant_groups") is None
            else f"{r['cross_tenant_groups']} of {r['groups_seen']}"
        )
        ratio = f"{r['inputs_per_s'] / best:.2f}x" if best else "-"
        out.append(
            f"| {r['mode']} | {r['req_per_s']:.1f} | {r['inputs_per_s']:.1f} | {ratio} | {r['p50_ms']:.0f} | "
            f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | {r['mean_n']:.2f} | {by_n} | {cross} |"
        )
    return out + [""]


def selection_section(path: Path) -> list[str]:
    """The recipe candidates of benchmarks/select_recipe.py, scored on a slice of TRAIN (never dev)."""
    if not path.is_file():
        return ["_No recipe selection yet: run `benchmarks/select_recipe.py`._", ""]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out: list[str] = []
    for (task, n, k, train_rows, select_rows, min_words, seed), group in itertools.groupby(
        rows,
        key=lambda r: (
            r["task"], r["n"], r["k"], r["train_rows"], r["select_rows"], r.get("select_min_words", 0),
            r.get("seed", 0),
        ),
    ):  # fmt: skip
        group = list(group)
        long_rows = f" of at least {min_words} words (sentence length)" if min_words else ""
        long_rows += f", training seed {seed} (its own slice)" if seed else ""
        served = any(r.get("served") for r in group)
        out += [
            f"{task}, N={n}, k={k}: {train_rows:,} labelled rows (the recipe's hold-out of 5% among them; augmented "
            f"rows come on top), scored on {select_rows:,} other rows of the train split{long_rows} over "
            f"{group[0].get('groupings', 3)} groupings; machine {group[0]['machine']}, date {group[0]['date']}.",
            "",
            "| candidate | recipe + overrides | acc | teacher | drop | agreement | partner sens. | best epoch | "
            "train time |" + (" served: drop / agreement / partner sens. |" if served else ""),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if served else ""),
        ]
        for r in group:
            over = ";".join(f"{key}={v}" for key, v in r["overrides"].items())
            extra = f" + `--unlabeled {Path(r['unlabeled']).name}`" if r.get("unlabeled") else ""
            extra += (
                f" + `--repick {r['repick']}` (epoch kept by hold-out {r['repick']})"
                if r.get("repick")
                else ""
            )
            if r.get("scored_epoch"):
                extra += f" + `--epoch {r['scored_epoch']}` (that epoch's checkpoint, not the one kept)"
            sv = r.get("served")
            cell = (
                f" {100 * (r['teacher_accuracy'] - sv['accuracy_mean']):.2f} pts / {100 * sv['agreement']:.1f}% / "
                f"{100 * (sv['partner_sensitivity'] or 0):.1f}% |"
                if sv
                else (" - |" if served else "")
            )
            out.append(
                f"| {r['candidate']} | `{r['recipe']}{':' if over else ''}{over}`{extra} | {100 * r['accuracy']:.2f}% "
                f"| {100 * r['teacher_accuracy']:.2f}% | {r['drop_pts']:.2f} pts | {100 * r['agreement']:.1f}% "
                f"| {100 * (r['partner_sensitivity'] or 0):.1f}% | {r['best_epoch']}/{r['epochs']} "
                f"| {r['seconds'] / 60:.1f} min |{cell}"
            )
        if served:
            out += [
                "",
                f"Served: the same rows grouped as `revmux serve` groups them (arrival windows of "
                f"{next(r['served']['window'] for r in group if r.get('served'))} requests, similar lengths "
                "together in each: `--serve-window`).",
            ]
        if (task, n) != ("sst2", 2) or not any(
            r["recipe"] == "demo-4ep" for r in group
        ):  # not the first round
            commands = dict.fromkeys(r["command"] for r in group)
            out += ["", "Commands: " + "; ".join(f"`{c}`" for c in commands) + ".", ""]
            continue
        out += [
            "",
            "Command per row: `python benchmarks/select_recipe.py --teacher runs/demo/teacher --task sst2 --data-dir "
            "../shared/data/glue --train-rows bundled --select-rows 2000 --candidate 'NAME=RECIPE:OVERRIDES' --out "
            "docs/results/selection.jsonl` with the row's candidate (`demo-4ep` is the demo recipe as it was before "
            "this selection; the options `ce_target` and `lambda_partner` lost and their code was removed, so those "
            "two rows cannot be rerun). Each row in selection.jsonl stores its full resolved TrainConfig and the "
            "command as it was run.",
            "",
        ]
    return out


HONEST_CELLS = [  # (task, N, k, quantize, backend) timed by `revmux bench` against every plain variant
    *[("sst2", n, k, "none", "torch") for n, k in ((2, 1), (2, 2), (2, 3), (4, 1), (4, 2), (4, 3))],
    ("sst2", 2, 2, "int8", "torch"), ("sst2", 2, 2, "int8", "onnx"), ("sst2", 4, 1, "int8", "torch"),
    ("sst2", 4, 1, "int8", "onnx"),
    *[(task, n, 2, "none", "torch") for task in ("mrpc", "rte", "qnli") for n in (2, 4)],
]  # fmt: skip


def honest_stem(
    task: str, n: int, k: int, quantize: str, backend: str, folder: str = "", model: str = "minilm"
) -> str:
    """docs/results/<stem>.json of an honest bench cell (SST-2 files carry no task, as they always have);
    `folder`: the sub-folder of another machine's cells (e.g. "amx/")."""
    where = "" if task == "sst2" else f"{task}_"
    return f"{folder}bench_honest_{model}_{where}n{n}_k{k}_{quantize}{'_onnx' if backend == 'onnx' else ''}"


def honest_command(
    task: str, n: int, k: int, quantize: str, backend: str, folder: str = "", model: str = "minilm"
) -> str:
    """The command that writes an honest bench cell's file (MPNet, 8 times MiniLM's cost: batch 32 only)."""
    texts = "" if task == "sst2" else f" --task {task} --data-dir ../shared/data/glue"
    onnx = " --backend onnx" if backend == "onnx" else ""
    stem = honest_stem(task, n, k, quantize, backend, folder, model)
    batches = "32" if model == "mpnet" else "32,128"
    return (
        f"revmux bench --model {model} --n {n} --k {k} --quantize {quantize}{onnx}{texts} --batch-sizes {batches} "
        f"--repeats 9 --warmup 2 --no-pipeline --json --out docs/results/{stem}.json"
    )


PACKED_TYPES = {t for view in EncoderView.__subclasses__() if view.layers_pack() for t in view.model_types}
"""Backbones whose mux runs its tail packed (`EncoderView.packs_rows`: a sequence's states do not depend on where
it sits in a packed row)."""

HONEST = [(honest_stem(*cell), honest_command(*cell)) for cell in HONEST_CELLS]
"""(file stem under docs/results, the command that wrote it), one per honest bench cell."""

HONEST_AMX_CELLS = [  # the same bench on a CPU with AMX, where bf16 and int8 matmuls run on tiles
    *[("sst2", n, k, "bf16", "torch") for n, k in ((2, 1), (2, 2), (4, 1), (4, 2))],
    *[("sst2", n, k, q, b) for q, b in (("int8", "torch"), ("int8", "onnx")) for n, k in ((2, 2), (4, 1))],
    *[("sst2", n, k, "none", "torch") for n, k in ((2, 2), (4, 1))],
]  # fmt: skip
HONEST_AMX = [(honest_stem(*c, folder="amx/"), honest_command(*c, folder="amx/")) for c in HONEST_AMX_CELLS]

HONEST_AVX512_CELLS = [  # the same bench on an AVX-512 CPU without AMX (bf16 and int8 dot products, no tiles)
    *[("sst2", n, k, q, b) for q, b in (("bf16", "torch"), ("int8", "onnx"), ("none", "torch"))
      for n, k in ((4, 1), (2, 2))],
]  # fmt: skip
HONEST_AVX512 = [
    (honest_stem(*c, folder="avx512/"), honest_command(*c, folder="avx512/")) for c in HONEST_AVX512_CELLS
]


HONEST_MPNET_CELLS = [  # MPNet-base at k = 3 and 6 (of 12 layers), batch 32: the issue's MPNet table
    *[("sst2", n, k, "none", "torch") for n in (2, 4) for k in (3, 6)],
    *[("sst2", n, 3, "int8", "onnx") for n in (2, 4)],  # the mux on ONNX Runtime int8 layers
]  # fmt: skip
HONEST_MPNET = [
    (honest_stem(*c, model="mpnet"), honest_command(*c, model="mpnet")) for c in HONEST_MPNET_CELLS
]

HONEST_MPNET_AMX_CELLS = [  # the same on the CPU with AMX: the mux on a bf16 backbone, and on ORT int8 layers
    *[("sst2", n, k, "bf16", "torch") for n in (2, 4) for k in (3, 6)],
    ("sst2", 4, 3, "int8", "onnx"),
]  # fmt: skip
HONEST_MPNET_AMX = [
    (honest_stem(*c, folder="amx/", model="mpnet"), honest_command(*c, folder="amx/", model="mpnet"))
    for c in HONEST_MPNET_AMX_CELLS
]


def honest_reports(cells: list[tuple[str, str]] = HONEST) -> list[dict]:
    """The honest bench reports of `cells` that exist (MiniLM), in their order."""
    return [bench for stem, _ in cells if (bench := _load(f"{stem}.json"))]


PLAIN_COLUMNS = (
    "plain",
    "plain_sorted",
    "plain_int8_sorted",
    "plain_bf16_sorted",
    "ort_fp32_sorted",
    "ort_int8_sorted",
)


FALLBACK = [  # (file stem under docs/results, the command that wrote it): the demo adapter at its default margin
    (f"bench_fallback_demo_{q}", f"revmux bench --adapter runs/demo/adapter-revmux-n2-k2 --quantize {q} "
     f"--fallback-margin {{margin}} --batch-sizes 32,128 --max-length 64 --repeats 9 --warmup 2 --no-pipeline "
     f"--json --out docs/results/bench_fallback_demo_{q}.json")
    for q in ("none", "int8")
]  # fmt: skip


def _bench_machine(bench: dict) -> str:
    """A bench JSON's machine as the tables name it: platform and CPU count."""
    m = bench["machine"]
    return f"{m['platform']}, {m['cpu_count']} CPUs"


def fallback_speed_section() -> list[str]:
    """The multiplexed model with its confidence fallback, timed beside the plain variants in one run."""
    rows, commands, machines, dates = [], [], set(), set()
    for stem, command in FALLBACK:
        bench = _load(f"{stem}.json")
        if not bench:
            continue
        machines.add(_bench_machine(bench))
        dates.add(bench["date"][:10])
        commands.append(f"`{command.format(margin=bench['runs'][0]['fallback_margin'])}`")
        for r in bench["runs"]:
            best_rps = r[r["best_plain"] + "_rps"]
            rows.append(
                f"| {bench.get('quantize') or 'none'} | {r['batch_size']} | {r['fallback_margin']:.2f} "
                f"| {100 * r['fallback_rerun_share']:.1f}% | {r['best_plain']} ({best_rps:.0f}) "
                f"| {r['mux_rps']:.0f} | {r['speedup_vs_best_plain']:.2f}x | {r['mux_fallback_rps']:.0f} "
                f"| {r['speedup_vs_best_plain_fallback']:.2f}x |"
            )
    if not rows:
        return ["_No fallback timing yet: run the commands of this section._", ""]
    return [
        f"Machine: {'; '.join(sorted(machines))}; dates {', '.join(sorted(dates))}; the demo adapter (N=2, k=2) at "
        "its default margin, shuffled SST-2 dev sentences, medians of 9 interleaved rounds; requests/s.",
        "",
        "| backbone | batch | margin | re-run in the batch | best plain (req/s) | mux | mux vs best plain "
        "| mux + fallback | mux + fallback vs best plain |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
        *rows,
        "",
        "The fallback re-runs every answer whose top-1 minus top-2 probability is below the margin alone, from "
        "its layer-k states (layers k..L at N = 1), as the server does; its accuracy at that margin is in the "
        "sweep above. Commands: " + "; ".join(commands) + ".",
        "",
    ]


def honest_section(cells: list[tuple[str, str]] = HONEST, backbone: str = "MiniLM") -> list[str]:
    """Every plain variant a user could deploy, and the mux, timed interleaved in one run per row."""
    rows, commands, machines, dates, bests, older, unpacked = [], [], set(), set(), [], [], []
    isas: set[tuple[str, ...] | None] = set()
    packed, packed_cuts = 0, set()
    torch_int8 = ort_int8 = False
    for stem, command in cells:
        bench = _load(f"{stem}.json")
        if not bench:
            continue
        machines.add(_bench_machine(bench))
        isas.add(tuple(isa) if (isa := bench["machine"].get("cpu_isa")) is not None else None)
        dates.add(bench["date"][:10])
        commands.append(f"`{command}`")
        mux = f"{bench_task(bench)} N={bench['runs'][0]['n']} k={bench['runs'][0]['k']} {bench.get('quantize') or 'none'}"
        onnx = bench.get("backend") == "onnx"
        mux += " (ONNX Runtime layers)" if onnx else ""
        torch_int8 |= bench.get("quantize") == "int8" and not onnx
        ort_int8 |= onnx
        if "plain_runs" not in bench:
            older.append(mux)
        packable = bench.get("model_type") in PACKED_TYPES
        if packable and not bench.get("packed_tail"):
            unpacked.append(mux)
        packed += bool(bench.get("packed_tail"))
        if bench.get("packed_tail") and (cut := bench.get("mux_run_cut")):
            packed_cuts.add((bench.get("quantize") or "none", cut["max_runs"], cut["min_rows_per_run"]))
        for r in bench["runs"]:
            cells = ["n/a" if r.get(f"{v}_ms") is None else f"{r[f'{v}_ms']:.0f}" for v in PLAIN_COLUMNS]
            bests.append(r["best_plain"])
            runs = f"{r.get(r['best_plain'] + '_runs') or 'n/a'} / {r.get('mux_runs') or 'n/a'}"
            rows.append(
                f"| {mux} | {r['batch_size']} | "
                + " | ".join(cells)
                + f" | {r['mux_ms']:.0f} | {r['best_plain']} | {runs} "
                f"| {r['speedup_vs_best_plain']:.2f}x | {r['efficiency']:.2f} ({r.get('efficiency_baseline')}) |"
            )
    if not rows:
        return ["_No honest bench yet: run " + "; ".join(f"`{c}`" for _, c in cells) + "._", ""]
    return [
        f"Machine: {'; '.join(sorted(machines))}; dates {', '.join(sorted(dates))}; {backbone}, fresh adapters "
        "(speed does not depend on the weights), the shuffled dev texts of the task named (sentence pairs for "
        "MRPC, RTE and QNLI), medians of 9 interleaved rounds (ms).",
        "",
        "| texts, mux | batch | plain padded | plain sorted | torch int8 sorted | torch bf16 sorted | ORT fp32 sorted "
        "| ORT int8 sorted | mux | best plain | runs (best plain / mux) | mux vs best plain | efficiency (vs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        *rows,
        "",
        "Efficiency = (sorted plain ms / mux ms) / bound, against the sorted plain model of the mux's own precision "
        "and backend (named in brackets). Each sorted plain variant runs at its own fastest run count (of 1, 2, 4, "
        "8, 16 runs, timed first in the same run; `--plain-runs best`). "
        + (
            "The mux prefills in runs cut as `mux_run_cut` in the JSON says ("
            + "; ".join(f"{q}: at most {m} runs of at least {r} requests" for q, m, r in sorted(packed_cuts))
            + ") and runs its "
            "tail once, over all its composites packed side by side (`packed_tail` in the JSON; on ONNX Runtime "
            "layers too, where the tail graph takes packed rows and their segment ids)."
            if packed
            else ""
        )
        + (
            f"{' ' if packed else ''}Timed before the packed tail reached this backbone (the mux in at most 4 runs "
            f"of at least 16 requests, the tail once per run), not yet re-run: {', '.join(unpacked)}."
            if unpacked
            else ""
        )
        + (
            "The mux runs in at most 4 runs of at least 16 requests, the tail once per run (this backbone's tail "
            "is not packed)."
            if not packed and not unpacked
            else ""
        )
        + (
            f" Timed before that rule (the plain variants at the mux's own run count, the mux at runs of at least 4 "
            f"composites), not yet re-run: {', '.join(older)}."
            if older
            else ""
        )
        + " Commands, one per mux row: "
        + "; ".join(commands)
        + ".",
        "",
        cpu_sentence(isas)
        + (
            " The torch int8 rows run the mux's backbone in torch dynamic int8 with its layers' inputs smoothed "
            "(`int8_smooth` in their JSON; adapters fp32), while the torch int8 column is torch's dynamic int8 "
            "without the smoothing."
            if torch_int8
            else ""
        )
        + (
            " The rows marked ONNX Runtime layers run the mux's frozen layers as ONNX Runtime dynamic int8 graphs "
            "(adapters fp32 in torch), against the same plain columns."
            if ort_int8
            else ""
        )
        + " The fastest plain variant: "
        + ", ".join(
            f"{name} in {bests.count(name)}" for name in sorted(set(bests), key=bests.count, reverse=True)
        )
        + f" of {len(bests)} rows.",
        "",
    ]


def cpu_sentence(isas: set[tuple[str, ...] | None]) -> str:
    """What the bench JSONs say of their CPU's matmul units (`machine.cpu_isa`), and what it means for bf16.
    None: a bench made before the field, on the AVX2-only AMD EPYC of the first tables."""
    if isas == {None}:
        return (
            "This machine's CPU (AMD EPYC, AVX2, no AVX512 or AMX) emulates bf16, so its torch bf16 column is far "
            "slower than fp32 here; on CPUs with AMX it is among the fastest plain variants."
        )
    named = sorted({", ".join(isa) if isa else "unknown" for isa in isas if isa is not None})
    native = all(isa and ("AMX-BF16" in isa or "AVX512-BF16" in isa) for isa in isas)
    return f"This machine's CPU has {'; '.join(named)} (`machine.cpu_isa` in the JSON): bf16 matmuls are " + (
        "native here, so the bf16 rows run adapters and backbone in bf16." if native else "emulated here."
    )


def _int8_label(report: dict) -> str:
    """The int8 row's name in the accuracy table: the scheme the eval report says its backbone ran."""
    alpha = report.get("int8_smooth")
    smoothed = "" if alpha is None else f", inputs smoothed (alpha {alpha})"
    return f"int8 (torch dynamic, per channel{smoothed}, adapters fp32)"


def quantized_accuracy_section() -> list[str]:
    """The demo adapter on its fp32 backbone and in torch dynamic int8, and how the int8 scheme was chosen."""
    fp32, int8 = _load("eval_demo_fp32.json"), _load("eval_demo_int8.json")
    if not fp32 or not int8:
        return ["_Not measured yet._", ""]
    cmd = "revmux eval --adapter runs/demo/adapter-revmux-n2-k2 --task sst2 --json > docs/results/eval_demo_fp32.json"
    rows = [
        f"| {name} | {100 * e['teacher_accuracy']:.2f}% | {100 * e['accuracy_mean']:.2f} ± {100 * e['accuracy_std']:.2f}% "
        f"| {100 * (e['teacher_accuracy'] - e['accuracy_mean']):.2f} pts | {100 * e['agreement']:.1f}% |"
        for name, e in (("fp32", fp32), (_int8_label(int8), int8))
    ]
    gap = 100 * (fp32["accuracy_mean"] - int8["accuracy_mean"])
    met = "met" if gap <= 0.3 else "not met"
    return [
        f"Commands: `{cmd}` and the same with `--quantize int8` into eval_demo_int8.json (the adapter of the "
        'demo row, "The demo" above, run after it on its machine; SST-2 dev, 10 groupings).',
        "",
        "| backbone | teacher | mux N=2 k=2 | drop | agreement |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"The int8 multiplexed model is {gap:.2f} pts below the fp32 one (target: within 0.3; {met}).",
        "",
        *int8_scheme_section(_load("int8_scheme.json")),
    ]


def int8_scheme_section(record: dict | None) -> list[str]:
    """int8 schemes (weight scales, input smoothing), chosen on train rows (benchmarks/int8_scheme.py), dev once."""
    if not record:
        return []
    choose = record["choose"]
    head = "| int8 scheme | teacher | mux | mux below fp32 mux | agreement |"

    def table(scores: dict) -> list[str]:
        ref = scores["fp32"]["mux"]
        return [head, "|---|---:|---:|---:|---:|"] + [
            f"| {name} | {v['teacher']:.2f}% | {v['mux']:.2f} ± {v['mux_std']:.2f}% | {ref - v['mux']:.2f} pts "
            f"| {v['agreement']:.1f}% |"
            for name, v in scores.items()
        ]

    return [
        f"**Which int8 scheme.** Command: `{record['command']}`  ",
        f"Machine: {record['machine']}; date: {record['date']}",
        "",
        f"Chosen on {choose['rows']} {choose['where']} (the multiplexed model closest to its fp32 self): "
        f"**{choose['winner']}**, which `--quantize int8` uses.",
        "",
        *table(choose["scores"]),
        "",
        "The same on SST-2 dev, reported once:",
        "",
        *table(record["dev"]),
        "",
        "The plain model quantized the same way (the teacher column) loses "
        + ", ".join(
            f"{record['dev']['fp32']['teacher'] - v['teacher']:.2f} pts on dev and "
            f"{choose['scores']['fp32']['teacher'] - choose['scores'][name]['teacher']:.2f} on the train rows "
            f"({name})"
            for name, v in record["dev"].items()
            if name != "fp32"
        )
        + ". The choice is made for the multiplexed model. The bench's `plain_int8_sorted` baseline is torch's "
        "dynamic int8 without the smoothing (`quantize_dynamic`, per-channel weights), timed against the mux on "
        "the chosen scheme.",
        "",
    ]


def partners_section(records: list[dict] | None) -> list[str]:
    """Adversarial partners and the fallback sweep per adapter (benchmarks/partners.py)."""
    if not records:
        return ["_Not measured yet: run `python benchmarks/partners.py --adapter DIR`._", ""]
    out: list[str] = []
    for r in records:
        a = r["adversarial"]
        out += [
            f"**{r['adapter']}** ({r['task']} dev, {r['kind']} N={r['n']}, k={r['k']}). Command: `{r['command']}`  ",
            f"Machine: {r['machine']}; date: {r['date']}",
            "",
            "| rows | candidates per row | placements per row | rows some candidate flips | candidates that flip "
            "a row | placements that flip |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {a['rows']} | {a['candidates']} | {a['placements']} | {100 * a['flippable_rows']:.1f}% "
            f"| {100 * a['flip_share']:.1f}% | {100 * a['placement_flip_share']:.1f}% |",
            "",
            "| fallback margin | accuracy | teacher | drop | agreement | re-run share | bound with re-runs |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for f in r["fallback"]:
            out.append(
                f"| {f['margin']:.2f} | {100 * f['accuracy_mean']:.1f} ± {100 * f['accuracy_std']:.1f}% "
                f"| {100 * f['teacher_accuracy']:.1f}% | {100 * (f['teacher_accuracy'] - f['accuracy_mean']):.2f} pts "
                f"| {100 * f['agreement']:.1f}% | {100 * f['rerun_share']:.1f}% | {f['bound']:.2f}x |"
            )
        out.append("")
        if c := r.get("margin_choice"):
            picked = next(f for f in c["sweep"] if f["margin"] == c["margin"])
            out += [
                f"Default margin of this adapter: **{c['margin']:.2f}**, chosen as the {c['rule']} "
                f"({'met' if c['met'] else 'not met: the most accurate margin instead'}; there "
                f"{100 * (picked['teacher_accuracy'] - picked['accuracy_mean']):.2f} pts below the teacher, "
                f"{100 * picked['rerun_share']:.1f}% re-run). Dev (above) was not used to choose it.",
                "",
            ]
    return out


def agreement_section(records: list[dict] | None) -> list[str]:
    """Agreement with the teacher by slot, teacher confidence and length (benchmarks/agreement_breakdown.py)."""
    if not records:
        return ["_Not measured yet: run `python benchmarks/agreement_breakdown.py --adapter DIR`._", ""]
    out: list[str] = []
    for r in records:
        slots = ", ".join(f"{100 * a:.1f}%" for a in r["per_slot"])
        out += [
            f"**{r['adapter']}** ({r['task']} dev, {r['kind']} N={r['n']}, k={r['k']}, {r['groupings']} groupings): "
            f"agreement {100 * r['agreement']:.1f}%; by slot {slots}. Command: `{r['command']}`  ",
            f"Machine: {r['machine']}; date: {r['date']}",
            "",
            "| teacher's margin (top-1 minus top-2 probability) | rows | agreement |",
            "|---|---:|---:|",
            *(
                f"| [{b['from']:.2f}, {min(b['to'], 1.0):.2f}{']' if b['to'] > 1 else ')'} | {b['rows']} "
                f"| {100 * b['agreement']:.1f}% |"
                for b in r["by_teacher_margin"]
            ),
            "",
            "| tokens | rows | agreement |",
            "|---|---:|---:|",
            *(
                f"| {b['from']}-{b['to'] - 1 if b['to'] < 10_000 else ''} | {b['rows']} | {100 * b['agreement']:.1f}% |"
                for b in r["by_length"]
            ),
            "",
        ]
    return out


def main() -> None:
    prefer = default_recipes(load_targets(RESULTS / "targets.yaml"))
    benches = {"minilm": _load("bench_minilm.json"), "mpnet": _load("bench_mpnet.json")}
    rows, honest = _load("frontier.json"), honest_reports()
    rows = merge_seeds(rows) if rows else rows  # one row per cell: several seeds as their mean and spread
    if rows:
        attach_measured_speedups(rows, honest)  # in memory only: the inputs are never written
        if any(p.series for p in frontier_panels(rows, honest, FRONTIER_BATCH, prefer)):
            plot_frontier(rows, honest, Path("docs"), prefer=prefer)
    if partners := _load("partners.json"):
        plot_fallback(partners, Path("docs"))
    bench_files = [RESULTS / f"bench_{b}.json" for b, v in benches.items() if v]
    if bench_files:
        plot_throughput(bench_files, Path("docs"))
    notes = RESULTS / "notes.md"
    targets = load_targets(RESULTS / "targets.yaml")
    lines = [
        "# revmux results",
        "",
        "Generated by `python benchmarks/render_results.py` from the JSON files in docs/results/; each table",
        "names the command that produced it, the machine and the date. Accuracies are on the reported split",
        "(GLUE dev), as the mean ± std over random groupings; checkpoints were selected on a hold-out slice of",
        "train. Speedups are plain / multiplexed time measured side by side in one run.",
        "",
        "## Targets",
        "",
        *targets_section(
            rows,
            benches.get(targets["backbone"]),
            targets,
            (_load("demo.json") or {}).get("result"),
            honest=honest + honest_reports(HONEST_AMX) + honest_reports(HONEST_AVX512),
            quantized=(_load("eval_demo_fp32.json"), _load("eval_demo_int8.json")),
            llm_rows=_load("smollm2_trained.json"),
        ),
        "## The demo (`make demo`)",
        "",
        *demo_section(_load("demo.json")),
        "## Accuracy frontier (frozen teacher, adapters only)",
        "",
        *frontier_section(rows),
        *(frontier_caption(rows, honest, prefer) if rows else []),
        "## Choosing the default recipe (on train, never dev)",
        "",
        "Candidates trained on the same rows with the same teacher and scored on rows of the TRAIN split that",
        "none of them trained on; the winner became the default (`revmux train` with no recipe) and the demo's",
        "recipe, and only the winner is reported on dev. Train times are wall-clock on a shared 2-core machine,",
        "one thread per run.",
        "",
        *selection_section(RESULTS / "selection.jsonl"),
        "## Multiplexing strangers: adversarial partners and the confidence fallback",
        "",
        "A row is flipped when some placement (a candidate partner set, the row in any slot) changes its",
        "answer from the teacher's. The fallback re-runs answers whose probability margin is below the",
        "threshold at N = 1 from their layer-k states; its bound is the cost model's with that share re-run",
        "(measured speed: `revmux bench`).",
        "",
        *partners_section(_load("partners.json")),
        "![accuracy vs re-run share](fallback.png)" if _load("partners.json") else "",
        "",
        "### Where the multiplexed model disagrees with its teacher",
        "",
        "Agreement over random groupings of dev, per row, then by the slot a row took, by how sure the",
        "teacher is of its answer and by the row's length in tokens.",
        "",
        *agreement_section(_load("agreement_breakdown.json")),
        "## Throughput against what a user would deploy instead (MiniLM, CPU)",
        "",
        *honest_section(),
        "### The same bench on a CPU with AMX (bf16 and int8 matmul tiles)",
        "",
        "Servers that users deploy to have AMX, where torch bf16 and ONNX Runtime int8 are "
        "the fast plain variants; these rows add the mux on a bf16 backbone (adapters in bf16 too).",
        "",
        *honest_section(HONEST_AMX, "MiniLM"),
        "### The same bench on an AVX-512 CPU without AMX",
        "",
        "A server CPU (an AMD EPYC) with AVX-512 bf16 and int8 dot-product instructions (VNNI) but no AMX tiles: "
        "the mux on a bf16 backbone, on ONNX Runtime int8 layers and in fp32.",
        "",
        *honest_section(HONEST_AVX512, "MiniLM"),
        "### MPNet-base (12 layers, d=768), the same baselines",
        "",
        *honest_section(HONEST_MPNET, "MPNet-base"),
        "#### MPNet-base on the CPU with AMX",
        "",
        *honest_section(HONEST_MPNET_AMX, "MPNet-base"),
        "### The confidence fallback's cost, against the same baselines",
        "",
        *fallback_speed_section(),
        "### Accuracy on an int8 backbone",
        "",
        *quantized_accuracy_section(),
        "## Training with the prefill/teacher cache",
        "",
        *cache_section(_load("cache_speedup.json")),
        "## Throughput: MiniLM-L6 (6 layers, d=384), CPU",
        "",
        *bench_section("MiniLM", benches["minilm"]),
        "## Throughput: MPNet-base (12 layers, d=768), CPU",
        "",
        *bench_section("MPNet", benches["mpnet"]),
        "![throughput vs batch size](throughput.png)" if bench_files else "",
        "",
        "## Length-aware grouping (MiniLM, k=1)",
        "",
        *length_aware_section(_load("bench_length_aware_on.json"), _load("bench_length_aware_off.json")),
        "## Decoder LLM: SmolLM2-135M-Instruct (30 layers, d=576, Q4_1 weights dequantized), CPU",
        "",
        *llm_section(_load("smollm2.json"), rows),
        "### SmolLM2 accuracy: trained adapters and the fine-tuned teacher",
        "",
        *llm_trained_section(_load("smollm2_trained.json"), _load("smollm2.json")),
        "### fp16 prefill cache on SmolLM2",
        "",
        *cache_precision_section(_load("cache_precision.json")),
        "## torch.compile (MiniLM, CPU)",
        "",
        *compile_section(benches["minilm"], _load("bench_minilm_compile.json")),
        "## Serving under load: N = 1 vs load-adaptive N (MiniLM SST-2 teacher, pack {1, 2, 4} at k=2)",
        "",
        *load_section(_load("load_minilm.json")),
        "### Against the fastest N=1 server: length-sorted, fp32 and torch int8 (default-recipe pack {1, 2, 4}, k=2)",
        "",
        *load_section(_load("load_honest.json")),
        "### Tenant isolation under load (the demo adapter, N in {1, 2}, k=2)",
        "",
        *load_section(_load("load_tenants.json")),
        notes.read_text() if notes.is_file() else "",
    ]
    DOC.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
