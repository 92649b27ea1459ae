"""Runs: where padding is in a padded batch, and how the batch is cut into runs that skip it.

What it is: pure functions on (B, T) attention masks and row orderings, shared by the prefill and
tail of `MuxModel`, the length-sorted plain baseline of `revmux bench`, the prefill cache of training
and evaluation. A *run* is a set of consecutive rows of an ordering (whole groups of N when
multiplexing) that a backbone slice processes together, cut to the columns holding its real tokens.
Cutting only trailing padding keeps every kept column exact; leading padding (left-padded
tokenizers) is cut only where the caller's positions allow it (`leading=True`).

How many runs: `run_count(G, group_size=N)` splits G composites of N requests into at most `MAX_RUNS`
runs of at least `MIN_ROWS_PER_RUN` requests each (1 run: no split). These are the two knobs, also
attributes of `MuxModel` (`max_runs`, `min_rows_per_run`); they were chosen on a timing grid of MiniLM at
batch 32 and 128 on 2 cores (docs/RESULTS.md, notes): smaller runs pad less but cost more per row.
`plain_runs` is the cut of the plain model alone (N = 1), for the server's width 1: at most
`PLAIN_MAX_RUNS` runs of at least `PLAIN_MIN_ROWS_PER_RUN` requests, the length-sorted plain model's
fastest cut on the same timing grid (8-16 requests a run at batch 32 and 128). A bf16 backbone keeps
runs of at least `BF16_MIN_ROWS_PER_RUN` requests: its matmuls (AMX tiles) pay more for short runs.
Packing: `pack_rows` places rows of given real lengths side by side in bins as long as the longest row
(first fit, longest first), for layers that answer a sequence the same wherever it sits in a row (no
positions of their own, or a bias over distances only) and attend through a block-diagonal mask:
one pass over all rows with almost no padding, instead of runs cut at their longest row.
What it is not: anything that runs a model or knows about tokenizers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from revmux.errors import ConfigError

MAX_RUNS = 4  # runs a batch is cut into at most (1: one run over the whole padded batch)
MIN_ROWS_PER_RUN = 16  # requests per run at least (a composite counts N): short runs cost more than they save
# the plain model alone (N = 1, e.g. the server's width 1), length-sorted: its fastest cut on the bench's grid
PLAIN_MAX_RUNS = 16
PLAIN_MIN_ROWS_PER_RUN = 8
# the mux's prefill where its tail is packed (fp32 and int8 backbones): at most 4 runs of at least 8 requests,
# the fastest on the run-cut grids of an AVX2 and an AMX CPU (runs of 8 at batch 32, 4 runs at 64 and 128)
PREFILL_MAX_RUNS = 4
PREFILL_MIN_ROWS_PER_RUN = PLAIN_MIN_ROWS_PER_RUN
# a bf16 backbone's prefill (native bf16 matmuls, e.g. AMX): short runs cost it more than they save, so it
# keeps the coarse cut; its fastest on the same grid on an AMX CPU (docs/RESULTS.md, notes)
BF16_MAX_RUNS = MAX_RUNS
BF16_MIN_ROWS_PER_RUN = MIN_ROWS_PER_RUN


def real_ends(mask: Tensor) -> Tensor:
    """(B,) for a (B, T) attention mask: one past each row's last real column (T for left padding)."""
    return mask.shape[1] - torch.argmax(mask.flip(1).to(torch.int8), dim=1)


def last_real_index(mask: Tensor) -> Tensor:
    """(B,) index of each row's last real column, for right and left padding alike."""
    return real_ends(mask).to(torch.long) - 1


def real_columns(mask: Tensor, *, leading: bool = False) -> slice:
    """The columns of a (B, T) mask that hold a real token of some row: [0, last end), or with
    `leading` also without the columns before the earliest first real token (left padding)."""
    stop = int(real_ends(mask).max()) if mask.shape[0] else 0
    start = int(torch.argmax(mask.to(torch.int8), dim=1).min()) if leading and mask.shape[0] else 0
    return slice(start, stop)


