"""Training-run checkpoints: `checkpoints/epoch-{i}/` per epoch, resume checks, the published best adapter.

What it is: each epoch directory holds the adapter (revmux.checkpoint's format), the optimizer's tensors
(optimizer.safetensors, keys `state.{param}.{name}`) and the run's scalars (trainer_state.json: epoch,
step, best epoch, history, config, fingerprint, optimizer param groups, scheduler). Directories are
filled aside and renamed in, so `latest_checkpoint` only ever sees complete ones; no pickle anywhere.
What it is not: the training loop (`revmux.train.trainer`) or the adapter file format itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from revmux.checkpoint import (
    atomic_directory,
    copy_adapter,
    load_adapter_weights,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from revmux.errors import CheckpointError, ConfigError
from revmux.model import MuxModel
from revmux.train.config import TrainConfig

STATE_NAME = "trainer_state.json"
OPTIM_NAME = "optimizer.safetensors"
SELECTION_ONLY = {
    "select_on",
    "select_within_se",
}  # fields that pick the epoch kept without changing training: free on resume
RESUME_FIX = "Delete that checkpoint directory to resume from the epoch before, or train into a new --out."
_STATE_KEYS = (
    "epoch", "step", "best_epoch", "best_metric", "history", "config", "fingerprint", "optimizer_param_groups",
    "scheduler",
)  # fmt: skip


@dataclass
class RunState:
    """Where a training run stands: completed epochs and steps, the best epoch so far, one dict per epoch."""

    epoch: int = 0
    step: int = 0
    best_epoch: int = 0
    best_metric: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete `checkpoints/epoch-{i}` with the largest i (one whose trainer_state.json exists)."""
    found = []
    for path in (Path(out_dir) / "checkpoints").glob("epoch-*"):
        suffix = path.name.removeprefix("epoch-")
        if suffix.isdigit() and (path / STATE_NAME).is_file():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def save_checkpoint(
    out_dir: Path,
    model: MuxModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: RunState,
    config: TrainConfig,
    fingerprint: dict[str, str],
) -> Path:
    """checkpoints/epoch-{i}/: adapter, optimizer tensors (safetensors), scalars (JSON); renamed in when complete."""
    final = out_dir / "checkpoints" / f"epoch-{state.epoch}"
    opt = optimizer.state_dict()
    with atomic_directory(final) as tmp:
        model.save_pretrained(tmp)
        tensors = {
            f"state.{i}.{name}": t for i, per_param in opt["state"].items() for name, t in per_param.items()
        }
        save_tensors(tmp / OPTIM_NAME, tensors)
        doc = {
            "epoch": state.epoch,
            "step": state.step,
            "best_epoch": state.best_epoch,
            "best_metric": state.best_metric,
            "history": state.history,
            "config": config.to_dict(),
            "fingerprint": fingerprint,
            "optimizer_param_groups": opt["param_groups"],
            "scheduler": None if scheduler is None else scheduler.state_dict(),
        }
        write_json(tmp / STATE_NAME, doc)
    return final


def resumable(checkpoint: Path, config: TrainConfig, fingerprint: dict[str, str]) -> dict[str, Any]:
    """The checkpoint's trainer state; ConfigError when resuming it would not continue the same run,
    CheckpointError when the state file is truncated or incomplete."""
    doc = read_json(checkpoint / STATE_NAME, what="trainer state", fix=RESUME_FIX)
    absent = [key for key in _STATE_KEYS if key not in doc]
    if absent:
        raise CheckpointError(f"trainer state {checkpoint / STATE_NAME} lacks {absent}. {RESUME_FIX}")
    saved, now = saved_config(doc["config"]), config.to_dict()
    differ = sorted(k for k in (set(saved) | set(now)) - SELECTION_ONLY if saved.get(k) != now.get(k))
    if differ:
        detail = ", ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in differ)
        raise ConfigError(
            f"cannot resume from {checkpoint}: the config differs in {differ} ({detail}). Resume with the "
            "saved values, or train into a new --out without --resume."
        )
    for key, what in (("backbone", "teacher backbone's weights"), ("train_data", "training data")):
        if doc["fingerprint"].get(key) != fingerprint[key]:
            raise ConfigError(
                f"cannot resume from {checkpoint}: the {what} differ from the interrupted run's. Resume with "
                "the same --teacher and data, or train into a new --out without --resume."
            )
    return doc


def saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config as this revmux spells it (older checkpoints had flat adapter keys)."""
    try:
        return TrainConfig.from_saved(saved, source="checkpoint").to_dict()
    except ConfigError:
        return saved


def restore(
    checkpoint: Path, doc: dict[str, Any], model: MuxModel, optimizer: torch.optim.Optimizer, scheduler: Any
) -> RunState:
    """Load adapter, optimizer and scheduler state from `checkpoint` (checked by `resumable`)."""
    model.mux.load_state_dict(load_adapter_weights(checkpoint, model.mux))
    state = _optimizer_state(checkpoint / OPTIM_NAME, optimizer)
    groups = [
        {**g, **({"betas": tuple(g["betas"])} if "betas" in g else {})} for g in doc["optimizer_param_groups"]
    ]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        if scheduler is not None:
            scheduler.load_state_dict(doc["scheduler"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"the optimizer or scheduler state in {checkpoint} does not fit this run ({exc}). {RESUME_FIX}"
        ) from exc
    return RunState(doc["epoch"], doc["step"], doc["best_epoch"], doc["best_metric"], doc["history"])


def publish_best(out_dir: Path, best_epoch: int) -> None:
    """Copy the best epoch's adapter to `out_dir` (each file written aside, then renamed in)."""
    copy_adapter(out_dir / "checkpoints" / f"epoch-{best_epoch}", out_dir)


def _optimizer_state(path: Path, optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Tensor]]:
    """optimizer.safetensors as the optimizer's per-parameter state, checked against its parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    per_param: dict[int, dict[str, Tensor]] = {}
    for name, t in load_tensors(path, what="optimizer state", fix=RESUME_FIX).items():
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit() or int(parts[1]) >= len(params):
            raise CheckpointError(
                f"optimizer state {path} holds {name!r}, expected state.<i>.<name> with i < {len(params)} "
                f"(one per adapter parameter). {RESUME_FIX}"
            )
        i = int(parts[1])
        if t.dim() and t.shape != params[i].shape:
            raise CheckpointError(
                f"optimizer tensor {name} in {path} has shape {tuple(t.shape)}, parameter {i} has "
                f"{tuple(params[i].shape)}. {RESUME_FIX}"
            )
        per_param.setdefault(i, {})[parts[2]] = t
    return per_param
