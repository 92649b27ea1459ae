"""Layer-sliced views of frozen Hugging Face models (encoders, decoder-only LMs, T5)."""

from revmux.backbones.base import BackboneView, LayerState, backbone_hash
from revmux.backbones.registry import load_backbone, supported_model_types, view_class, view_for

__all__ = [
    "BackboneView",
    "LayerState",
    "backbone_hash",
    "load_backbone",
    "supported_model_types",
    "view_class",
    "view_for",
]
