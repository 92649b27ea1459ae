"""DecoderView: the layer-sliced view of decoder-only causal LMs.

Families: llama, qwen2, mistral, gemma, gemma2, gemma3 (text only, model_type "gemma3_text"). The view wraps
either an `AutoModelForSequenceClassification` model (the `score` head, read at each row's last real token) or
an `AutoModelForCausalLM` model (`lm_head` at the last real token, restricted to `verbalizer_ids`). Every step
calls transformers' own modules (`embed_tokens`, `layers[i]`, `rotary_emb`, `norm`, the head) and mask
builders (`create_causal_mask`, `create_sliding_window_causal_mask`) with the arguments each family's
`*Model.forward` uses, so embed -> [0, k) -> [k, L) -> head equals the unsplit forward.

It is not a model and not a copy of modeling code: it owns no weights, keeps no KV cache (no generation),
and supports only the families in `model_types`. The final norm is applied in `head`, never in `run_layers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from revmux.backbones.base import BackboneView, LayerState
from revmux.errors import ConfigError, UnsupportedModelError
from revmux.runs import last_real_index

# Families whose *Model.forward keys masks (and layers) by `config.layer_types`.
_LAYER_TYPED = frozenset({"qwen2", "gemma2", "gemma3_text"})
# Families whose rotary embedding takes a layer type (separate local / global RoPE).
_ROPE_PER_LAYER_TYPE = frozenset({"gemma3_text"})
# Families whose single mask is a sliding-window mask whenever `config.sliding_window` is set.
_SLIDING_IF_WINDOW = frozenset({"mistral"})

_MaskKwargs = dict[str, Any]


class DecoderView(BackboneView):
    """Layer-sliced view of a decoder-only LM with a sequence-classification or verbalized LM head."""

    model_types: ClassVar[tuple[str, ...]] = ("llama", "qwen2", "mistral", "gemma", "gemma2", "gemma3_text")
    causal: ClassVar[bool] = True

    def __init__(self, model: Any, verbalizer_ids: Sequence[int] | None = None) -> None:
        super().__init__(model, verbalizer_ids=verbalizer_ids)
        if self.model_type not in self.model_types:
            raise UnsupportedModelError(
                f"DecoderView slices {', '.join(self.model_types)}; got model_type {self.model_type!r}."
            )
        self.base = model.model  # the *Model: embed_tokens, layers, rotary_emb, norm
        self.base_config = self.base.config  # what *Model.forward passes to the mask builders
        self.is_classifier = hasattr(model, "score")
        if not self.is_classifier and not hasattr(model, "lm_head"):
            raise UnsupportedModelError(
                f"{type(model).__name__} has neither a `score` nor an `lm_head` head; load the model with "
                "AutoModelForSequenceClassification or AutoModelForCausalLM."
            )
        if self.is_classifier and self.verbalizer_ids is not None:
            raise ConfigError(
                "verbalizer_ids apply to causal LM heads, but this model has a classification "
                "head (`score`); drop verbalizer_ids or load the model with AutoModelForCausalLM."
            )
        if not self.is_classifier and not self.verbalizer_ids:
            raise ConfigError(
                "a causal LM head needs verbalizer_ids (one token id per class); pass verbalizer_ids, "
                f"or load the model with AutoModelForSequenceClassification; got {verbalizer_ids!r}."
            )
        if not self.is_classifier:
            vocab = int(model.lm_head.out_features)
            bad = [i for i in self.verbalizer_ids if not 0 <= int(i) < vocab]
            if bad:
                raise ConfigError(f"verbalizer_ids {bad} are outside the vocabulary [0, {vocab}).")

    # ---- facts --------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return int(self.base_config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.base_config.hidden_size)

    # ---- the slices ---------------------------------------------------------------------------
    def layer_modules(self) -> nn.ModuleList:
        return self.base.layers

    def embed(self, inputs: Mapping[str, Tensor]) -> LayerState:
        """Token embeddings (gemma's sqrt(d) scale lives in its embedding module) and default positions."""
        input_ids = inputs["input_ids"]
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.base.embed_tokens(input_ids)
        return LayerState(hidden, attention_mask, _default_positions(hidden))

    def composite_state(self, hidden: Tensor, attention_mask: Tensor) -> LayerState:
        return LayerState(hidden, attention_mask, _default_positions(hidden))

    def run_layers(self, state: LayerState, start: int, stop: int) -> LayerState:
        """Layers [start, stop) with the masks and rotary embeddings their *Model.forward would build."""
        self._check_range(start, stop)
        if start == stop:
            return state
        hidden = state.hidden
        position_ids = state.position_ids if state.position_ids is not None else _default_positions(hidden)
        kinds = [self._layer_kind(i) for i in range(start, stop)]
        masks = self._masks(hidden, state.attention_mask, position_ids, set(kinds))
        rope = self._position_embeddings(hidden, position_ids, set(kinds))
        for i, kind in zip(range(start, stop), kinds, strict=True):
            hidden = self.base.layers[i](
                hidden,
                attention_mask=masks[kind],
                position_embeddings=rope[kind],
                position_ids=position_ids,
                cache=None,
            )
        return state.with_hidden(hidden)

    def read_index(self, attention_mask: Tensor) -> Tensor:
        """(B,) index of each row's last real token, for right and left padding alike."""
        return last_real_index(attention_mask)

    def head(self, read: Tensor, attention_mask: Tensor) -> Tensor:
        """Final norm, then `score`, or `lm_head` (+ gemma2/3 final softcap) restricted to the verbalizer."""
        hidden = self.base.norm(read)
        if self.is_classifier:
            return self.model.score(hidden)
        logits = self.model.lm_head(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is not None:  # as Gemma2ForCausalLM / Gemma3ForCausalLM.forward do (no module for it)
            logits = torch.tanh(logits / cap) * cap
        return self._verbalize(logits)

    def forward_unsplit(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The Hugging Face forward, unsliced: the reference the split must equal, and the plain baseline.

        Seq-cls: the *ForSequenceClassification forward (it picks the last non-pad token itself). LM head:
        the *Model forward (final norm included), then `lm_head` (+ softcap) only at each request's last
        real token, as *ForCausalLM computes it, without the full-vocabulary logits of every position.
        """
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(inputs["input_ids"])
        if self.is_classifier:
            return self.model(
                input_ids=inputs["input_ids"], attention_mask=attention_mask, use_cache=False
            ).logits
        hidden = self.base(
            input_ids=inputs["input_ids"], attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        idx = self.read_index(attention_mask).to(hidden.device)
        logits = self.model.lm_head(hidden[torch.arange(hidden.shape[0], device=hidden.device), idx])
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is not None:  # as Gemma2ForCausalLM / Gemma3ForCausalLM.forward do
            logits = torch.tanh(logits / cap) * cap
        return self._verbalize(logits)

    # ---- what *Model.forward builds before its layer loop --------------------------------------
    def _layer_kind(self, i: int) -> str:
        """Key of layer i in the mask / rotary mappings: its config.layer_types entry, or "all"."""
        return str(self.base_config.layer_types[i]) if self.model_type in _LAYER_TYPED else "all"

    def _masks(self, hidden: Tensor, attention_mask: Tensor, position_ids: Tensor, kinds: set[str]) -> dict:
        """The causal mask(s) for the given layer kinds, built exactly as the family's forward builds them."""
        cfg = self.base_config
        kwargs: _MaskKwargs = {
            "config": cfg,
            "inputs_embeds": hidden,
            "attention_mask": attention_mask,
            "cache": None,
            "position_ids": position_ids,
        }
        if self.model_type not in _LAYER_TYPED:
            builder: Callable[..., Any] = create_causal_mask
            if self.model_type in _SLIDING_IF_WINDOW and cfg.sliding_window is not None:
                builder = create_sliding_window_causal_mask
            return {"all": builder(**kwargs)}
        sliding_kwargs = dict(kwargs)
        if getattr(cfg, "use_bidirectional_attention", False):  # gemma3_text (embedding-style use)
            from transformers.models.gemma3.modeling_gemma3 import _bidirectional_window_overlay

            kwargs["or_mask_function"] = lambda *args: torch.tensor(True, dtype=torch.bool)
            sliding_kwargs["or_mask_function"] = _bidirectional_window_overlay(cfg.sliding_window)
        masks: dict[str, Any] = {}
        if "full_attention" in kinds:
            masks["full_attention"] = create_causal_mask(**kwargs)
        if "sliding_attention" in kinds:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**sliding_kwargs)
        unknown = kinds - masks.keys()
        if unknown:
            raise UnsupportedModelError(
                f"layer types {sorted(unknown)} of {self.model_type!r} are unsupported."
            )
        return masks

    def _position_embeddings(self, hidden: Tensor, position_ids: Tensor, kinds: set[str]) -> dict:
        """(cos, sin) per layer kind from the model's rotary module; gemma3 has one RoPE per layer type."""
        rotary = self.base.rotary_emb
        if self.model_type in _ROPE_PER_LAYER_TYPE:
            return {kind: rotary(hidden, position_ids, kind) for kind in kinds}
        shared = rotary(hidden, position_ids=position_ids)
        return dict.fromkeys(kinds, shared)


def _default_positions(hidden: Tensor) -> Tensor:
    """What *Model.forward uses when position_ids is not passed (no cache): arange(T), shape (1, T)."""
    return torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
