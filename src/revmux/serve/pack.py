"""An adapter pack: the MuxModels of several widths N on ONE frozen teacher, checked at start-up.

What it is: `load_pack(pack=DIR)` loads every adapter directory in DIR (DIR itself when it holds
mux_config.json, else its direct subdirectories that do, e.g. DIR/n2, DIR/n4; `checkpoints/` of
a training run are skipped), or `load_pack(adapter=DIR)` loads one. N = 1 is always the teacher
itself (the Hugging Face model's own forward), so a single N = 4 adapter serves widths {1, 4}.
Every adapter must name the same backbone (content hash) and labels, encode requests alike (the same
`RequestEncoder`: prompt, max_length, verbalizer ids, tokenizer), and each N appears once; anything
else is a CheckpointError naming the directories, the difference and the fix, raised before serving.
What it is not: a model registry or hot reload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revmux.backbones import BackboneView, backbone_hash, load_backbone
from revmux.config import CONFIG_NAME, WEIGHTS_NAME, MuxConfig
from revmux.encoding import RequestEncoder
from revmux.errors import CheckpointError, ConfigError
from revmux.model import MuxModel, check_compatible


@dataclass
class AdapterPack:
    """The teacher's view, one MuxModel per width N > 1, and where each came from."""

    view: BackboneView
    models: dict[int, MuxModel] = field(default_factory=dict)
    dirs: dict[int, Path] = field(default_factory=dict)
    weight_hashes: dict[int, str] = field(default_factory=dict)
    backbone: str = ""
    backbone_hash: str = ""
    encoder: RequestEncoder | None = None  # the one encoder all adapters share (checked by load_pack)

    @property
    def widths(self) -> list[int]:
        return sorted({1, *self.models})

    @property
    def label_names(self) -> list[str]:
        for model in self.models.values():
            if model.config.label_names:
                return list(model.config.label_names)
        return self.view.label_names

    def __post_init__(self) -> None:
        if self.encoder is None:
            first = next(iter(self.models.values()), None)
            self.encoder = first.encoder if first is not None else RequestEncoder(self.view.tokenizer)

    @property
    def max_length(self) -> int:
        return self.encoder.max_length


def find_adapter_dirs(pack: str | Path) -> list[Path]:
    """DIR if it is an adapter, else its direct subdirectories holding mux_config.json (sorted)."""
    root = Path(pack)
    if not root.is_dir():
        raise CheckpointError(
            f"--pack {root} is not a directory. Pass a directory of adapter directories written by "
            "`revmux train` (e.g. DIR/n2, DIR/n4), or --adapter DIR for a single adapter."
        )
    if (root / CONFIG_NAME).is_file():
        return [root]
    found = sorted(
        p for p in root.iterdir() if p.is_dir() and p.name != "checkpoints" and (p / CONFIG_NAME).is_file()
    )
    if not found:
        raise CheckpointError(
            f"--pack {root} holds no adapter: no subdirectory has {CONFIG_NAME}. Put the directories "
            "written by `revmux train` (one per N, all on one teacher) inside it."
        )
    return found


def check_pack(*, pack: str | Path | None = None, adapter: str | Path | None = None) -> dict[Path, MuxConfig]:
    """The configs of `pack`'s adapters (or the one `adapter`), checked from mux_config.json alone.

    One teacher, one label set, one N per adapter, one request encoder (prompt, max_length, verbalizer
    ids): the checks that need no backbone, run by `load_pack` and by the Ray app before it deploys.
    """
    if (pack is None) == (adapter is None):
        raise ConfigError(
            "pass exactly one of --adapter DIR (one adapter) or --pack DIR (adapters for several N)."
        )
    if adapter is not None:
        if not (Path(adapter) / CONFIG_NAME).is_file():
            raise CheckpointError(
                f"--adapter {adapter} is not an adapter directory (no {CONFIG_NAME}). Pass the directory "
                "written by `revmux train`, or --pack DIR for a directory of them."
            )
        dirs = [Path(adapter)]
    else:
        dirs = find_adapter_dirs(pack)
    configs = {d: MuxConfig.load(d) for d in dirs}
    _check_one_teacher(configs)
    _check_one_encoder(configs, lambda cfg: None)
    return configs


