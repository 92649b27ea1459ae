"""RevMUX: shared Down, the reversible coupling chain, contiguous composite, inverse demux, shared Up.

This is the method of docs/method.md section 3. The composite layout is one layout used both ways: slot n
occupies channels [n * d_sub, (n + 1) * d_sub) and channels from N * d_sub to d are zero (no channel
interleaving, section 8). Pure tensor code: no transformers, no backbone, no training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from revmux.errors import ConfigError
from revmux.mux.base import Multiplexer, MuxOptions
from revmux.mux.coupling import ReversibleCoupling
from revmux.mux.registry import register_mux


def check_shape(t: Tensor, n: int, d: int, what: str, min_dim: int) -> None:
    """Raise ValueError unless t is (G, N, ..., d) with at least `min_dim` dims (N checked when n > 0)."""
    if t.dim() < min_dim or t.shape[-1] != d or (n > 0 and t.shape[1] != n):
        want = f"(G, N={n}, ..., d={d})" if n > 0 else f"(G, ..., d={d})"
        raise ValueError(f"{what} expects {want} with >= {min_dim} dims, got shape {tuple(t.shape)}.")


def param_dtype(module: nn.Module) -> torch.dtype:
    """The dtype adapters compute in: their own parameters' (fp32 unless cast)."""
    return next(module.parameters()).dtype


def pack(y: Tensor, d: int) -> Tensor:
    """(..., N, d_sub) slots -> (..., d) composite: contiguous blocks, zero-padded from N * d_sub to d."""
    flat = y.flatten(-2)
    return F.pad(flat, (0, d - flat.shape[-1]))


def unpack(c: Tensor, n: int, d_sub: int) -> Tensor:
    """(..., d) composite -> (..., N, d_sub) slots: the first N * d_sub channels, as `pack` wrote them."""
    return c[..., : n * d_sub].unflatten(-1, (n, d_sub))


def coupling_slots(down_proj: nn.Linear, coupling: ReversibleCoupling, h: Tensor) -> Tensor:
    """(G, N, T, d) (already in the adapter dtype) -> (G, T, N * d_sub): Down, then the coupling chain over
    the slot axis, the N slots side by side (the first N * d_sub channels of the packed composite).

    The chain of `ReversibleCoupling.forward`, run on the slot views of one Down output: no slot-axis
    transpose, no stack and no pad (one cat of the N results)."""
    n = h.shape[1]
    x = down_proj(h)  # (G, N, T, d_sub)
    first = x[:, n - 1] if n > 1 else torch.zeros_like(x[:, 0])
    ys = [x[:, 0] + coupling.fs[0](first)]
    for i in range(1, n):
        ys.append(x[:, i] + coupling.fs[i](ys[i - 1]))
    return torch.cat(ys, dim=-1)


def coupling_mux(down_proj: nn.Linear, coupling: ReversibleCoupling, h: Tensor, d: int) -> Tensor:
    """(G, N, T, d) (already in the adapter dtype) -> (G, T, d): Down, coupling over the slot axis, pack."""
    slots = coupling_slots(down_proj, coupling, h)
    return F.pad(slots, (0, d - slots.shape[-1]))


@dataclass
class RevMUXOptions(MuxOptions):
    """Knobs of kind "revmux"."""

    f_hidden: int | None = field(default=None, metadata={"help": "width of each coupling F (default d)"})
    up_hidden: int | None = field(default=None, metadata={"help": "hidden width of Up (default 2 * d)"})
    pca_composite: bool = field(
        default=True,
        metadata={"help": "write the composite in the PCA basis of layer-k states (see RevMUX)"},
    )
    natural_scale: bool = field(
        default=False,
        metadata={
            "help": "with pca_composite: scale each slot's block of the composite to the natural spread of "
            "layer-k states along its principal directions (see RevMUX)"
        },
    )


