"""Run `revmux demo` (defaults) and record its result with the command, machine and date.

Usage: python benchmarks/run_demo.py --out-dir revmux-demo --json docs/results/demo.json
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

from revmux.demo import run_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="revmux-demo")
    ap.add_argument("--json", default="docs/results/demo.json")
    args = ap.parse_args()
    result = run_demo(args.out_dir)
    record = {
        "command": shlex.join(["python", "benchmarks/run_demo.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "result": result,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
