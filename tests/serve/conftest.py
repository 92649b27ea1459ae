"""Fixtures for serve tests: a tiny random 3-label BERT teacher with the real MiniLM tokenizer, and a pack
of train-free adapters for N = 2 and N = 4 on it (random adapter weights: structure, not accuracy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

LABELS = {0: "neg", 1: "neu", 2: "pos"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread) -> None:
    """Every serve test runs on one torch thread (see tests/conftest.py)."""


def save_teacher(directory: Path, minilm_path: Path, seed: int = 0) -> Path:
    """A tiny random BERT classifier (vocab 30522, 3 layers, d=32) saved with the MiniLM tokenizer."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
        initializer_range=0.2,
    )
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(minilm_path).save_pretrained(directory)
    return directory


def save_adapter(teacher: Path, out: Path, n: int, k: int = 1, seed: int = 0) -> Path:
    """Fresh adapters of width n on `teacher`, weights perturbed so that partners matter."""
    from revmux.backbones import load_backbone
    from revmux.model import MuxModel

    torch.manual_seed(seed)
    model = MuxModel.from_backbone(
        load_backbone(teacher), n=n, k=k, backbone_path=teacher.resolve(), max_length=64
    )
    with torch.no_grad():
        for p in model.mux.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.save_pretrained(out)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory, minilm_path) -> Path:
    return save_teacher(tmp_path_factory.mktemp("teacher"), minilm_path)


@pytest.fixture(scope="session")
def pack_dir(tmp_path_factory, teacher_dir) -> Path:
    root = tmp_path_factory.mktemp("pack")
    save_adapter(teacher_dir, root / "n2", 2)
    save_adapter(teacher_dir, root / "n4", 4)
    return root
