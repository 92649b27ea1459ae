"""Where revmux keeps caches (prefill states, unpacked models): one function with an environment override."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$REVMUX_CACHE if set, else ~/.cache/revmux (created on demand by the callers)."""
    env = os.environ.get("REVMUX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "revmux"
