"""The prefill/teacher cache: layer-k states and the unmultiplexed teacher's outputs, computed once.

What it is: `build_cache` tokenizes a TaskData, runs embeddings + layers [0, k) and the frozen teacher
(layers [k, L) + head, no multiplexing) on every row once, and stores the result under
`<cache_root>/<key>/`: layer-k states as an fp16 memmap (M, T, d), attention masks, teacher reps (M, d)
fp16, teacher logits (M, C) fp32 and labels. The key hashes the backbone's content, k, the data, the
max length and the tokenizer, so a second call loads the files instead of recomputing. A cache is
written to a temporary directory and renamed into place only when complete. `PrefillCache.batch(rows)`
serves training batches from it; `LivePrefill.batch(rows)` serves the same batches by running the
backbone each time (no storage), to check the cache and to time it.
What it is not: an inference cache, or anything that knows about adapters or losses.

Padding positions are stored as the backbone computes them (the multiplexer mixes a request's padding
with its partners' real tokens, so training must see what inference sees): the prefill runs at the data's
full padded length T, and only the teacher runs on length-sorted chunks trimmed to their longest row.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from revmux.backbones import BackboneView, LayerState, backbone_hash
from revmux.data import TaskData, tokenize
from revmux.encoding import tokenizer_fingerprint
from revmux.errors import ConfigError
from revmux.paths import cache_dir
from revmux.progress import StepProgress
from revmux.runs import real_columns
from revmux.train.losses import pooled

CACHE_FORMAT = 1
META_NAME = "meta.json"
_FILES = {"states": "states.f16", "masks": "masks.npy", "reps": "teacher_reps.npy"}
_FILES |= {"logits": "teacher_logits.npy", "labels": "labels.npy"}

Batch = tuple[LayerState, Tensor, Tensor, Tensor]  # (layer-k state, teacher reps, teacher logits, labels)


def default_cache_root() -> Path:
    """Where prefill caches live unless told otherwise: `cache_dir() / "prefill"`."""
    return cache_dir() / "prefill"


def cache_key(
    view: BackboneView, k: int, data: TaskData, max_length: int, *, backbone_sha: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(key, parts): the sha256 naming a cache, and what it was computed from."""
    tok = _tokenizer(view)
    parts = {
        "backbone": backbone_sha or backbone_hash(view.model),
        "k": k,
        "data": data.sha256(),
        "max_length": max_length,
        "padding_side": tok.padding_side,
        "tokenizer": tokenizer_fingerprint(tok),
        "format": CACHE_FORMAT,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts


class PrefillCache:
    """A built cache, memory-mapped: `batch(rows)` gives fp32 states trimmed to the rows' longest length."""

    def __init__(self, directory: Path, view: BackboneView, meta: dict[str, Any], hit: bool) -> None:
        self.directory = directory
        self.view = view
        self.meta = meta
        self.hit = hit  # True when loaded from disk, False when built by this call
        M, T, d = meta["rows"], meta["T"], meta["d"]
        self.states = np.memmap(directory / _FILES["states"], dtype=np.float16, mode="r", shape=(M, T, d))
        self.masks = np.load(directory / _FILES["masks"], mmap_mode="r")
        self.teacher_reps = np.load(directory / _FILES["reps"], mmap_mode="r")
        self.teacher_logits = np.load(directory / _FILES["logits"], mmap_mode="r")
        self.labels = np.load(directory / _FILES["labels"])
        self.left_padded = meta["padding_side"] == "left"

    @classmethod
    def load(cls, directory: str | Path, view: BackboneView, *, hit: bool = True) -> PrefillCache:
        """Open a complete cache; ValueError when `directory` is not one (missing meta or files, wrong sizes)."""
        directory = Path(directory)
        meta_path = directory / META_NAME
        if not meta_path.is_file():
            raise ValueError(f"{directory} is not a complete prefill cache (no {META_NAME}).")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT or not meta.get("complete"):
            raise ValueError(f"{directory} has cache format {meta.get('format')}, expected {CACHE_FORMAT}.")
        expected = meta["rows"] * meta["T"] * meta["d"] * 2
        states = directory / _FILES["states"]
        if not states.is_file() or states.stat().st_size != expected:
            raise ValueError(f"{states} is missing or has the wrong size.")
        if not all((directory / name).is_file() for name in _FILES.values()):
            raise ValueError(f"{directory} is missing some of {sorted(_FILES.values())}.")
        return cls(directory, view, meta, hit)

    def __len__(self) -> int:
        return int(self.meta["rows"])

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    @property
    def build_seconds(self) -> float:
        """Seconds the build took when it was written (also when this call only loaded it)."""
        return float(self.meta["build_seconds"])

    def batch(self, rows: Tensor) -> Batch:
        """(LayerState, teacher reps, teacher logits, labels) for `rows` on the view's device: states in the
        backbone's dtype (fp32 unless it runs in bf16/fp16), the rest in fp32.

        T is trimmed to the longest real length among `rows`: the first T' columns for right padding,
        the last T' for left padding; the state is rebuilt with `view.composite_state` (default positions).
        """
        idx = rows.detach().cpu().numpy().astype(np.int64)
        masks = torch.from_numpy(np.ascontiguousarray(self.masks[idx]))
        cols = real_columns(masks, leading=True)
        device = self.view.device
        hidden = torch.from_numpy(np.ascontiguousarray(self.states[idx, cols])).to(device, self.view.dtype)
        mask = masks[:, cols].to(device, torch.long)
        reps = torch.from_numpy(np.asarray(self.teacher_reps[idx])).to(device, torch.float32)
        logits = torch.from_numpy(np.asarray(self.teacher_logits[idx])).to(device, torch.float32)
        labels = torch.from_numpy(self.labels[idx]).to(device)
        return self.view.composite_state(hidden, mask), reps, logits, labels


class LivePrefill:
    """The same batches as `PrefillCache.batch`, computed on the fly: tokenize, prefill and teacher per call."""

    def __init__(self, view: BackboneView, k: int, data: TaskData, max_length: int) -> None:
        _tokenizer(view)
        self.view, self.k, self.data, self.max_length = view, k, data, max_length
        self.hit = False
        self.build_seconds = 0.0

    def __len__(self) -> int:
        return len(self.data)

    @property
    def labels(self) -> np.ndarray:
        """(M,) gold labels of every row, as `PrefillCache.labels`."""
        return np.asarray(self.data.labels, dtype=np.int64)

    @torch.no_grad()
    def batch(self, rows: Tensor) -> Batch:
        """Tokenized `rows` padded to their longest, prefilled, and the teacher run on them (no grad)."""
        view = self.view
        sub = self.data.subset(rows.tolist())
        inputs = {k: v.to(view.device) for k, v in tokenize(view.tokenizer, sub, self.max_length).items()}
        state = view.run_layers(view.embed(inputs), 0, self.k)
        reps, logits = teacher_outputs(view, state, self.k)
        labels = torch.tensor(sub.labels, dtype=torch.long, device=view.device)
        return state, reps.float(), logits.float(), labels


def build_cache(
    view: BackboneView,
    k: int,
    data: TaskData,
    max_length: int,
    *,
    cache_root: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    backbone_sha: str | None = None,
) -> PrefillCache:
    """Load the cache of (`view`, k, `data`, max_length) from `cache_root`, or build and store it first.

    `backbone_sha`: `backbone_hash(view.model)` when the caller already has it (hashing is not free).
    """
    if not 0 <= k < view.num_layers:
        raise ConfigError(f"--k must be in [0, {view.num_layers - 1}] for this backbone, got {k}.")
    if batch_size < 1:
        raise ConfigError(f"cache batch size must be >= 1, got {batch_size}.")
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    key, parts = cache_key(view, k, data, max_length, backbone_sha=backbone_sha)
    final = root / key
    if final.is_dir():
        try:
            return PrefillCache.load(final, view, hit=True)
        except (ValueError, KeyError, OSError, json.JSONDecodeError):
            shutil.rmtree(final, ignore_errors=True)  # not a complete cache: rebuild it
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=root))
    try:
        _write(view, k, data, max_length, tmp, {"key": key, **parts}, batch_size, progress)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / META_NAME).is_file():  # not a concurrent build that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrefillCache.load(final, view, hit=False)


