"""How many epochs the demo's teacher fine-tunes for, chosen on TRAIN rows it never trains on.

Fine-tunes MiniLM on the bundled SST-2 sample (the demo's rows, seed and its recipe's teacher settings) for each --epochs
value and scores every teacher, plus any --teacher given, on the selection slice of
benchmarks/select_recipe.py (rows of the GLUE SST-2 train split outside the sample; never dev).

Usage: python benchmarks/teacher_epochs.py --data-dir ../shared/data/glue --epochs 1 \\
    --teacher runs/demo/teacher --work-dir runs/exp --out docs/results/teacher_epochs.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from select_recipe import slices
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from revmux.data import load_task
from revmux.demo import DemoSettings
from revmux.recipes import read_recipe
from revmux.train.finetune import LOG_NAME, classifier_accuracy, finetune


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="GLUE download (the selection slice comes from train).")
    ap.add_argument("--epochs", default="1", help="Comma list of teacher epochs to fine-tune.")
    ap.add_argument("--teacher", action="append", default=[], help="An existing teacher to score as well.")
    ap.add_argument("--select-rows", type=int, default=2000)
    ap.add_argument("--work-dir", default="runs/exp")
    ap.add_argument("--out", default="docs/results/teacher_epochs.json")
    args = ap.parse_args()
    _, select = slices("sst2", args.data_dir, "bundled", args.select_rows, 0)
    demo = DemoSettings()
    options = {key: v for key, v in read_recipe(demo.recipe).teacher.items() if key != "style"}
    options |= {"max_length": demo.max_length, "seed": demo.seed}  # what `revmux demo` fine-tunes with
    rows = []
    teachers = [(t, None) for t in args.teacher]
    for epochs in (int(e) for e in args.epochs.split(",")):
        out = Path(args.work_dir) / f"teacher-{epochs}ep"
        result = finetune(
            demo.model, load_task("sst2", "train"), out, **options | {"epochs": epochs}, progress=False
        )
        teachers.append((str(out), result.train_seconds))
    for path, seconds in teachers:
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        with torch.inference_mode():
            tokenizer = AutoTokenizer.from_pretrained(path)
            acc = classifier_accuracy(model, tokenizer, select, max_length=options["max_length"])
        log = json.loads((Path(path) / LOG_NAME).read_text())
        rows.append({
            "teacher": path, "epochs": log["config"]["epochs"], "select_accuracy": acc,
            "holdout_accuracy": log["holdout_accuracy"], "train_seconds": seconds or log["train_seconds"],
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    record = {
        "command": shlex.join(["python", "benchmarks/teacher_epochs.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, torch threads {torch.get_num_threads()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "select_rows": len(select), "rows": rows,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
