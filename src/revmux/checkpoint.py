"""The adapter file format: write, read and validate adapter directories; atomic file helpers.

What it is: an adapter directory holds `mux_config.json` (the MuxConfig) and `mux_model.safetensors`
(the multiplexer's tensors, never the backbone's). `save_adapter` writes both aside and renames them in,
`load_adapter_weights` checks the tensors against the multiplexer the config builds, `check_compatible`
checks the config against a backbone, and `resolve_backbone` finds the backbone an adapter names.
The generic helpers (`write_json`, `read_json`, `save_tensors`, `load_tensors`, `atomic_directory`)
serve the training checkpoints of `revmux.train.checkpoint` too.
What it is not: the model (`revmux.model.MuxModel.save_pretrained` / `from_pretrained` call in here) or
the training-run state (optimizer, trainer_state.json: `revmux.train.checkpoint`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from revmux.backbones import BackboneView, backbone_hash, load_backbone
from revmux.config import CONFIG_NAME, WEIGHTS_NAME, MuxConfig
from revmux.errors import CheckpointError, ConfigError

ADAPTER_FIX = "Restore the file or re-train the adapter with `revmux train`."


# ---- adapter directories -------------------------------------------------------------------------
def save_adapter(directory: str | Path, config: MuxConfig, mux: nn.Module) -> Path:
    """Write `config` (mux_config.json) and `mux`'s tensors (mux_model.safetensors) into `directory`.

    Both files are written aside first and renamed in only once both are complete, so an interrupted
    save leaves the adapter that was there before intact. Other files in `directory` are untouched.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in mux.state_dict().items()}
    weights, conf = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    tmp_weights, tmp_conf = _aside(weights), _aside(conf)
    try:
        _save_file(tensors, tmp_weights, {"format": "pt", "revmux_kind": config.kind})
        tmp_conf.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp_weights, weights)
        os.replace(tmp_conf, conf)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_conf.unlink(missing_ok=True)
    return directory


def copy_adapter(source: str | Path, directory: str | Path) -> None:
    """Copy the adapter in `source` into `directory` (both files copied aside, then renamed in)."""
    source, directory = Path(source), Path(directory)
    pairs = [(source / name, directory / name) for name in (WEIGHTS_NAME, CONFIG_NAME)]
    for src, _ in pairs:
        if not src.is_file():
            raise CheckpointError(
                f"{src} is missing, so the adapter in {source} cannot be copied. {ADAPTER_FIX}"
            )
    directory.mkdir(parents=True, exist_ok=True)
    try:
        for src, dst in pairs:
            shutil.copyfile(src, _aside(dst))
        for _, dst in pairs:
            os.replace(_aside(dst), dst)
    finally:
        for _, dst in pairs:
            _aside(dst).unlink(missing_ok=True)


