"""Adversarial partners: how many answers some partner can flip (docs/method.md section 9).

What it is: `adversarial_partners(model, data, candidates=K)` takes `rows` evaluation rows and, for each,
K candidate partner sets drawn from the same data (N - 1 other rows each). Every candidate is tried with
the row in every slot of the group (both slots at N = 2, all four at N = 4); a candidate flips the row
when some placement's answer differs from the teacher's (N = 1) answer. It reports the mean share of
candidates that flip a row (`flip_share`), the share of placements that do (`placement_flip_share`), and
the share of rows that at least one candidate flips (`flippable_rows`): the worst case a multi-tenant
server faces when a client can choose whose partner it becomes. The layer-k states are computed once
(`evaluate.prefill_rows`), as evaluation and serving compute them.
What it is not: partner sensitivity (`revmux.evaluate`: changes between random groupings) or a search
for the worst partner (candidates are random rows of the same data).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from revmux.data import TaskData
from revmux.errors import ConfigError
from revmux.evaluate import predict_grouping, prefill_rows, prepared
from revmux.model import MuxModel


@dataclass
class AdversarialReport:
    """Shares are fractions in [0, 1]; `placements` = candidates * N per row."""

    n: int
    rows: int
    candidates: int
    placements: int
    flip_share: float
    placement_flip_share: float
    flippable_rows: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def adversarial_partners(
    model: MuxModel,
    data: TaskData,
    *,
    candidates: int = 40,
    rows: int | None = 200,
    batch_size: int = 64,
    seed: int = 0,
    max_length: int | None = None,
) -> AdversarialReport:
    """The flip shares of `candidates` random partner sets per row, the row in every slot (see the module)."""
    N = model.n
    if N < 2:
        raise ConfigError("adversarial partners need a multiplexed model (N >= 2); N = 1 has no partners.")
    if candidates < 1 or batch_size < 1 or (rows is not None and rows < 1):
        raise ConfigError(
            f"--adversarial-partners, --adversarial-rows and --batch-size must be >= 1, got {candidates}, "
            f"{rows}, {batch_size}."
        )
    data = prepared(model, data, max_length)
    M = len(data)
    if M < N:
        raise ConfigError(f"{data.source} has {M} rows; drawing N - 1 = {N - 1} partners needs at least {N}.")
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randperm(M, generator=gen)[: rows or M]
    groups, where = placements(targets, M, N, candidates, gen)  # (P, N) rows, (P,) slot of the target
    model.eval()
    view = model.view
    with torch.inference_mode():
        states, probs = prefill_rows(model, data, batch_size * N, max_length)
        teacher = probs.argmax(-1)
        flat = groups.flatten()
        pred = torch.empty(flat.numel(), dtype=torch.long)
        order = torch.arange(flat.numel())
        predict_grouping(
            model, lambda i: states.rows(view, flat[i].to(view.device)), order, batch_size * N, pred
        )
    answer = pred.view(-1, N).gather(1, where.unsqueeze(1)).squeeze(1)  # the target's answer per placement
    flips = (answer != teacher[groups.gather(1, where.unsqueeze(1)).squeeze(1)]).view(
        len(targets), candidates, N
    )
    per_candidate = flips.any(dim=2)  # (R, K): some slot flips the row
    return AdversarialReport(
        n=N,
        rows=len(targets),
        candidates=candidates,
        placements=candidates * N,
        flip_share=float(per_candidate.float().mean()),
        placement_flip_share=float(flips.float().mean()),
        flippable_rows=float(per_candidate.any(dim=1).float().mean()),
    )


def placements(
    targets: Tensor, M: int, N: int, candidates: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(groups (R * K * N, N), target slot (R * K * N,)): for each target and candidate, N - 1 distinct
    partners other than the target, then the target at every slot (the partners keep their order)."""
    R = len(targets)
    # partners: draw from the M - 1 other rows by skipping the target's own index
    draws = torch.stack([torch.randperm(M - 1, generator=gen)[: N - 1] for _ in range(R * candidates)])
    own = targets.repeat_interleave(candidates).unsqueeze(1)  # (R * K, 1)
    partners = draws + (draws >= own).long()  # (R * K, N - 1), never the target
    groups, slots = [], []
    for slot in range(N):
        groups.append(torch.cat([partners[:, :slot], own, partners[:, slot:]], dim=1))
        slots.append(torch.full((R * candidates,), slot))
    # order (R, K, slot): placements of one (target, candidate) are consecutive
    g = torch.stack(groups, dim=1).reshape(-1, N)
    s = torch.stack(slots, dim=1).reshape(-1)
    return g, s
