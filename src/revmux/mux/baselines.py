"""The baseline multiplexers of docs/method.md section 6: vanilla adapter, ORA and DataMUX-style.

They share RevMUX's interface and harness so that only the mixing/separation differs. None of them
is reversible: all demultiplex with trained MLPs. Pure tensor code: no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from revmux.mux.base import Multiplexer, MuxOptions
from revmux.mux.coupling import ReversibleCoupling
from revmux.mux.registry import register_mux
from revmux.mux.reversible import check_shape, coupling_mux, pack, param_dtype

F_HIDDEN_HELP = {"help": "width of the mixer MLP or of each coupling F (default d)"}
UP_HIDDEN_HELP = {"help": "hidden width of the MLP demux (default d)"}


@dataclass
class MLPDemuxOptions(MuxOptions):
    """Knobs of kinds "adapter" and "ora"."""

    f_hidden: int | None = field(default=None, metadata=F_HIDDEN_HELP)
    up_hidden: int | None = field(default=None, metadata=UP_HIDDEN_HELP)


@dataclass
class DataMUXOptions(MuxOptions):
    """Knobs of kind "datamux"."""

    up_hidden: int | None = field(default=None, metadata=UP_HIDDEN_HELP)
    seed: int = field(default=0, metadata={"help": "seed of the fixed Gaussian vectors"})


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Linear(d_in, hidden) -> GELU -> Linear(hidden, d_out)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class BlockDemux(nn.Module):
    """MLP demux d -> hidden -> N * d where row n of the input keeps only output block n.

    Only block n of the last layer is computed for row n (one (hidden x d) product per row, not N).
    """

    def __init__(self, n: int, d: int, hidden: int) -> None:
        super().__init__()
        self.n, self.d = n, d
        self.inp = nn.Linear(d, hidden)
        self.out = nn.Linear(hidden, n * d)

    def forward(self, o: Tensor) -> Tensor:
        """(G, N, *, d) -> (G, N, *, d)."""
        g = o.shape[0]
        hid = F.gelu(self.inp(o)).reshape(g, self.n, -1, self.inp.out_features)  # (G, N, P, H)
        w = self.out.weight.view(self.n, self.d, -1)  # block n = rows [n * d, (n + 1) * d)
        b = self.out.bias.view(self.n, 1, self.d)
        return (torch.einsum("gnph,ndh->gnpd", hid, w) + b).reshape(o.shape)


@register_mux
class VanillaAdapter(Multiplexer):
    """Kind "adapter": concat the N shared-Down projections (contiguous, zero-padded), mix with a residual
    MLP d -> f_hidden -> d; demux with an MLP d -> up_hidden -> N * d, block n for request n.

    Options (`MLPDemuxOptions`): f_hidden (mixer width, default d), up_hidden (demux width, default d).
    """

    kind = "adapter"
    Options = MLPDemuxOptions

    def __init__(self, n: int, d: int, **options: object) -> None:
        super().__init__(n, d, **options)
        f_hidden, up_hidden = self.options.f_hidden, self.options.up_hidden  # type: ignore[attr-defined]
        self.down_proj = nn.Linear(d, self.d_sub)
        self.mixer = mlp(d, f_hidden if f_hidden is not None else d, d)
        self.demuxer = BlockDemux(n, d, up_hidden if up_hidden is not None else d)

    def down(self, h: Tensor) -> Tensor:
        """(G, N, T, d) -> (G, N, T, d_sub)."""
        check_shape(h, self.n, self.d, "VanillaAdapter.down", 3)
        return self.down_proj(h.to(param_dtype(self))).to(h.dtype)

    def mux(self, h: Tensor) -> Tensor:
        """(G, N, T, d) -> (G, T, d): z = pack(Down(h_n)), composite = z + MLP(z)."""
        check_shape(h, self.n, self.d, "VanillaAdapter.mux", 3)
        z = pack(self.down_proj(h.to(param_dtype(self))).movedim(1, -2), self.d)
        return (z + self.mixer(z)).to(h.dtype)

    def demux(self, o: Tensor) -> Tensor:
        """(G, N, *, d) -> (G, N, *, d)."""
        check_shape(o, self.n, self.d, "VanillaAdapter.demux", 3)
        return self.demuxer(o.to(param_dtype(self))).to(o.dtype)


@register_mux
class ORA(Multiplexer):
    """Kind "ora" ("only the multiplexer is reversible"): RevMUX's Down + coupling multiplexer, and an
    MLP demux d -> up_hidden -> N * d like the adapter's (NOT the coupling inverse).

    Every part, the demux included, is a registered submodule, so an optimizer over `parameters()`
    trains all of it (the authors' code left ORA's demux out). Options (`MLPDemuxOptions`): f_hidden
    (width of each F, default d), up_hidden (demux width, default d).
    """

    kind = "ora"
    Options = MLPDemuxOptions

    def __init__(self, n: int, d: int, **options: object) -> None:
        super().__init__(n, d, **options)
        f_hidden, up_hidden = self.options.f_hidden, self.options.up_hidden  # type: ignore[attr-defined]
        self.down_proj = nn.Linear(d, self.d_sub)
        self.coupling = ReversibleCoupling(n, self.d_sub, f_hidden if f_hidden is not None else d)
        self.demuxer = BlockDemux(n, d, up_hidden if up_hidden is not None else d)

    def down(self, h: Tensor) -> Tensor:
        """(G, N, T, d) -> (G, N, T, d_sub)."""
        check_shape(h, self.n, self.d, "ORA.down", 3)
        return self.down_proj(h.to(param_dtype(self))).to(h.dtype)

    def mux(self, h: Tensor) -> Tensor:
        """(G, N, T, d) -> (G, T, d): exactly RevMUX's composite."""
        check_shape(h, self.n, self.d, "ORA.mux", 3)
        return coupling_mux(self.down_proj, self.coupling, h.to(param_dtype(self)), self.d).to(h.dtype)

    def demux(self, o: Tensor) -> Tensor:
        """(G, N, *, d) -> (G, N, *, d)."""
        check_shape(o, self.n, self.d, "ORA.demux", 3)
        return self.demuxer(o.to(param_dtype(self))).to(o.dtype)


