"""Maps a mux kind name to its Multiplexer class, and builds one (IdentityMux whenever N = 1).

Not a loader: checkpoints (safetensors + JSON config) are handled elsewhere.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor

from revmux.errors import ConfigError
from revmux.mux.base import Multiplexer
from revmux.mux.baselines import ORA, DataMUX, VanillaAdapter
from revmux.mux.reversible import RevMUX

# kind -> class; a new kind is one class plus one line here.
MUX_KINDS: dict[str, type[Multiplexer]] = {
    "revmux": RevMUX,
    "ora": ORA,
    "adapter": VanillaAdapter,
    "datamux": DataMUX,
}
ALIASES: dict[str, str] = {"reversible": "revmux", "vanilla": "adapter"}


class IdentityMux(Multiplexer):
    """N = 1, plain inference: no parameters, mux(h) = h[:, 0], demux(o) = o."""

    kind = "identity"

    def __init__(self, n: int = 1, d: int = 1) -> None:
        if n != 1:
            raise ConfigError(f"IdentityMux is for N = 1 only, got N={n}. Pick a mux kind for N > 1.")
        super().__init__(n, d)

    def mux(self, h: Tensor) -> Tensor:
        """(G, 1, T, d) -> (G, T, d)."""
        return h[:, 0]

    def demux(self, o: Tensor) -> Tensor:
        """(G, 1, *, d) -> itself."""
        return o


def valid_kinds() -> list[str]:
    return sorted(MUX_KINDS) + sorted(ALIASES)


def build_mux(kind: str, n: int, d: int, **options: Any) -> Multiplexer:
    """The Multiplexer of `kind` for groups of n requests of hidden size d.

    n == 1 gives IdentityMux for any valid kind (options ignored). Options set to None are dropped
    (the class default applies); an option the kind does not take raises ConfigError.
    """
    name = ALIASES.get(kind, kind)
    if name not in MUX_KINDS and not (name == IdentityMux.kind and n == 1):
        raise ConfigError(
            f"unknown mux kind {kind!r}; valid kinds are {', '.join(valid_kinds())}"
            + (" ('identity' only with N = 1)." if name == IdentityMux.kind else ".")
        )
    if n == 1:
        return IdentityMux(1, d)
    cls = MUX_KINDS[name]
    options = {k: v for k, v in options.items() if v is not None}
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(params) - {"self", "n", "d"})
    if unknown:
        taken = sorted(set(params) - {"self", "n", "d"})
        raise ConfigError(f"mux kind {name!r} does not take option(s) {unknown}; it takes {taken}.")
    return cls(n, d, **options)
