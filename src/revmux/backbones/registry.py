"""Maps `config.model_type` to the BackboneView that slices it, and loads backbones from disk or the hub."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from revmux.backbones.base import BackboneView
from revmux.backbones.hf_load import from_pretrained_quietly
from revmux.backbones.zoo import resolve_model
from revmux.errors import RevmuxError, UnsupportedModelError

# model_type -> "module:Class"; a new family is one file plus one line here.
VIEWS: dict[str, str] = {
    "bert": "revmux.backbones.encoder:BertView",
    "roberta": "revmux.backbones.encoder:RobertaView",
    "xlm-roberta": "revmux.backbones.encoder:RobertaView",
    "electra": "revmux.backbones.encoder:ElectraView",
    "distilbert": "revmux.backbones.encoder:DistilBertView",
    "mpnet": "revmux.backbones.encoder:MPNetView",
    "llama": "revmux.backbones.decoder:DecoderView",
    "qwen2": "revmux.backbones.decoder:DecoderView",
    "mistral": "revmux.backbones.decoder:DecoderView",
    "gemma": "revmux.backbones.decoder:DecoderView",
    "gemma2": "revmux.backbones.decoder:DecoderView",
    "gemma3_text": "revmux.backbones.decoder:DecoderView",
    "t5": "revmux.backbones.t5:T5View",
}

SEQ2SEQ_TYPES = ("t5",)


def supported_model_types() -> list[str]:
    return sorted(VIEWS)


def view_class(model_type: str) -> type[BackboneView]:
    """The BackboneView class for `model_type`, or UnsupportedModelError listing the supported families."""
    target = VIEWS.get(model_type)
    if target is None:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; revmux slices {', '.join(supported_model_types())}. "
            "Use a model of one of these families, or add a BackboneView for yours."
        )
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def view_for(model: Any, verbalizer_ids: Sequence[int] | None = None) -> BackboneView:
    """Wrap an already-loaded Hugging Face model in its family's view."""
    return view_class(str(model.config.model_type))(model, verbalizer_ids=verbalizer_ids)


def load_backbone(
    path_or_id: str | Path,
    *,
    head: str = "auto",
    verbalizer_ids: Sequence[int] | None = None,
    num_labels: int | None = None,
    dtype: Any = None,
    attn_implementation: str | None = "sdpa",
) -> BackboneView:
    """Load a model and its tokenizer and wrap them in a view.

    head: "classifier" (AutoModelForSequenceClassification), "lm" (causal/seq2seq LM head read
    through `verbalizer_ids`), or "auto" (lm when verbalizer_ids are given or the model is T5).
    """
    import torch
    import transformers

    path_or_id = resolve_model(path_or_id)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path_or_id))
    except (OSError, ValueError) as exc:
        raise RevmuxError(
            f"cannot load a model config from {str(path_or_id)!r}: {exc}. Pass a local model directory "
            "(with config.json), or a hub id while the hub is reachable."
        ) from exc
    model_type = str(config.model_type)
    view_class(model_type)  # fail early with the supported list
    if head == "auto":
        head = "lm" if (verbalizer_ids is not None or model_type in SEQ2SEQ_TYPES) else "classifier"
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if head == "classifier":
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
        auto = transformers.AutoModelForSequenceClassification
    elif head == "lm":
        auto = (
            transformers.AutoModelForSeq2SeqLM
            if model_type in SEQ2SEQ_TYPES
            else transformers.AutoModelForCausalLM
        )
    else:
        raise RevmuxError(f"head must be 'auto', 'classifier' or 'lm', got {head!r}.")
    note = "untrained: fine-tune it (revmux finetune) before trusting its predictions"
    try:
        model = from_pretrained_quietly(auto, str(path_or_id), new_head_note=note, **kwargs)
    except ValueError:
        kwargs.pop("attn_implementation", None)  # families without SDPA support
        model = from_pretrained_quietly(auto, str(path_or_id), new_head_note=note, **kwargs)
    view = view_for(model, verbalizer_ids=verbalizer_ids)
    view.tokenizer = load_tokenizer(path_or_id)
    return view


def load_tokenizer(path_or_id: str | Path) -> Any:
    """The model's tokenizer, with a pad token set (decoders often ship without one)."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(resolve_model(path_or_id))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok
