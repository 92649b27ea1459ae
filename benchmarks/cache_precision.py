"""What the fp16 prefill cache costs a decoder LLM: teacher logits from rounded vs exact layer-k states.

The prefill cache (revmux.train.cache) stores layer-k states in fp16. SmolLM2's first-token states grow large
(an attention sink), so this script measures, per task and k, the largest |state| (fp16 overflows past
65,504, which the cache refuses with a clear error), and how far the unmultiplexed teacher's logits move
when its layer-k states are rounded to fp16 before layers [k, L): max |logit difference| and the share of
rows whose predicted class is unchanged.

Usage:
    python benchmarks/cache_precision.py --tasks sst2,rte --ks 8,15 --rows 64 \
        --data-dir ../shared/data/glue --out docs/results/cache_precision.json
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

from revmux.data import load_task, tokenize
from revmux.prompting import apply_prompt, default_prompt, load_prompted_backbone
from revmux.train.cache import teacher_outputs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", default="sst2,rte")
    ap.add_argument("--ks", default="8,15")
    ap.add_argument("--rows", type=int, default=64, help="First rows of each task's dev split.")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--data-dir", default="../shared/data/glue")
    ap.add_argument("--out", default="docs/results/cache_precision.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    rows = []
    for task in args.tasks.split(","):
        dev = load_task(task, "dev", args.data_dir)
        dev = dev.subset(list(range(min(args.rows, len(dev)))))
        spec = default_prompt("chat", task, dev.label_names, is_pair=dev.is_pair)
        view = load_prompted_backbone(args.model, spec)
        enc = tokenize(
            view.tokenizer, apply_prompt(view.tokenizer, spec, dev, args.max_length), args.max_length
        )
        with torch.inference_mode():
            for k in (int(x) for x in args.ks.split(",")):
                state = view.run_layers(view.embed(enc), 0, k)
                exact = teacher_outputs(view, state, k)[1].float()
                rounded_state = view.composite_state(state.hidden.half().float(), state.attention_mask)
                rounded = teacher_outputs(view, rounded_state, k)[1].float()
                real = state.hidden[state.attention_mask.bool()]
                row = {
                    "task": task,
                    "k": k,
                    "rows": len(dev),
                    "max_abs_state": float(real.abs().max()),
                    "mean_abs_state": float(real.abs().mean()),
                    "max_abs_logit_diff": float((exact - rounded).abs().max()),
                    "same_prediction": float((exact.argmax(1) == rounded.argmax(1)).float().mean()),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {
        "command": shlex.join(
            ["python", "benchmarks/cache_precision.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": args.model,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
