"""The confidence fallback, measured: accuracy and re-run share over a sweep of margins.

What it is: `fallback_sweep(model, data, margins)` draws the same random groupings as
`revmux.evaluate` (seeds `seed + r`), keeps each multiplexed answer's probability margin (top-1 minus
top-2), and for every margin M replaces the answers below M with the request's N = 1 answer, which is
what the server's fallback returns (it re-runs layers [k, L) from the same layer-k states). It reports
per M the accuracy mean and std over groupings, the agreement with the teacher, the share of answers
re-run, and the cost model's bound with that share re-run: per request (k + (L - k) / N + share *
(L - k)) / L of plain inference. `forward_with_fallback` is that fallback on one batch, the way the
server runs it, for `revmux bench --fallback-margin` to time. What it is not: a timing (`revmux bench`
measures speed).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from revmux.data import TaskData
from revmux.errors import ConfigError
from revmux.evaluate import grouping_permutation, predict_grouping, prefill_rows, prepared
from revmux.model import MuxModel


def forward_with_fallback(
    model: MuxModel, inputs: dict[str, torch.Tensor], margin: float, *, length_aware: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C), re-run (B,) bool) of a tokenized batch: multiplexed, then every answer whose top-1
    minus top-2 probability is below `margin` replaced by its N = 1 answer from the same layer-k states."""
    state, perm = model.prefill_grouped(inputs, length_aware=length_aware)
    logits = model.forward_from_prefill(state, order=perm, length_aware=length_aware).logits
    top = logits.float().softmax(-1).topk(min(2, logits.shape[-1]), dim=-1).values
    low = (
        (top[:, 0] - top[:, -1]) < margin
        if top.shape[-1] > 1
        else torch.zeros_like(top[:, 0], dtype=torch.bool)
    )
    rows = low.nonzero().flatten()
    if rows.numel():
        logits = logits.clone()
        logits[rows] = model.rerun_alone(state, rows).to(logits.dtype)
    return logits, low.cpu()


def fallback_sweep(
    model: MuxModel,
    data: TaskData,
    margins: Sequence[float],
    *,
    groupings: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    max_length: int | None = None,
) -> list[dict[str, Any]]:
    """One dict per margin: margin, accuracy_mean/std, agreement, rerun_share, bound (see the module)."""
    bad = [m for m in margins if not 0.0 <= m <= 1.0]
    if bad or not margins:
        raise ConfigError(f"--fallback-margin takes probability margins in [0, 1], got {list(margins)!r}.")
    if groupings < 1:
        raise ConfigError(f"--groupings must be an integer >= 1, got {groupings!r}.")
    data = prepared(model, data, max_length)
    view, N, M = model.view, model.n, len(data)
    chunk = batch_size * N
    m = (M // N) * N if N > 1 else 0
    labels = torch.tensor(data.labels)
    model.eval()
    runs = []
    with torch.inference_mode():
        states, probs = prefill_rows(model, data, chunk, max_length)
        teacher = probs.argmax(-1)
        rows_of = lambda idx: states.rows(view, idx.to(view.device))  # noqa: E731
        for r in range(groupings):
            perm = grouping_permutation(M, seed + r)
            pred, margin = teacher.clone(), torch.full((M,), float("inf"))  # leftovers run at N = 1
            predict_grouping(model, rows_of, perm[:m], chunk, pred, margin)
            runs.append((pred, margin))
    L, k = model.config.num_layers, model.k
    out = []
    for threshold in margins:
        answers = [torch.where(margin < threshold, teacher, pred) for pred, margin in runs]
        accs = [float((a == labels).float().mean()) for a in answers]
        share = statistics.fmean(float((margin < threshold).float().mean()) for _, margin in runs)
        cost = (k + (L - k) / N + share * (L - k)) / L
        out.append(
            {
                "margin": threshold,
                "accuracy_mean": statistics.fmean(accs),
                "accuracy_std": statistics.pstdev(accs),
                "agreement": statistics.fmean(float((a == teacher).float().mean()) for a in answers),
                "teacher_accuracy": float((teacher == labels).float().mean()),
                "rerun_share": share,
                "bound": 1.0 / cost,
            }
        )
    return out
