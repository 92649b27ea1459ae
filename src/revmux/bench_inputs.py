"""What `revmux bench` runs on: the requests (real sentences) and the padding a batch of them carries.

What it is: `bench_texts` reads one request per line from a file or a task's dev split (by default the
bundled SST-2 sample), `sample_requests` draws a batch from them by a fixed-seed shuffle, and
`padding_waste` measures how much of the composites MuxModel would form from a batch is padding.
What it is not: tokenization (the model's request encoder does it) or timing (`revmux.bench_timing`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from revmux.errors import DataError
from revmux.runs import plan_groups


def bench_texts(
    task: str | None = None, data_dir: str | Path | None = None, texts_file: str | Path | None = None
) -> tuple[list[str], list[str] | None, str]:
    """(texts, second sentences or None, source) from a one-request-per-line file or a task's dev split.

    Without arguments: the bundled SST-2 dev sample (real sentences, natural length distribution).
    """
    if texts_file is not None:
        path = Path(texts_file)
        if not path.is_file():
            raise DataError(f"--texts file {path} not found; pass a text file with one request per line.")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise DataError(f"--texts file {path} holds no non-empty line; put one request per line.")
        return texts, None, str(path)
    from revmux.data import load_task

    data = load_task(task or "sst2", "dev", data_dir)
    return data.texts, data.pairs, data.source


def sample_requests(
    texts: Sequence[str], pairs: Sequence[str] | None, count: int, *, seed: int = 0
) -> tuple[list[str], list[str] | None, bool]:
    """The first `count` of a fixed-seed shuffle (cycled when there are fewer): (texts, pairs, repeated)."""
    if not texts:
        raise DataError("no texts to benchmark on; pass --texts FILE or --task.")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    idx = [order[i % len(order)] for i in range(count)]
    chosen_pairs = None if pairs is None else [pairs[i] for i in idx]
    return [texts[i] for i in idx], chosen_pairs, count > len(texts)


@dataclass(frozen=True)
class PaddingWaste:
    """Padding in the composites of one batch, as fractions in [0, 1).

    composite: fraction of composite positions that are padding in every member (the mask's zeros);
    slot: fraction of request slots inside the composites' attended spans that are padding (what
    length-aware grouping reduces; 0 when partners have equal lengths).
    """

    composite: float
    slot: float


def padding_waste(attention_mask: Tensor, n: int, *, length_aware: bool) -> PaddingWaste:
    """Padding in the composites MuxModel would form from this (B, T) batch (leftovers run plain, T each)."""
    B, T = attention_mask.shape
    lengths = attention_mask.sum(1).cpu()
    perm = plan_groups(lengths, n, length_aware=length_aware)
    G = B // n if n > 1 else 0
    longest = lengths[perm[: G * n]].view(G, n).amax(1).sum().item() if G else 0
    rest = lengths[perm[G * n :]].sum().item()
    rows = G + (B - G * n)
    composite = 1.0 - (longest + rest) / (rows * T)
    slot = 1.0 - lengths.sum().item() / (n * longest + rest)
    return PaddingWaste(composite=composite, slot=slot)