def real_token_states(
    source: PrefillCache | LivePrefill,
    max_tokens: int = 16384,
    chunk: int = 256,
    exclude: Callable[[LayerState], Tensor] | None = None,
) -> Tensor:
    """(n, d) layer-k states of real tokens from the first rows of `source`, at most `max_tokens` (for PCA).

    `exclude` maps a chunk's state to a (B, T) bool mask of columns to leave out as well.
    """
    out: list[Tensor] = []
    n = 0
    for start in range(0, len(source), chunk):
        state = source.batch(torch.arange(start, min(start + chunk, len(source))))[0]
        keep = state.attention_mask.bool()
        if exclude is not None:
            keep = keep & ~exclude(state)
        real = state.hidden[keep]
        out.append(real[: max_tokens - n])
        n += out[-1].shape[0]
        if n >= max_tokens:
            break
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------- internals


def _tokenizer(view: BackboneView) -> Any:
    if view.tokenizer is None:
        raise ConfigError(
            "this backbone view has no tokenizer; load it with revmux.backbones.load_backbone (which attaches "
            "one) or set view.tokenizer before building a cache."
        )
    return view.tokenizer


def teacher_outputs(view: BackboneView, state: LayerState, k: int) -> tuple[Tensor, Tensor]:
    """(rep (B, d), logits) of the unmultiplexed model run from layer-k `state` through layers [k, L) and
    the head (`view.complete`); all-position reads are mean-pooled over real tokens."""
    rep, logits = view.complete(state, k)
    return pooled(rep, state.attention_mask), logits


