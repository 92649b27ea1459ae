"""Multiplexers: RevMUX (reversible), baselines (ORA, vanilla adapter, DataMUX), IdentityMux (N = 1)."""

from revmux.mux.base import Multiplexer
from revmux.mux.baselines import ORA, DataMUX, VanillaAdapter
from revmux.mux.coupling import ReversibleCoupling
from revmux.mux.registry import MUX_KINDS, IdentityMux, build_mux
from revmux.mux.reversible import RevMUX

__all__ = [
    "MUX_KINDS",
    "ORA",
    "DataMUX",
    "IdentityMux",
    "Multiplexer",
    "ReversibleCoupling",
    "RevMUX",
    "VanillaAdapter",
    "build_mux",
]