def load_adapter_weights(path: str | Path, mux: nn.Module) -> dict[str, Tensor]:
    """The tensors of an adapter file (or of the directory holding it), checked against `mux`'s own.

    Raises CheckpointError naming the file when it is missing, truncated or corrupted, or when its
    tensor names or shapes are not those of the multiplexer its config builds.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"adapter weights {path} are missing. Re-save the adapter with `revmux train`.")
    tensors = load_tensors(path, what="adapter weights", fix="Restore the file or re-train.")
    expected = mux.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"adapter weights {path} do not match the config: missing {missing}, unexpected {unexpected}."
        )
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise CheckpointError(
                f"adapter tensor {name} in {path} has shape {tuple(t.shape)}, the config implies "
                f"{tuple(expected[name].shape)}. The checkpoint is inconsistent; re-train it."
            )
    return tensors


def resolve_backbone(
    config: MuxConfig,
    directory: str | Path,
    view: BackboneView | None = None,
    *,
    backbone: str | Path | None = None,
    check_hash: bool = True,
    dtype: torch.dtype | None = None,
) -> BackboneView:
    """`view`, or the backbone `backbone` / the config names, checked against `config` and cast to `dtype`.

    The content hash is checked before the cast (it is the hash of the weights the adapter trained on).
    """
    if view is None:
        path = backbone or config.backbone_path
        if not path:
            raise CheckpointError(f"{directory} names no backbone; pass --model/backbone explicitly.")
        view = load_backbone(
            path, verbalizer_ids=config.verbalizer_ids, num_labels=len(config.label_names) or None
        )
    check_compatible(config, view, check_hash=check_hash)
    if dtype is not None:
        view.model.to(dtype)
    return view


def check_compatible(config: MuxConfig, view: BackboneView, *, check_hash: bool) -> None:
    """CheckpointError naming both values when `config` was made for another backbone."""
    fix = "Load the adapter with the backbone it was trained on, or re-train it on this one."
    pairs = [
        ("model_type", config.backbone_model_type, view.model_type),
        ("hidden size", config.hidden_size, view.hidden_size),
        ("layer count", config.num_layers, view.num_layers),
    ]
    for what, expected, got in pairs:
        if expected != got:
            raise CheckpointError(
                f"adapter was trained on a backbone with {what} {expected}, this backbone has {got}. {fix}"
            )
    if config.shared_prefix and not view.causal:
        raise ConfigError(
            f"shared_prefix needs a causal decoder (a position must not see later ones), this backbone is "
            f"{view.model_type!r}. Train without --shared-prefix for encoders and T5."
        )
    if config.label_names and len(config.label_names) != view.num_labels:
        raise CheckpointError(
            f"adapter has {len(config.label_names)} labels {config.label_names}, the backbone's head has "
            f"{view.num_labels}. {fix}"
        )
    if check_hash and config.backbone_hash:
        got = backbone_hash(view.model)
        if got != config.backbone_hash:
            raise CheckpointError(
                f"backbone content hash differs: adapter expects {config.backbone_hash[:16]}..., this backbone is "
                f"{got[:16]}... (different weights or config). {fix}"
            )


# ---- generic helpers -----------------------------------------------------------------------------
def save_tensors(
    path: str | Path, tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write `tensors` as safetensors to `path` (written aside, then renamed in)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _aside(path)
    try:
        _save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, tmp, metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tensors(path: str | Path, *, what: str = "tensors", fix: str = ADAPTER_FIX) -> dict[str, Tensor]:
    """The tensors of the safetensors file `path`; CheckpointError naming `what`, the file and `fix`
    when it is missing, truncated or corrupted."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} are missing. {fix}")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt headers
        raise CheckpointError(f"{what} {path} are truncated or corrupted ({exc}). {fix}") from exc


def write_json(path: str | Path, doc: Mapping[str, Any], *, sort_keys: bool = False) -> None:
    """Write `doc` as indented JSON to `path` (written aside, then renamed in); tuples, sets and
    paths are written as lists and strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _aside(path)
    try:
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=sort_keys, default=_jsonable) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: str | Path, *, what: str = "checkpoint file", fix: str = ADAPTER_FIX) -> dict[str, Any]:
    """The JSON object in `path`; CheckpointError naming the file and `fix` when it is missing,
    not valid JSON, or not an object."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is missing. {fix}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{what} {path} is not valid JSON ({exc}); it is truncated or corrupted. {fix}"
        ) from exc
    if not isinstance(doc, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object, got {type(doc).__name__}. {fix}")
    return doc


@contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a fresh sibling directory to fill; on success it replaces `final`, on an error it is removed.

    A reader never sees a half-written `final`: it is either the old directory or the complete new one.
    """
    final = Path(final)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)


# ---- internals -----------------------------------------------------------------------------------
def _aside(path: Path) -> Path:
    """Where `path` is written before it is renamed in (same directory, so the rename is atomic)."""
    return path.with_name(f".{path.name}.tmp")


def _save_file(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")