def _write(
    view: BackboneView,
    k: int,
    data: TaskData,
    max_length: int,
    directory: Path,
    meta: dict[str, Any],
    batch_size: int,
    progress: bool,
) -> None:
    """Compute everything into `directory`; meta.json (with complete=True) is written last."""
    start = time.perf_counter()
    enc = tokenize(_tokenizer(view), data, max_length)
    mask = enc["attention_mask"]
    M, T = mask.shape
    d, C = view.hidden_size, view.num_labels
    order = torch.argsort(mask.sum(1), descending=True, stable=True)
    states = np.memmap(directory / _FILES["states"], dtype=np.float16, mode="w+", shape=(M, T, d))
    reps = np.zeros((M, d), dtype=np.float16)
    logits = np.zeros((M, C), dtype=np.float32)
    bar = StepProgress("prefill cache", M, enabled=progress, unit="rows", transient=True)
    with torch.inference_mode(), bar:
        for rows in order.split(batch_size):
            inputs = {name: v[rows].to(view.device) for name, v in enc.items()}
            state = view.run_layers(view.embed(inputs), 0, k)  # full T: padding states as inference sees them
            idx = rows.numpy()
            h16 = state.hidden.to("cpu", torch.float16)
            if not torch.isfinite(h16).all():
                raise ConfigError(
                    f"layer-{k} states are not finite in fp16 (|value| > 65504, or NaN), so they cannot be cached; "
                    "train with --no-cache, or choose another --k."
                )
            states[idx] = h16.numpy()
            rep, lg = teacher_outputs(view, view.trim(state), k)
            reps[idx] = rep.to("cpu", torch.float16).numpy()
            logits[idx] = lg.to("cpu", torch.float32).numpy()
            bar.advance(len(rows))
    states.flush()
    del states
    np.save(directory / _FILES["masks"], mask.numpy().astype(np.uint8))
    np.save(directory / _FILES["reps"], reps)
    np.save(directory / _FILES["logits"], logits)
    np.save(directory / _FILES["labels"], np.asarray(data.labels, dtype=np.int64))
    meta = {**meta, "rows": M, "T": T, "d": d, "num_labels": C, "source": data.source}
    meta |= {"build_seconds": time.perf_counter() - start, "complete": True}
    (directory / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
