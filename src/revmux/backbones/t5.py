"""T5View: the encoder of a T5ForConditionalGeneration sliced into layers, its decoder used as the head.

What it is: `embed` and `run_layers` slice the ENCODER stack (`model.encoder.block`); `head` applies the
encoder's final layer norm, runs the frozen decoder on the decoder start token (optionally followed by a
fixed prefix) with cross-attention to every encoder position, and reads the LM logits at the last decoder
position restricted to `verbalizer_ids`. Everything runs through transformers' own modules.

What it is not: a T5 implementation (no modeling code is copied), a generator (one decoder step, no cache),
or a slicer of the decoder (the decoder always runs whole, inside `head`).

Position bias: in T5 only block 0 owns a `relative_attention_bias`; T5Stack computes the bias there and
passes it to every later block. `run_layers` therefore always computes it from block 0, so a slice that
starts at k > 0 sees the same bias as the unsplit stack (and not the zeros a bias-less block would use).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers.masking_utils import create_bidirectional_mask

from revmux.backbones.base import BackboneView, LayerState
from revmux.errors import ConfigError


class T5View(BackboneView):
    """Layer-sliced T5 (AutoModelForSeq2SeqLM): encoder blocks are the layers; decoder + LM head, the head."""

    model_types: ClassVar[tuple[str, ...]] = ("t5",)
    reads_all_positions: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        verbalizer_ids: Sequence[int] | None = None,
        decoder_prefix_ids: Sequence[int] = (),
    ) -> None:
        """`decoder_prefix_ids`: tokens after the decoder start token; the answer is read at the last one."""
        super().__init__(model, verbalizer_ids=verbalizer_ids)
        vocab = int(self.config.vocab_size)
        if not self.verbalizer_ids:
            raise ConfigError(
                "T5's head is its decoder's LM head, so T5View needs verbalizer_ids: one vocabulary token id "
                "per class (e.g. the ids of the first tokens of 'negative' and 'positive'); got "
                f"{verbalizer_ids!r}."
            )
        bad = [i for i in [*self.verbalizer_ids, *decoder_prefix_ids] if not 0 <= int(i) < vocab]
        if bad:
            raise ConfigError(
                f"token ids {bad} are outside the vocabulary [0, {vocab}); use the model's tokenizer."
            )
        if self.config.decoder_start_token_id is None:
            raise ConfigError(
                "config.decoder_start_token_id is None; T5 checkpoints set it (usually to pad, 0)."
            )
        self.decoder_prefix_ids = [int(i) for i in decoder_prefix_ids]
        self.answer_position = len(self.decoder_prefix_ids)

    # ---- facts about the backbone -------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.model.encoder.block)

    def layer_modules(self) -> nn.ModuleList:
        return self.model.encoder.block

    @property
    def hidden_size(self) -> int:
        return int(self.config.d_model)

    # ---- the slices ---------------------------------------------------------------------------
    def embed(self, inputs: Mapping[str, Tensor]) -> LayerState:
        """Token embeddings after the encoder stack's dropout (identity in eval)."""
        input_ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(input_ids)
        encoder = self.model.encoder
        hidden = encoder.dropout(encoder.embed_tokens(input_ids))
        return LayerState(hidden=hidden, attention_mask=mask, position_ids=None)

    def run_layers(self, state: LayerState, start: int, stop: int) -> LayerState:
        """Encoder blocks [start, stop) with T5Stack's mask and block 0's relative position bias."""
        self._check_range(start, stop)
        if start == stop:
            return state
        encoder = self.model.encoder
        hidden = state.hidden
        mask = create_bidirectional_mask(
            config=encoder.config, inputs_embeds=hidden, attention_mask=state.attention_mask
        )
        seq_len = hidden.shape[1]
        bias = encoder.block[0].layer[0].SelfAttention.compute_bias(seq_len, seq_len, device=hidden.device)
        for block in encoder.block[start:stop]:
            hidden = block(hidden, attention_mask=mask, position_bias=bias)[0]
        return state.with_hidden(hidden)

    def decoder_input_ids(self, batch_size: int, device: torch.device) -> Tensor:
        """(B, 1 + len(prefix)): the decoder start token followed by `decoder_prefix_ids`."""
        ids = [int(self.config.decoder_start_token_id), *self.decoder_prefix_ids]
        return torch.tensor(ids, dtype=torch.long, device=device).expand(batch_size, -1)

    def head(self, read: Tensor, attention_mask: Tensor) -> Tensor:
        """Final encoder norm, one decoder pass over the start token (+ prefix), LM head, verbalizer."""
        encoder = self.model.encoder
        encoder_hidden = encoder.dropout(encoder.final_layer_norm(read))
        decoder_out = self.model.decoder(
            input_ids=self.decoder_input_ids(read.shape[0], read.device),
            encoder_hidden_states=encoder_hidden,
            encoder_attention_mask=attention_mask,
            use_cache=False,
        )
        sequence_output = decoder_out[0][:, self.answer_position]
        # T5ForConditionalGeneration rescales before the LM head for original T5 (scale_decoder_outputs in
        # transformers 5.x; older versions keyed it on tie_word_embeddings).
        if getattr(self.config, "scale_decoder_outputs", self.config.tie_word_embeddings):
            sequence_output = sequence_output * (self.config.d_model**-0.5)
        return self._verbalize(self.model.lm_head(sequence_output))

    def forward_unsplit(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """The Hugging Face model's own forward on the same decoder input, at the answer position."""
        input_ids = inputs["input_ids"]
        out = self.model(
            input_ids=input_ids,
            attention_mask=inputs.get("attention_mask"),
            decoder_input_ids=self.decoder_input_ids(input_ids.shape[0], input_ids.device),
            use_cache=False,
        )
        return self._verbalize(out.logits[:, self.answer_position])
