"""The additive reversible coupling chain of RevMUX (docs/method.md section 3, steps 3 and 6).

It maps N slots x_0..x_{N-1} (each of width d_sub) to y_0..y_{N-1} and back with ONE set of small
MLPs F_0..F_{N-1}, shared by both directions. It is pure tensor code: no Down/Up projections, no
composite layout (see `reversible.py`), no transformers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: std of the last Linear's weights of every F at init (bias zero): F starts near zero, so the coupling
#: starts near the identity while every parameter still receives a gradient from the first step
#: (an all-zero last layer would leave the first layer without gradient until it moved).
F_INIT_STD = 0.02


def make_f(d_sub: int, f_hidden: int) -> nn.Sequential:
    """One coupling function F: Linear(d_sub, f_hidden) -> GELU -> Linear(f_hidden, d_sub), ~0 at init."""
    f = nn.Sequential(nn.Linear(d_sub, f_hidden), nn.GELU(), nn.Linear(f_hidden, d_sub))
    nn.init.normal_(f[2].weight, std=F_INIT_STD)
    nn.init.zeros_(f[2].bias)
    return f


class ReversibleCoupling(nn.Module):
    """Additive coupling over the slot axis of x: (..., N, d_sub).

    forward:  y_0 = x_0 + F_0(x_{N-1});   y_n = x_n + F_n(y_{n-1})      for n = 1..N-1
    inverse:  x^_n = y_n - F_n(y_{n-1})   for n = N-1 down to 1;   x^_0 = y_0 - F_0(x^_{N-1})

    For N = 1 there is no other slot, so F_0 reads zeros: y_0 = x_0 + F_0(0), x^_0 = y_0 - F_0(0)
    (still exactly invertible; reading x_0 itself would not be).
    `f_hidden` defaults to N * d_sub (about d, the full hidden size).
    """

    def __init__(self, n: int, d_sub: int, f_hidden: int | None = None) -> None:
        super().__init__()
        if n < 1 or d_sub < 1:
            raise ValueError(f"ReversibleCoupling needs n >= 1 and d_sub >= 1, got n={n}, d_sub={d_sub}.")
        self.n = n
        self.d_sub = d_sub
        self.f_hidden = f_hidden if f_hidden is not None else n * d_sub
        self.fs = nn.ModuleList(make_f(d_sub, self.f_hidden) for _ in range(n))

    def _check(self, t: Tensor) -> None:
        if t.dim() < 2 or t.shape[-2] != self.n or t.shape[-1] != self.d_sub:
            raise ValueError(
                f"coupling expects (..., N={self.n}, d_sub={self.d_sub}), got shape {tuple(t.shape)}."
            )

    def _x_last_input(self, first: Tensor, last: Tensor) -> Tensor:
        """What F_0 reads: x_{N-1} (or x^_{N-1}); zeros when N = 1."""
        return torch.zeros_like(first) if self.n == 1 else last

    def forward(self, x: Tensor) -> Tensor:
        """(..., N, d_sub) -> (..., N, d_sub): the multiplexing direction."""
        self._check(x)
        xs = x.unbind(-2)
        ys = [xs[0] + self.fs[0](self._x_last_input(xs[0], xs[-1]))]
        for i in range(1, self.n):
            ys.append(xs[i] + self.fs[i](ys[i - 1]))
        return torch.stack(ys, dim=-2)

    def inverse(self, y: Tensor) -> Tensor:
        """(..., N, d_sub) -> (..., N, d_sub): the exact inverse of `forward`, with the same F_n."""
        self._check(y)
        ys = y.unbind(-2)
        xs: list[Tensor] = [ys[0]] * self.n
        for i in range(self.n - 1, 0, -1):
            xs[i] = ys[i] - self.fs[i](ys[i - 1])
        xs[0] = ys[0] - self.fs[0](self._x_last_input(ys[0], xs[-1]))
        return torch.stack(xs, dim=-2)

    def inverse_one(self, y: Tensor, n: int) -> Tensor:
        """(..., N, d_sub) -> (..., d_sub): only x^_n (one F call for n >= 1, two for n = 0 when N >= 2)."""
        self._check(y)
        if not 0 <= n < self.n:
            raise ValueError(f"slot index n must be in [0, {self.n}), got {n}.")
        if n >= 1:
            return y[..., n, :] - self.fs[n](y[..., n - 1, :])
        y0 = y[..., 0, :]
        if self.n == 1:
            return y0 - self.fs[0](torch.zeros_like(y0))
        x_last = y[..., -1, :] - self.fs[-1](y[..., -2, :])
        return y0 - self.fs[0](x_last)
