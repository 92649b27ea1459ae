"""Train and evaluate a grid of (mux kind, N, k) cells for one backbone, task and recipe (revmux.grid).

Each recipe (src/revmux/configs/recipes/<name>.yaml) gives the adapters' TrainConfig and how the
teacher is made (fine-tuned once per settings and reused, or a zero-shot prompt + verbalizer teacher);
`teacher:1:0` evaluates the teacher alone. Rows already in --out with the same (backbone, task,
teacher, mux, N, k, recipe, seed) are skipped and an interrupted adapter run resumes, so the command
can be rerun until it finishes. Every row stores its recipe name, the full resolved TrainConfig, the
seed, this command, the machine and the date.

QNLI: only its dev split exists here, so it is split with a fixed seed into 4,463 train rows and 1,000
held-out rows that are reported; those numbers are not comparable to full-QNLI results.

Usage (docs/RESULTS.md lists the command behind every row):
    python benchmarks/grid.py --backbone minilm --task sst2 --recipe 16k-rows-3ep \\
        --grid revmux:2:2,adapter:2:2 --data-dir ../shared/data/glue --out docs/results/frontier.json
    python benchmarks/grid.py --backbone smollm2 --task rte --recipe seqcls-2k-1ep --grid teacher:1:0 \\
        --data-dir ../shared/data/glue --out docs/results/smollm2_trained.json
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from revmux.errors import RevmuxError
from revmux.grid import GridCell, GridSpec, run_grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--backbone", default="minilm", help="Model directory, hub id or zoo name (minilm, mpnet, smollm2)."
    )
    ap.add_argument("--task", default="sst2", help="sst2, mrpc, rte or qnli.")
    ap.add_argument("--recipe", default="default", help="Recipe name or YAML path (revmux.recipes).")
    ap.add_argument(
        "--grid", default="revmux:2:2", help="Cells kind:N:k, comma-separated; teacher:1:0 alone."
    )
    ap.add_argument("--data-dir", default=None, help="GLUE download; default: the bundled SST-2 sample.")
    ap.add_argument("--out", default="docs/results/frontier.json", help="JSON list of rows (appended to).")
    ap.add_argument("--seeds", default="0", help="Comma-separated seeds: one row per cell and seed.")
    ap.add_argument("--groupings", type=int, default=10, help="Random groupings of the eval split per row.")
    ap.add_argument("--work-dir", default="runs/grid", help="Teachers and adapters go under this directory.")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = shlex.join(["python", "benchmarks/grid.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        spec = GridSpec(
            backbone=args.backbone, task=args.task, recipe=args.recipe, cells=GridCell.parse(args.grid),
            data_dir=args.data_dir, seeds=[int(s) for s in args.seeds.split(",")], groupings=args.groupings,
            work_dir=Path(args.work_dir),
        )  # fmt: skip
        rows = run_grid(spec, args.out, command=command)
    except (RevmuxError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rows)} new row(s) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