def load_pack(
    *,
    pack: str | Path | None = None,
    adapter: str | Path | None = None,
    model: str | Path | None = None,
    device: str = "cpu",
) -> AdapterPack:
    """Load the adapters of `pack` (or the one `adapter`) on one backbone (`model`, or the one they name)."""
    configs = check_pack(pack=pack, adapter=adapter)
    dirs = list(configs)
    first = configs[dirs[0]]
    backbone = str(model or first.backbone_path)
    if not backbone:
        raise CheckpointError(
            f"{dirs[0]} names no backbone; pass --model DIR (the teacher the adapters were trained on)."
        )
    view = load_backbone(
        backbone, verbalizer_ids=first.verbalizer_ids, num_labels=len(first.label_names) or None
    )
    encoder = _check_one_encoder(configs, _tokenizers(view, backbone, model))
    if device != "cpu":
        view.model.to(device)
    result = AdapterPack(
        view=view, backbone=backbone, backbone_hash=backbone_hash(view.model), encoder=encoder
    )
    for d, cfg in configs.items():
        if cfg.n == 1:
            continue  # N = 1 is the teacher itself
        check_compatible(cfg, view, check_hash=False)
        if cfg.backbone_hash and cfg.backbone_hash != result.backbone_hash:
            raise CheckpointError(
                f"adapter {d} was trained on backbone {cfg.backbone_hash[:16]}..., but {backbone} is "
                f"{result.backbone_hash[:16]}... (different weights). Serve it with the teacher it was trained "
                "on (--model), or re-train it on this one."
            )
        mux = MuxModel.from_pretrained(d, view, check_hash=False).to(device).eval()
        result.models[cfg.n] = mux
        result.dirs[cfg.n] = d
        result.weight_hashes[cfg.n] = hashlib.sha256((d / WEIGHTS_NAME).read_bytes()).hexdigest()
    return result


def _check_one_teacher(configs: dict[Path, MuxConfig]) -> None:
    """CheckpointError unless all adapters share backbone hash, labels and distinct widths."""
    items = list(configs.items())
    d0, c0 = items[0]
    seen: dict[int, Path] = {}
    for d, c in items:
        if c.n in seen:
            raise CheckpointError(
                f"two adapters for N={c.n} in the pack: {seen[c.n]} and {d}. Keep one adapter per N."
            )
        seen[c.n] = d
        if c.backbone_hash != c0.backbone_hash or c.backbone_model_type != c0.backbone_model_type:
            raise CheckpointError(
                f"the pack mixes teachers: {d0} was trained on backbone {c0.backbone_hash[:16] or '?'}... "
                f"({c0.backbone_model_type}), {d} on {c.backbone_hash[:16] or '?'}... ({c.backbone_model_type}). "
                "A pack holds adapters trained on one teacher; move the others to another pack."
            )
        if c.label_names != c0.label_names:
            raise CheckpointError(
                f"the pack mixes label sets: {d0} has {c0.label_names}, {d} has {c.label_names}. "
                "A pack holds adapters of one task."
            )


def _check_one_encoder(
    configs: dict[Path, MuxConfig], tokenizer_of: Callable[[MuxConfig], Any]
) -> RequestEncoder:
    """The first adapter's RequestEncoder; CheckpointError naming both adapters and the difference
    when another would encode a request differently (a pack serves every width with one encoder)."""
    items = [(d, RequestEncoder.from_config(c, tokenizer_of(c))) for d, c in configs.items()]
    d0, e0 = items[0]
    for d, e in items[1:]:
        diff = e0.difference(e)
        if diff is not None:
            raise CheckpointError(
                f"the pack mixes request encoders: {d0} and {d} differ in {diff}. A pack serves every "
                "width with one prompt, max_length, verbalizer and tokenizer; re-train the odd adapter with "
                "the others' settings, or serve it from another pack."
            )
    return e0


def _tokenizers(view: BackboneView, backbone: str, model: str | Path | None) -> Callable[[MuxConfig], Any]:
    """Each adapter's tokenizer: that of the backbone it names, or the served `backbone`'s when `model`
    overrides them, the path is the served one or is gone."""
    from revmux.backbones.registry import load_tokenizer

    loaded: dict[str, Any] = {}

    def tokenizer_of(cfg: MuxConfig) -> Any:
        path = cfg.backbone_path
        if model is not None or not path or path == backbone or not Path(path).exists():
            return view.tokenizer
        if path not in loaded:
            loaded[path] = load_tokenizer(path)
        return loaded[path]

    return tokenizer_of
