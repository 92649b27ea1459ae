"""The Multiplexer interface shared by RevMUX and its baselines. Pure tensor code: no transformers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor, nn

from revmux.errors import ConfigError


class Multiplexer(nn.Module, ABC):
    """Mixes N requests' layer-k states into one composite, and separates the tail's output again.

    Shapes (G groups of N requests, T positions, d hidden size, d_sub = d // N):
      mux:   (G, N, T, d) -> (G, T, d)
      demux: (G, N, *, d) -> (G, N, *, d), where row n holds the composite tail output at the
             position(s) that request n's head reads; the result is request n's state there.
    Adapters compute in their own dtype (fp32 by default) and return the input's dtype.
    """

    kind: ClassVar[str] = ""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        if n < 1:
            raise ConfigError(f"N must be >= 1, got {n}.")
        if d < n:
            raise ConfigError(f"hidden size d={d} must be >= N={n}.")
        self.n = n
        self.d = d
        self.d_sub = d // n

    @abstractmethod
    def mux(self, h: Tensor) -> Tensor:
        """(G, N, T, d) layer-k states -> (G, T, d) composites."""

    @abstractmethod
    def demux(self, o: Tensor) -> Tensor:
        """(G, N, *, d) composite outputs at each request's read positions -> (G, N, *, d) request states."""

    def down(self, h: Tensor) -> Tensor | None:
        """(G, N, T, d) -> (G, N, T, d_sub) per-request projections before mixing (None if the kind has none)."""
        return None

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
