"""Regenerate the bundled SST-2 sample in src/revmux/datasets/sst2/ from a GLUE download.

    python scripts/make_sst2_sample.py [--glue-dir ../shared/data/glue]

train.tsv: 4,000 rows of GLUE SST-2 train.tsv chosen by random.Random(0).sample over the data rows (in
the order the sample returns them), lines copied byte for byte under the original header.
dev.tsv: the full GLUE SST-2 dev split (872 rows), copied verbatim.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "src" / "revmux" / "datasets" / "sst2"
N_TRAIN = 4000
SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue-dir", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()

    src = args.glue_dir / "SST-2"
    train_lines = (src / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = train_lines[0], train_lines[1:]
    if header.strip() != "sentence\tlabel":
        raise SystemExit(f"{src / 'train.tsv'}: unexpected header {header!r}")
    sample = random.Random(SEED).sample(rows, N_TRAIN)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "train.tsv").write_text(header + "".join(sample), encoding="utf-8", newline="")
    dev = (src / "dev.tsv").read_text(encoding="utf-8")
    (args.out_dir / "dev.tsv").write_text(dev, encoding="utf-8", newline="")
    n_dev = len(dev.splitlines()) - 1
    print(f"wrote {N_TRAIN} train rows (of {len(rows)}) and {n_dev} dev rows to {args.out_dir}")


if __name__ == "__main__":
    main()
