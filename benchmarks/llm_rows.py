"""SmolLM2-135M-Instruct rows for docs/RESULTS.md: zero-shot prompt teacher accuracy and multiplexed speed.

For each task: the prompt + verbalizer teacher (chat template, answer read from the LM head restricted to
the verbalizer tokens at the last position) evaluated on the GLUE dev split at N = 1; then `run_bench`
with freshly initialised RevMUX adapters on the same prompted backbone at each (N, k), timing the plain
verbalizer forward and the multiplexed one interleaved on the same prompted dev requests. Results are
appended to (or replace the same keys in) the output JSON, so tasks can be run one at a time.

Usage:
    python benchmarks/llm_rows.py --tasks sst2,rte --data-dir ../shared/data/glue \
        --out docs/results/smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from revmux.bench import run_bench
from revmux.data import load_task
from revmux.evaluate import evaluate
from revmux.model import MuxModel
from revmux.prompting import default_prompt, load_prompted_backbone


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """'2:8,4:15' -> [(2, 8), (4, 15)]."""
    out = []
    for item in text.split(","):
        n, k = item.split(":")
        out.append((int(n), int(k)))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="Decoder LM directory or zoo name.")
    ap.add_argument("--tasks", default="sst2,rte")
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--style", default="chat", choices=["chat", "plain"])
    ap.add_argument("--max-length", type=int, default=256, help="Tokens per prompted request.")
    ap.add_argument("--bench", default="2:8,4:8,2:15,4:15", help="N:k pairs to time, comma-separated.")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument(
        "--reuse-eval",
        action="store_true",
        help="Keep a task's stored zero-shot figures when its prompt is unchanged: re-time only.",
    )
    ap.add_argument("--out", default="docs/results/smollm2.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    command = shlex.join(["python", "benchmarks/llm_rows.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() else {"tasks": {}}
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    for task in args.tasks.split(","):
        dev = load_task(task, "dev", args.data_dir)
        spec = default_prompt(args.style, task, dev.label_names, is_pair=dev.is_pair)
        view = load_prompted_backbone(args.model, spec)
        teacher = MuxModel.from_backbone(
            view, n=1, k=0, backbone_path=args.model, max_length=args.max_length, prompt=spec
        )
        teacher.config.task = task
        stored = result["tasks"].get(task, {})
        if args.reuse_eval and stored.get("prompt") == spec.to_dict() and stored.get("zero_shot"):
            zero_shot = stored["zero_shot"]
            # where the kept figures came from
            eval_from = {
                "command": stored.get("zero_shot_command", stored.get("command")),
                "date": stored.get("zero_shot_date", stored.get("date")),
            }
        else:
            zero_shot = evaluate(teacher, dev, groupings=1, max_length=args.max_length, task=task).to_dict()
            eval_from = {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        print(
            f"{task}: zero-shot {args.style} teacher {100 * zero_shot['teacher_accuracy']:.1f}%", flush=True
        )
        bench_rows = []
        for n, k in parse_pairs(args.bench):
            model = MuxModel.from_backbone(
                view, kind="revmux", n=n, k=k, backbone_path=args.model, prompt=spec
            )
            rep = run_bench(
                model,
                dev.texts,
                pairs=dev.pairs,
                batch_sizes=[args.batch_size],
                max_length=args.max_length,
                repeats=args.repeats,
                warmup=1,
                pipeline=False,
            )
            run = rep.runs[0]
            bench_rows.append(run.to_dict())
            print(
                f"{task} N={n} k={k}: plain {run.rps('plain'):.2f} req/s, mux {run.rps('mux'):.2f} req/s, "
                f"speedup {run.speedup:.2f}x of bound {run.bound:.2f}x",
                flush=True,
            )
        result["tasks"][task] = {
            "command": command,
            "machine": machine,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": args.model,
            "num_layers": view.num_layers,
            "prompt": spec.to_dict(),
            "zero_shot": zero_shot,
            "zero_shot_command": eval_from["command"],
            "zero_shot_date": eval_from["date"],
            "bench": bench_rows,
            "repeats": args.repeats,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
