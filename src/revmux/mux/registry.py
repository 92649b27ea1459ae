"""Maps a mux kind name to its Multiplexer class, and builds one (IdentityMux whenever N = 1).

A kind registers itself beside its class with `@register_mux`; its knobs are its `Options` dataclass.
Not a loader: checkpoints (safetensors + JSON config) are handled by `revmux.checkpoint`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from torch import Tensor

from revmux.errors import ConfigError
from revmux.mux.base import Multiplexer

# kind -> class, filled by @register_mux; a new kind is one class with the decorator.
MUX_KINDS: dict[str, type[Multiplexer]] = {}
ALIASES: dict[str, str] = {"reversible": "revmux", "vanilla": "adapter"}
M = TypeVar("M", bound=type[Multiplexer])


def register_mux(cls: M) -> M:
    """Class decorator: make `cls` buildable as `cls.kind` (train, eval, bench, serve and the CLI see it)."""
    if not cls.kind or cls.kind in ALIASES or cls.kind == IdentityMux.kind:
        raise ValueError(f"cannot register a mux kind named {cls.kind!r}.")
    MUX_KINDS[cls.kind] = cls
    return cls


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


def mux_class(kind: str) -> type[Multiplexer]:
    """The registered class of `kind` (aliases resolved), or ConfigError listing the valid kinds."""
    name = ALIASES.get(kind, kind)
    if name not in MUX_KINDS:
        raise ConfigError(f"unknown mux kind {kind!r}; valid kinds are {', '.join(valid_kinds())}.")
    return MUX_KINDS[name]


def resolve_options(kind: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every option of `kind` with `options` applied over the defaults (strings converted), checked."""
    return mux_class(kind).parse_options(options).to_dict()


def options_help() -> str:
    """One line per kind: its options with their defaults and help (for `--mux-option`)."""
    lines = []
    for name, cls in sorted(MUX_KINDS.items()):
        parts = [
            f"{f.name}={f.default}" + (f" ({f.metadata['help']})" if "help" in f.metadata else "")
            for f in dataclasses.fields(cls.Options)
        ]
        lines.append(f"{name}: " + ("; ".join(parts) if parts else "no options"))
    return "\n".join(lines)


def build_mux(kind: str, n: int, d: int, **options: Any) -> Multiplexer:
    """The Multiplexer of `kind` for groups of n requests of hidden size d.

    n == 1 gives IdentityMux for any valid kind (options ignored). Options set to None take the kind's
    default; an option the kind does not take raises ConfigError naming those it takes.
    """
    name = ALIASES.get(kind, kind)
    if n == 1 and name == IdentityMux.kind:
        return IdentityMux(1, d)
    cls = mux_class(kind)
    if n == 1:
        return IdentityMux(1, d)
    return cls(n, d, **options)
