"""Tiny random backbones for structure tests (no hub: built from configs)."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, BertConfig

from revmux.backbones import BackboneView, view_for


def tiny_bert(hidden: int = 32, layers: int = 3, num_labels: int = 2, seed: int = 0) -> BackboneView:
    """A 3-layer BERT classifier of width 32 with random weights, in eval mode."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=120,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=0,
    )
    return view_for(AutoModelForSequenceClassification.from_config(config).eval())


def tiny_batch(lengths: list[int], vocab: int = 120, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch with the given real lengths (pad id 0)."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, vocab, (n,), generator=g)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
