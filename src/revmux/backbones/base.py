"""BackboneView: a layer-sliced view over a frozen Hugging Face model.

A view runs the embeddings, any layer range [a, b), and the head of a loaded model by calling
transformers' own modules, so that embed -> [0, k) -> [k, L) -> head equals the unsplit model.
It is not a model of its own: it owns no weights and never copies modeling code.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from revmux.errors import ConfigError, UnsupportedModelError
from revmux.runs import real_columns

_HASH_IGNORED_CONFIG_KEYS = {
    "transformers_version",
    "_name_or_path",
    "_commit_hash",
    "_attn_implementation",
    "_attn_implementation_internal",
    "attn_implementation",
    "torch_dtype",
    "dtype",
    "_experts_implementation",
}


@dataclass
class LayerState:
    """Hidden states between two layers, with what the next layers need to continue exactly.

    hidden: (B, T, d); attention_mask: (B, T), 1 for real tokens, 0 for padding;
    position_ids: (B, T) or (1, T) for families whose layers take positions, else None.
    """

    hidden: Tensor
    attention_mask: Tensor
    position_ids: Tensor | None = None

    def with_hidden(self, hidden: Tensor) -> LayerState:
        return replace(self, hidden=hidden)


class BackboneView(ABC):
    """Layer-sliced access to one family of Hugging Face models (selected by `config.model_type`).

    Subclasses implement `embed`, `run_layers`, `head`, and declare the `model_types` they cover.
    The head reads either one position per request (`read_index`) or, when
    `reads_all_positions` is True (T5's decoder cross-attends to every encoder position), all of them.
    `causal` views (decoder-only LMs) compute a position from that position and earlier ones only.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    reads_all_positions: ClassVar[bool] = False
    causal: ClassVar[bool] = False

    def __init__(self, model: Any, verbalizer_ids: Sequence[int] | None = None) -> None:
        self.model = model.eval()
        self.config = model.config
        self.verbalizer_ids = list(verbalizer_ids) if verbalizer_ids is not None else None
        self.tokenizer: Any = None
        for p in self.model.parameters():
            p.requires_grad_(False)

    # ---- facts about the backbone -------------------------------------------------------------
    @property
    def model_type(self) -> str:
        return str(self.config.model_type)

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """L: the number of layers that can be sliced."""

    @property
    def hidden_size(self) -> int:
        """d: the width of the hidden states between layers."""
        return int(self.config.hidden_size)

    @property
    def label_names(self) -> list[str]:
        """Class names in logit order (id2label, or the verbalizer tokens when id2label is the default)."""
        n = self.num_labels
        id2label = getattr(self.config, "id2label", None) or {}
        names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]
        if self.verbalizer_ids is not None and self.tokenizer is not None and names == _default_names(n):
            words = [self.tokenizer.decode([i]).strip() for i in self.verbalizer_ids]
            names = [w or name for w, name in zip(words, names, strict=True)]
        return names

    @property
    def num_labels(self) -> int:
        if self.verbalizer_ids is not None:
            return len(self.verbalizer_ids)
        return int(self.config.num_labels)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ---- the slices ---------------------------------------------------------------------------
    @abstractmethod
    def embed(self, inputs: Mapping[str, Tensor]) -> LayerState:
        """Embeddings of tokenized `inputs` (input_ids, attention_mask, ...): the state before layer 0."""

    @abstractmethod
    def run_layers(self, state: LayerState, start: int, stop: int) -> LayerState:
        """Run layers [start, stop) on `state`; the result continues exactly where the unsplit model would."""

    @abstractmethod
    def layer_modules(self) -> nn.ModuleList:
        """The L sliceable layer modules, in order (what `run_layers` calls; e.g. for torch.compile)."""

    @property
    def packs_rows(self) -> bool:
        """Whether `run_packed` can run layers on several sequences packed side by side in one row."""
        return False

    def run_packed(self, hidden: Tensor, segments: Tensor, start: int, stop: int) -> Tensor:
        """Layers [start, stop) on (B, C, d) rows that each hold several sequences side by side, told apart by
        `segments` (B, C) (one id per sequence, 0 for padding): each token attends within its own sequence
        only, so every sequence gets what `run_layers` gives it alone. Only where `packs_rows`."""
        raise UnsupportedModelError(f"{type(self).__name__} cannot run packed rows (packs_rows is False).")

    def composite_state(self, hidden: Tensor, attention_mask: Tensor) -> LayerState:
        """State for a composite sequence (mixed requests) with the given mask, positions as the model's default."""
        return LayerState(hidden=hidden, attention_mask=attention_mask, position_ids=None)

    def trim(self, state: LayerState) -> LayerState:
        """`state` cut to the columns holding its rows' real tokens (leading padding too, for left padding),
        rebuilt with `composite_state`: how layer-k states of a few rows are fed to layers [k, L)."""
        cols = real_columns(state.attention_mask, leading=True)
        return self.composite_state(state.hidden[:, cols], state.attention_mask[:, cols])

    def read_index(self, attention_mask: Tensor) -> Tensor:
        """(B,) position the head reads for each request (CLS for encoders; overridden by decoders)."""
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)

    def gather(self, state: LayerState) -> Tensor:
        """What the head reads from a final state: (B, d) at `read_index`, or (B, T, d) if it reads all."""
        if self.reads_all_positions:
            return state.hidden
        idx = self.read_index(state.attention_mask)
        return state.hidden[torch.arange(state.hidden.shape[0], device=idx.device), idx]

    @abstractmethod
    def head(self, read: Tensor, attention_mask: Tensor) -> Tensor:
        """Frozen head on what `gather` returned: logits (B, num_labels)."""

    def complete(self, state: LayerState, start: int) -> tuple[Tensor, Tensor]:
        """Layers [start, L) and the head on `state`, unmultiplexed: (what the head read, logits).

        The teacher pass of training and evaluation, and the N = 1 leftovers of a multiplexed batch.
        """
        out = self.run_layers(state, start, self.num_layers)
        read = self.gather(out)
        return read, self.head(read, out.attention_mask)

    @abstractmethod
    def forward_unsplit(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The Hugging Face model's own forward: logits (B, num_labels). The reference for exactness."""

    def forward_split(self, inputs: Mapping[str, Tensor], k: int) -> Tensor:
        """embed -> [0, k) -> [k, L) -> head: must equal `forward_unsplit` for every k in [0, L]."""
        if not 0 <= k <= self.num_layers:
            raise ConfigError(f"split point k must be in [0, {self.num_layers}], got {k}.")
        return self.complete(self.run_layers(self.embed(inputs), 0, k), k)[1]

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.num_layers:
            raise ConfigError(f"layer range [{start}, {stop}) is outside [0, {self.num_layers}].")

    def _verbalize(self, lm_logits: Tensor) -> Tensor:
        """Restrict LM logits (B, V) to the verbalizer tokens (B, C)."""
        if self.verbalizer_ids is None:
            raise ConfigError("this head needs verbalizer token ids (one per class); pass verbalizer_ids.")
        return lm_logits[:, self.verbalizer_ids]


def _default_names(n: int) -> list[str]:
    return [f"LABEL_{i}" for i in range(n)]


def backbone_hash(model: Any) -> str:
    """Content hash (sha256 hex) of a model's config and weights, stable across processes and versions."""
    import json

    h = hashlib.sha256()
    cfg = {k: v for k, v in model.config.to_dict().items() if k not in _HASH_IGNORED_CONFIG_KEYS}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