def run_count(
    groups: int, *, group_size: int = 1, max_runs: int = MAX_RUNS, min_rows_per_run: int = MIN_ROWS_PER_RUN
) -> int:
    """How many runs `groups` groups of `group_size` requests are cut into: at most `max_runs`, each of at
    least `min_rows_per_run` requests and one group (1: no split)."""
    if groups <= 0:
        return 1
    per_run = max(1, -(-max(1, min_rows_per_run) // max(1, group_size)))  # whole groups per run at least
    return max(1, min(max_runs, groups // per_run))


def plain_runs(mask: Tensor) -> list[tuple[Tensor, slice]]:
    """The plain model's length-sorted cut of a (B, T) mask: (rows, columns) per run, longest rows first, in
    at most `PLAIN_MAX_RUNS` runs of at least `PLAIN_MIN_ROWS_PER_RUN` rows, each cut after its last real
    column. The rows of all runs, in order, are the sorting permutation."""
    order = torch.argsort(real_ends(mask), descending=True, stable=True)
    runs = run_count(mask.shape[0], max_runs=PLAIN_MAX_RUNS, min_rows_per_run=PLAIN_MIN_ROWS_PER_RUN)
    return bucketed_runs(mask, order, runs)


def split_runs(
    order: Tensor, runs: int | None = None, *, group_size: int = 1, rows_per_run: int | None = None
) -> list[Tensor]:
    """Cut the ordering `order` (B,) into runs of consecutive rows.

    `runs`: that many runs of whole groups of `group_size` rows, as equal as `tensor_split` makes them;
    the last B mod `group_size` rows (leftovers) join the last run. `rows_per_run`: runs of that many
    rows instead (the last may be shorter).
    """
    if rows_per_run is not None:
        return list(order.split(rows_per_run))
    B = order.shape[0]
    G = B // group_size
    if runs is None or runs <= 1 or G == 0:
        return [order]
    q, r = divmod(G, runs)
    sizes = [q + 1] * r + [q] * (runs - r)
    stops, total = [], 0
    for size in sizes:
        if size:
            total += size * group_size
            stops.append(total)
    stops[-1] = B
    starts = [0, *stops[:-1]]
    return [order[a:b] for a, b in zip(starts, stops, strict=True)]


def plan_groups(
    lengths: Tensor, n: int, *, length_aware: bool = False, order: Tensor | None = None
) -> Tensor:
    """A permutation of the batch whose consecutive runs of `n` are the groups (leftovers at the end).

    `order` (a permutation) fixes the grouping, e.g. a random one per epoch; otherwise the input
    order is used, or, with `length_aware`, requests sorted by length so partners pad little.
    """
    B = lengths.shape[0]
    if order is not None:
        if order.shape != (B,):
            raise ConfigError(f"order must be a permutation of {B} requests, got shape {tuple(order.shape)}.")
        return order.to(lengths.device)
    if length_aware and n > 1:
        return torch.argsort(lengths, descending=True, stable=True)
    return torch.arange(B, device=lengths.device)


def groups_by_length(order: Tensor, mask: Tensor, group_size: int) -> Tensor:
    """`order` with its whole groups of `group_size` consecutive rows reordered longest first (by the
    group's last real column, stable); the leftovers stay last. No group changes, only which groups share
    a run, so runs cut from the result skip the padding that random groupings would leave in every run."""
    G = order.shape[0] // group_size
    if G < 2:
        return order
    groups = order[: G * group_size].view(G, group_size)
    ends = real_ends(mask[groups.reshape(-1)]).view(G, group_size).amax(dim=1)
    by_length = torch.argsort(ends, descending=True, stable=True)
    return torch.cat([groups[by_length].reshape(-1), order[G * group_size :]])


def bucketed_runs(
    mask: Tensor,
    order: Tensor,
    runs: int | None = None,
    *,
    group_size: int = 1,
    rows_per_run: int | None = None,
    leading: bool = False,
) -> list[tuple[Tensor, slice]]:
    """(rows, columns) per run of `split_runs(order, ...)`: each run's rows and `real_columns` of them."""
    out = []
    for rows in split_runs(order, runs, group_size=group_size, rows_per_run=rows_per_run):
        out.append((rows, real_columns(mask[rows], leading=leading)))
    return out


@dataclass(frozen=True)
class Packing:
    """Where `pack_rows` put each row: `bins` (R,) and `offsets` (R,), and the (B, C) `segments` of the
    packed buffer (row r's tokens hold id r + 1; padding 0). `slots` (R,) is each row's first flat index
    (bin * C + offset) in the buffer viewed as (B * C, ...)."""

    bins: Tensor
    offsets: Tensor
    segments: Tensor

    @property
    def capacity(self) -> int:
        return self.segments.shape[1]

    @property
    def slots(self) -> Tensor:
        return self.bins * self.capacity + self.offsets


def pack_rows(lengths: Tensor) -> Packing:
    """First-fit-decreasing packing of rows of real lengths `lengths` (R,) into bins of the longest's length:
    a row goes into the first bin it fits, longest rows first. Rows never span bins, so every row keeps
    its tokens contiguous; a row of length 0 takes no space."""
    lens = [int(v) for v in lengths.tolist()]
    capacity = max([1, *lens])
    free: list[int] = []  # room left per bin
    bins, offsets = [0] * len(lens), [0] * len(lens)
    for r in sorted(range(len(lens)), key=lambda i: -lens[i]):
        b = next((i for i, room in enumerate(free) if room >= lens[r]), len(free))
        if b == len(free):
            free.append(capacity)
        bins[r], offsets[r] = b, capacity - free[b]
        free[b] -= lens[r]
    device = lengths.device
    b_t = torch.tensor(bins, dtype=torch.long, device=device)
    o_t = torch.tensor(offsets, dtype=torch.long, device=device)
    segments = torch.zeros(max(1, len(free)), capacity, dtype=torch.long, device=device)
    flat = segments.view(-1)
    rows, tokens = token_index(lengths.to(device=device, dtype=torch.long))
    flat[(b_t * capacity + o_t)[rows] + tokens] = rows + 1
    return Packing(bins=b_t, offsets=o_t, segments=segments)


def token_index(lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(row, token) index pairs of every real token of rows of `lengths` (R,), row by row: both (sum,)."""
    rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    return rows, torch.arange(rows.shape[0], device=lengths.device) - starts[rows]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, d) -> (B, d): the mean over each row's real tokens (mask (B, T), 1 for real)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
