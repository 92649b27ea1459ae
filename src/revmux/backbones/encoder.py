"""Layer-sliced views of BERT-style encoder classifiers (BERT, RoBERTa/XLM-R, ELECTRA, DistilBERT, MPNet).

Each view wraps a loaded `*ForSequenceClassification` model and calls transformers' own modules: the
base model's embeddings, its layer modules, and the classifier's own head modules, building the attention
mask with the same `create_bidirectional_mask` call (and attention implementation) as the base model.
It is not a re-implementation: it owns no weights, copies no modeling code, and does not support encoder
models loaded without a sequence-classification head, decoder-configured encoders, LM heads
(`verbalizer_ids`), or inputs given as `inputs_embeds`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers.masking_utils import create_bidirectional_mask

from revmux.backbones.base import BackboneView, LayerState
from revmux.errors import ConfigError, UnsupportedModelError


def packed_mask(segments: Tensor, additive_dtype: torch.dtype | None = None) -> Tensor:
    """The attention mask, (B, 1, C, C), for rows of sequences packed side by side told apart by `segments`
    (B, C): a token sees its own sequence's tokens only; padding (id 0) sees padding, so no row is fully
    masked, and no real token sees padding. Boolean (True: attend) as sdpa takes it, or with `additive_dtype`
    the additive mask of eager attention (0 where attended, the dtype's minimum elsewhere)."""
    allowed = (segments.unsqueeze(2) == segments.unsqueeze(1)).unsqueeze(1)
    if additive_dtype is None:
        return allowed
    blocked = torch.zeros(allowed.shape, dtype=additive_dtype, device=allowed.device)
    return blocked.masked_fill(~allowed, torch.finfo(additive_dtype).min)


class EncoderView(BackboneView):
    """Shared slicing for bidirectional encoders: embed -> layers [a, b) -> head reading position 0 (CLS)."""

    def __init__(self, model: Any, verbalizer_ids: Sequence[int] | None = None) -> None:
        if verbalizer_ids is not None:
            raise ConfigError(
                f"{type(self).__name__} reads the model's own classification head; verbalizer_ids apply only "
                "to LM heads. Load the encoder with head='classifier' and no verbalizer_ids."
            )
        super().__init__(model, verbalizer_ids=None)
        self.base = model.base_model
        if self.base is model or not hasattr(model, "classifier"):
            raise UnsupportedModelError(
                f"{type(model).__name__} is not a sequence-classification model; {type(self).__name__} needs "
                "one loaded with AutoModelForSequenceClassification."
            )
        if getattr(self.base.config, "is_decoder", False):
            raise UnsupportedModelError(
                f"{type(model).__name__} is configured as a decoder (is_decoder=True, causal attention); "
                "revmux slices encoders with bidirectional attention only. Set is_decoder=False."
            )
        self.layers: nn.ModuleList = self._layer_list()

    # ---- family hooks -------------------------------------------------------------------------
    def _layer_list(self) -> nn.ModuleList:
        """The base model's list of layer modules."""
        return self.base.encoder.layer

    def _embeddings(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The base model's embeddings output (B, T, d), as its forward computes it."""
        token_type_ids = inputs.get("token_type_ids")  # None: the module's all-zeros buffer, as in HF
        return self.base.embeddings(input_ids=inputs["input_ids"], token_type_ids=token_type_ids)

    def _run(self, hidden: Tensor, mask: Tensor | None, start: int, stop: int) -> Tensor:
        """Layers [start, stop) on `hidden` with the prepared attention mask."""
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, mask)
        return hidden

    # ---- BackboneView -------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_modules(self) -> nn.ModuleList:
        return self.layers

    def embed(self, inputs: Mapping[str, Tensor]) -> LayerState:
        input_ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
        return LayerState(hidden=self._embeddings(inputs), attention_mask=mask.long(), position_ids=None)

    def run_layers(self, state: LayerState, start: int, stop: int) -> LayerState:
        self._check_range(start, stop)
        if start == stop:
            return state
        mask = create_bidirectional_mask(
            config=self.base.config, inputs_embeds=state.hidden, attention_mask=state.attention_mask
        )
        return state.with_hidden(self._run(state.hidden, mask, start, stop))

    @classmethod
    def layers_pack(cls) -> bool:
        """Whether a sequence's states through the family's layers do not depend on where it sits in its row:
        the layers see no positions (the embeddings add them). Families whose `_run` adds more say so."""
        return cls._run is EncoderView._run

    @property
    def packs_rows(self) -> bool:
        """Layers whose answers do not depend on a sequence's place in its row (`layers_pack`), attending
        through sdpa or eager attention, which take the block-diagonal mask of `run_packed` (boolean for sdpa,
        additive for eager). A copy whose layers run elsewhere (`layers_elsewhere`, set by
        `revmux.onnx_backend.ort_view`) packs rows only where that copy says its graphs take them
        (`packs_elsewhere`)."""
        if getattr(self, "layers_elsewhere", False):
            return bool(getattr(self, "packs_elsewhere", False))
        return self.layers_pack() and self.base.config._attn_implementation in ("sdpa", "eager")

    def run_packed(self, hidden: Tensor, segments: Tensor, start: int, stop: int) -> Tensor:
        if not self.packs_rows:
            return super().run_packed(hidden, segments, start, stop)
        self._check_range(start, stop)
        additive = None if self.base.config._attn_implementation == "sdpa" else hidden.dtype
        return self._run(hidden, packed_mask(segments, additive), start, stop)

    def head(self, read: Tensor, attention_mask: Tensor) -> Tensor:
        # RoBERTa / XLM-R / ELECTRA / MPNet classification heads take features[:, 0, :].
        return self.model.classifier(read.unsqueeze(1))

    def forward_unsplit(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.model(**inputs).logits


class BertView(EncoderView):
    """BERT: pooler (dense + tanh on CLS) -> dropout -> classifier."""

    model_types = ("bert",)

    def head(self, read: Tensor, attention_mask: Tensor) -> Tensor:
        pooler = self.base.pooler
        if pooler is None:  # HF's forward fails here too: outputs[1] has no pooled output
            raise UnsupportedModelError(
                "this BERT classifier has no pooler (add_pooling_layer=False), so its head cannot run; "
                "load it with BertForSequenceClassification, which always builds the pooler."
            )
        return self.model.classifier(self.model.dropout(pooler(read.unsqueeze(1))))


class RobertaView(EncoderView):
    """RoBERTa and XLM-R: positions derived from input_ids/padding_idx by the embeddings module."""

    model_types = ("roberta", "xlm-roberta")


class ElectraView(EncoderView):
    """ELECTRA: embeddings, then `embeddings_project` when embedding_size != hidden_size."""

    model_types = ("electra",)

    def _embeddings(self, inputs: Mapping[str, Tensor]) -> Tensor:
        hidden = super()._embeddings(inputs)
        if hasattr(self.base, "embeddings_project"):
            hidden = self.base.embeddings_project(hidden)
        return hidden


class DistilBertView(EncoderView):
    """DistilBERT: layers in `transformer.layer`; head pre_classifier -> ReLU -> dropout -> classifier."""

    model_types = ("distilbert",)

    def _layer_list(self) -> nn.ModuleList:
        return self.base.transformer.layer

    def _embeddings(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.base.embeddings(inputs["input_ids"])

    def head(self, read: Tensor, attention_mask: Tensor) -> Tensor:
        pooled = torch.relu(self.model.pre_classifier(read))
        return self.model.classifier(self.model.dropout(pooled))


class MPNetView(EncoderView):
    """MPNet: every layer also takes the relative position bias the encoder computes once from T."""

    model_types = ("mpnet",)

    @classmethod
    def layers_pack(cls) -> bool:
        # the bias is a function of the distance j - i alone (compute_position_bias), so a sequence gets the
        # same bias wherever it sits in a packed row; attention across sequences is masked
        return True

    def _embeddings(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.base.embeddings(input_ids=inputs["input_ids"])

    def _run(self, hidden: Tensor, mask: Tensor | None, start: int, stop: int) -> Tensor:
        # Same call as MPNetEncoder.forward: the bias depends only on (B, T), not on the layer.
        position_bias = self.base.encoder.compute_position_bias(hidden)
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, mask, position_bias)[0]
        return hidden
