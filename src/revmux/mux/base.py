"""The Multiplexer interface shared by RevMUX and its baselines. Pure tensor code: no transformers."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from revmux.config import config_from_dict
from revmux.errors import ConfigError


@dataclass
class MuxOptions:
    """A mux kind's own knobs. Each kind subclasses it beside its class; every field carries a default and
    `metadata={"help": ...}`, and reaches `revmux train --mux-option KEY=VALUE`, the saved MuxConfig,
    eval, bench and serve without further wiring."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Multiplexer(nn.Module, ABC):
    """Mixes N requests' layer-k states into one composite, and separates the tail's output again.

    Shapes (G groups of N requests, T positions, d hidden size, d_sub = d // N):
      mux:   (G, N, T, d) -> (G, T, d)
      demux: (G, N, *, d) -> (G, N, *, d), where row n holds the composite tail output at the
             position(s) that request n's head reads; the result is request n's state there.
    Adapters compute in their own dtype (fp32 by default) and return the input's dtype.
    """

    kind: ClassVar[str] = ""
    Options: ClassVar[type[MuxOptions]] = MuxOptions

    def __init__(self, n: int, d: int, **options: Any) -> None:
        super().__init__()
        self.options = self.parse_options(options)
        if n < 1:
            raise ConfigError(f"N must be >= 1, got {n}.")
        if d < n:
            raise ConfigError(f"hidden size d={d} must be >= N={n}.")
        self.n = n
        self.d = d
        self.d_sub = d // n

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | None = None) -> MuxOptions:
        """`cls.Options` from a mapping (values may be strings; None means the default), or ConfigError
        naming the options the kind takes."""
        given = {k: v for k, v in (options or {}).items() if v is not None}
        names = sorted(f.name for f in dataclasses.fields(cls.Options))
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ConfigError(
                f"mux kind {cls.kind!r} does not take option(s) {unknown}; it takes {names or 'none'}."
            )
        return config_from_dict(
            cls.Options, given, source=f"options of mux kind {cls.kind!r}", flag=lambda name: name
        )

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