@register_mux
class RevMUX(Multiplexer):
    """Reversible multiplexer (kind "revmux"): composite = pack(coupling(Down(h_n))); demux inverts it.

    Options (`RevMUXOptions`): f_hidden (width of each F, default d), up_hidden (Up's hidden width,
    default 2 * d), pca_composite (default True: see below).

    With pca_composite the composite is written in the principal basis of layer-k states, centred at
    their mean: c = mean + pack(y) @ V, where row i of the orthogonal V (d, d) is the i-th principal
    direction (set by `init_down_pca`; identity and zero mean until then), so slot n fills directions
    [n * d_sub, (n + 1) * d_sub). At init (PCA Down, coupling near the identity) the composite is then
    the rank-d_sub PCA reconstruction of request 0's state plus the other requests in the next
    principal directions, a state the frozen tail knows, instead of raw PCA coordinates centred at
    zero. The demux applies the exact inverse, pack^-1((o - mean) @ V^T), so invertibility is kept.

    With natural_scale (needs pca_composite) slot n's channels are also scaled by a fixed s_n before the
    basis: c = mean + (pack(y) * s) @ V, inverted by pack^-1(((o - mean) @ V^T) / s). `init_down_pca` sets
    s_n = sqrt(sum of the layer-k states' variance along the principal directions slot n is written into /
    the same sum over slot 0's), so at init each slot's block of the composite carries the variance natural
    states carry there: the partners sit in the minor directions at the minor directions' own scale instead
    of at the major ones' (which drowns request 0 in a deep frozen tail). One factor per slot, not per
    direction: the last principal directions of layer-normed states have almost no variance, and the demux
    divides by s.
    """

    kind = "revmux"
    Options = RevMUXOptions

    def __init__(self, n: int, d: int, **options: object) -> None:
        super().__init__(n, d, **options)
        opts: RevMUXOptions = self.options  # type: ignore[assignment]
        self.f_hidden = opts.f_hidden if opts.f_hidden is not None else d
        self.up_hidden = opts.up_hidden if opts.up_hidden is not None else 2 * d
        pca_composite = opts.pca_composite
        if opts.natural_scale and not pca_composite:
            raise ConfigError("natural_scale scales the PCA composite: set pca_composite=true with it.")
        self.down_proj = nn.Linear(d, self.d_sub)
        self.coupling = ReversibleCoupling(n, self.d_sub, self.f_hidden)
        self.up_proj = nn.Sequential(
            nn.Linear(self.d_sub, self.up_hidden), nn.GELU(), nn.Linear(self.up_hidden, d)
        )
        self.pca_composite = pca_composite
        if pca_composite:  # fixed (not trained), saved with the adapters
            self.register_buffer("composite_basis", torch.eye(d))
            self.register_buffer("composite_mean", torch.zeros(d))
        self.natural_scale = opts.natural_scale
        if self.natural_scale:  # fixed, saved with the adapters (ones until init_down_pca)
            self.register_buffer("composite_scale", torch.ones(d))

    def to_composite(self, c: Tensor) -> Tensor:
        """Packed slots (..., d) -> the composite the tail reads (identity unless pca_composite)."""
        if not self.pca_composite:
            return c
        if self.natural_scale:
            c = c * self.composite_scale.to(c.dtype)
        return self.composite_mean.to(c.dtype) + c @ self.composite_basis.to(c.dtype)

    def from_composite(self, o: Tensor) -> Tensor:
        """The exact inverse of `to_composite`: (..., d) tail output -> packed slots."""
        if not self.pca_composite:
            return o
        slots = (o - self.composite_mean.to(o.dtype)) @ self.composite_basis.to(o.dtype).T
        return slots / self.composite_scale.to(o.dtype) if self.natural_scale else slots

    def down(self, h: Tensor) -> Tensor:
        """(G, N, T, d) -> (G, N, T, d_sub): the shared Down projection of every request."""
        check_shape(h, self.n, self.d, "RevMUX.down", 3)
        return self.down_proj(h.to(param_dtype(self))).to(h.dtype)

    def up(self, x: Tensor) -> Tensor:
        """(..., d_sub) -> (..., d): the shared Up MLP."""
        return self.up_proj(x.to(param_dtype(self))).to(x.dtype)

    def mux(self, h: Tensor) -> Tensor:
        """(G, N, T, d) -> (G, T, d) composites."""
        check_shape(h, self.n, self.d, "RevMUX.mux", 3)
        slots = coupling_slots(self.down_proj, self.coupling, h.to(param_dtype(self)))  # (G, T, N * d_sub)
        if not self.pca_composite:
            return F.pad(slots, (0, self.d - slots.shape[-1])).to(h.dtype)
        # to_composite without the zero channels: mean + slots @ V[:N * d_sub], one addmm
        basis = self.composite_basis[: slots.shape[-1]]
        if self.natural_scale:  # (slots * s) @ V == slots @ (s[:, None] * V)
            basis = basis * self.composite_scale[: slots.shape[-1], None]
        basis = basis.to(slots.dtype)
        c = torch.addmm(self.composite_mean.to(slots.dtype), slots.flatten(0, -2), basis)
        return c.view(*slots.shape[:-1], self.d).to(h.dtype)

    def invert(self, o: Tensor) -> Tensor:
        """(G, *, d) composite -> (G, N, *, d_sub): the exact coupling inverse (no Up), for verification."""
        check_shape(o, 0, self.d, "RevMUX.invert", 2)
        x = self.coupling.inverse(unpack(self.from_composite(o.to(param_dtype(self))), self.n, self.d_sub))
        return x.movedim(-2, 1).to(o.dtype)

    def demux(self, o: Tensor) -> Tensor:
        """(G, N, *, d) -> (G, N, *, d): row n is the composite at request n's read positions; only x^_n
        is recovered from it (N + 1 evaluations of F in all, not N * N), then Up."""
        check_shape(o, self.n, self.d, "RevMUX.demux", 3)
        slots = self.from_composite(o.to(param_dtype(self)))
        blocks = unpack(slots, self.n, self.d_sub)  # (G, N, *, N, d_sub)
        x = torch.stack([self.coupling.inverse_one(blocks[:, i], i) for i in range(self.n)], dim=1)
        return self.up(x).to(o.dtype)

    @torch.no_grad()
    def init_down_pca(self, states: Tensor) -> None:
        """Set Down to the top-d_sub principal directions of sample layer-k states (M, d), M >= d_sub.

        Down(h) = V (h - mean), V the (d_sub, d) principal directions. Up is set so that, with the
        coupling at the identity, Up(Down(h)) = mean + V^T V (h - mean) is exactly the rank-d_sub PCA
        reconstruction: its first 2 * d_sub hidden units read +x and -x,
        and GELU(z) - GELU(-z) = z, so the last layer maps them through +V^T and -V^T with bias = mean.
        The other hidden units keep their random first layer and get zero output weights. Up is left
        alone if up_hidden < 2 * d_sub. With pca_composite the composite basis becomes all d principal
        directions and its offset the mean (that needs M >= d rows); with natural_scale slot n's scale
        becomes sqrt(variance along its principal directions / variance along slot 0's) (1 beyond N * d_sub).
        """
        states = states.reshape(-1, self.d)
        what, need = ("d", self.d) if self.pca_composite else ("d_sub", self.d_sub)
        if states.shape[0] < need:
            raise ValueError(f"init_down_pca needs >= {what}={need} rows, got {states.shape[0]}.")
        dt, dev = param_dtype(self), self.down_proj.weight.device
        s = states.to(device=dev, dtype=torch.float64)
        mean = s.mean(dim=0)
        _, sv, vh = torch.linalg.svd(s - mean, full_matrices=False)  # vh: (min(M, d), d), rows by variance
        v = vh[: self.d_sub]  # (d_sub, d)
        if self.pca_composite:
            self.composite_basis.copy_(vh.to(self.composite_basis))
            self.composite_mean.copy_(mean.to(self.composite_mean))
        if self.natural_scale:
            used = self.n * self.d_sub
            energy = sv[:used].pow(2).view(self.n, self.d_sub).sum(-1)  # variance per slot's directions
            scale = torch.ones(self.d, dtype=torch.float64, device=dev)
            per_slot = (energy / energy[0]).sqrt().clamp_min(1e-3)
            scale[:used] = per_slot.repeat_interleave(self.d_sub)
            self.composite_scale.copy_(scale.to(self.composite_scale))
        self.down_proj.weight.copy_(v.to(dt))
        self.down_proj.bias.copy_((-(v @ mean)).to(dt))
        if self.up_hidden < 2 * self.d_sub:
            return
        first, last = self.up_proj[0], self.up_proj[2]
        eye = torch.eye(self.d_sub, dtype=dt, device=dev)
        first.weight[: 2 * self.d_sub].copy_(torch.cat([eye, -eye]))
        first.bias[: 2 * self.d_sub].zero_()
        last.weight.zero_()
        last.weight[:, : 2 * self.d_sub].copy_(torch.cat([v.T, -v.T], dim=1).to(dt))
        last.bias.copy_(mean.to(dt))