@register_mux
class DataMUX(Multiplexer):
    """Kind "datamux" (Murahari et al., 2022): composite = mean_n(h_n * v_n) with fixed Gaussian v_n in R^d;
    demux row n with its own MLP_n d -> up_hidden -> d.

    The v_n are a registered (saved, non-trainable) buffer drawn from a generator seeded with `seed`.
    There is no Down (`down` returns None). Options (`DataMUXOptions`): up_hidden (default d), seed.
    """

    kind = "datamux"
    Options = DataMUXOptions

    def __init__(self, n: int, d: int, **options: object) -> None:
        super().__init__(n, d, **options)
        opts: DataMUXOptions = self.options  # type: ignore[assignment]
        gen = torch.Generator().manual_seed(opts.seed)
        self.register_buffer("vectors", torch.randn(n, d, generator=gen))
        hidden = opts.up_hidden if opts.up_hidden is not None else d
        self.demuxers = nn.ModuleList(mlp(d, hidden, d) for _ in range(n))

    def mux(self, h: Tensor) -> Tensor:
        """(G, N, T, d) -> (G, T, d)."""
        check_shape(h, self.n, self.d, "DataMUX.mux", 3)
        x = h.to(param_dtype(self))
        v = self.vectors.to(x.dtype).view((self.n,) + (1,) * (h.dim() - 3) + (self.d,))
        return (x * v).mean(dim=1).to(h.dtype)

    def demux(self, o: Tensor) -> Tensor:
        """(G, N, *, d) -> (G, N, *, d): MLP_n on row n."""
        check_shape(o, self.n, self.d, "DataMUX.demux", 3)
        x = o.to(param_dtype(self))
        return torch.stack([f(x[:, i]) for i, f in enumerate(self.demuxers)], dim=1).to(o.dtype)
