"""Multiplexers: RevMUX (reversible), baselines (ORA, vanilla adapter, DataMUX), IdentityMux (N = 1).

Importing this package registers every shipped kind (each module registers its classes).
"""

from revmux.mux.base import Multiplexer, MuxOptions
from revmux.mux.baselines import ORA, DataMUX, VanillaAdapter  # registers "ora", "adapter", "datamux"
from revmux.mux.coupling import ReversibleCoupling
from revmux.mux.registry import MUX_KINDS, IdentityMux, build_mux, register_mux, resolve_options
from revmux.mux.reversible import RevMUX, RevMUXOptions  # noqa: I001  (registers "revmux")

__all__ = [
    "MUX_KINDS",
    "ORA",
    "DataMUX",
    "IdentityMux",
    "Multiplexer",
    "MuxOptions",
    "ReversibleCoupling",
    "RevMUX",
    "RevMUXOptions",
    "VanillaAdapter",
    "build_mux",
    "register_mux",
    "resolve_options",
]
