"""One-off variants for benchmarks/select_recipe.py, measured once and then removed (see docs/results/notes.md).

Usage: python benchmarks/select_variants.py --layout swap|mix|rot --kd-temperature T --ce-weight W \\
    -- <select_recipe.py arguments>
or, to load an adapter of a variant: python benchmarks/select_variants.py --layout rot --script agreement_breakdown \\
    -- <agreement_breakdown.py arguments>
- layout swap: RevMUX's PCA composite with the slots' blocks of principal directions in reverse order
  (slot N-1 on the top directions);
- layout mix: the blocks mixed by an orthogonal Hadamard matrix over the slot axis (every slot spread over
  every block; N a power of 2);
- layout rot: the composite basis times a trained rotation exp(S - S^T), S a d x d parameter from zero
  (still exactly invertible);
- kd-temperature: the KD term at this temperature (times T^2); ce-weight: the gold CE's weight.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import select_recipe  # noqa: E402

import revmux.train.trainer as trainer  # noqa: E402
from revmux.mux.reversible import RevMUX, coupling_slots, param_dtype  # noqa: E402
from revmux.train import losses  # noqa: E402


def hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    if h.shape[0] != n:
        raise SystemExit(f"layout mix needs N a power of 2, got {n}")
    return h / n**0.5


def use_layout(layout: str) -> None:
    init_pca = RevMUX.init_down_pca

    @torch.no_grad()
    def init_down_pca(self: RevMUX, states: torch.Tensor) -> None:
        init_pca(self, states)
        n, ds = self.n, self.d_sub
        blocks = self.composite_basis[: n * ds].clone().view(n, ds, -1)
        if layout == "swap":
            blocks = blocks.flip(0)
        elif layout == "mix":
            blocks = torch.einsum("nj,jdc->ndc", hadamard(n).to(blocks), blocks)
        self.composite_basis[: n * ds].copy_(blocks.reshape(n * ds, -1))

    RevMUX.init_down_pca = init_down_pca
    if layout != "rot":
        return
    init = RevMUX.__init__

    def __init__(self: RevMUX, n: int, d: int, **options: object) -> None:
        init(self, n, d, **options)
        self.rot_s = nn.Parameter(torch.zeros(d, d))

    def basis(self: RevMUX) -> torch.Tensor:
        return torch.linalg.matrix_exp(self.rot_s - self.rot_s.T) @ self.composite_basis

    def mux(self: RevMUX, h: torch.Tensor) -> torch.Tensor:
        slots = coupling_slots(self.down_proj, self.coupling, h.to(param_dtype(self)))
        return (self.composite_mean + slots @ basis(self)[: slots.shape[-1]]).to(h.dtype)

    RevMUX.__init__ = __init__
    RevMUX.mux = mux
    RevMUX.to_composite = lambda self, c: self.composite_mean.to(c.dtype) + c @ basis(self).to(c.dtype)
    RevMUX.from_composite = lambda self, o: (o - self.composite_mean.to(o.dtype)) @ basis(self).to(o.dtype).T


def use_loss(temperature: float, ce_weight: float) -> None:
    def mux_loss(student_logits, student_reps, teacher_reps, teacher_logits, labels, **kw):  # noqa: ANN001, ANN202
        total, parts = losses.mux_loss(
            student_logits, student_reps, teacher_reps, teacher_logits, labels, temperature=temperature, **kw
        )
        if ce_weight != 1.0:
            total = total + (ce_weight - 1.0) * F.cross_entropy(student_logits.float(), labels)
        return total, parts

    trainer.mux_loss = mux_loss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", default="contiguous", choices=["contiguous", "swap", "mix", "rot"])
    ap.add_argument("--kd-temperature", type=float, default=1.0)
    ap.add_argument("--ce-weight", type=float, default=1.0)
    ap.add_argument("--script", default="select_recipe", choices=["select_recipe", "agreement_breakdown"])
    args, rest = ap.parse_known_args()
    use_layout(args.layout)
    use_loss(args.kd_temperature, args.ce_weight)
    rest = [a for a in rest if a != "--"]
    if args.script == "agreement_breakdown":
        import agreement_breakdown

        sys.argv = ["benchmarks/agreement_breakdown.py", *rest]
        return agreement_breakdown.main()
    return select_recipe.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
