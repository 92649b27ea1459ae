"""Tests of revmux.train, plus the tiny task they share with tests/test_cache.py.

`toy_task` is a synthetic sentiment set (the label is whether a "good" or a "bad" word occurs);
`toy_view` is a 3-layer BERT of width 32 with MiniLM's real 30522-token vocabulary and tokenizer,
briefly fine-tuned on the toy task so that it is a meaningful (frozen) teacher.
"""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from revmux.backbones import BackboneView, view_for
from revmux.data import TaskData, tokenize
from revmux.train import TrainConfig

GOOD = ["good", "great", "fine", "lovely"]
BAD = ["bad", "awful", "poor", "dull"]
NOUNS = "movie film plot story cast acting script ending music scene".split()
FILLERS = "the a this that really quite very so rather truly".split()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run tiny models on one thread: on a busy 2-core machine, thread hand-offs cost more than the math."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def toy_task(rows: int = 200, seed: int = 0) -> TaskData:
    """`rows` short sentences, alternating labels; lengths vary from 5 to 10 words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(rows):
        y = i % 2
        words = [rng.choice(FILLERS) for _ in range(rng.randint(1, 6))]
        words += [rng.choice(NOUNS), "was", rng.choice(GOOD if y else BAD)]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(y)
    return TaskData(texts, None, labels, ["negative", "positive"], "toy")


def tiny_bert_30522(seed: int = 0, layers: int = 3) -> AutoModelForSequenceClassification:
    """A random BERT classifier of width 32 over MiniLM's vocabulary (30522 tokens)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
        pad_token_id=0,
    )
    return AutoModelForSequenceClassification.from_config(config).eval()


@functools.cache
def _trained(tokenizer_path: str, steps: int) -> tuple[torch.nn.Module, object]:
    with torch.random.fork_rng():  # the same teacher whichever test trains it first
        torch.manual_seed(0)
        return _fine_tune(tokenizer_path, steps)


def _fine_tune(tokenizer_path: str, steps: int) -> tuple[torch.nn.Module, object]:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    model = tiny_bert_30522()
    data = toy_task()
    enc = tokenize(tokenizer, data, 32)
    labels = torch.tensor(data.labels)
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data), (32,), generator=gen)
        loss = model(**{k: v[idx] for k, v in enc.items()}, labels=labels[idx]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


def toy_view(minilm_path: Path | str, steps: int = 60) -> BackboneView:
    """A fresh view of the toy teacher (fine-tuned once per process, then copied), tokenizer attached."""
    model, tokenizer = _trained(str(minilm_path), steps)
    view = view_for(copy.deepcopy(model))
    view.tokenizer = tokenizer
    return view


def row_steps_per_epoch(row: dict, config: TrainConfig) -> int:
    """Optimizer steps one epoch made for a stored results row: its rows less the hold-out, with the
    augmented copies `config` adds (sentence pairs: every task but sst2), per step of `config`."""
    augment, copies = config.augmentation(is_pair=row["task"] != "sst2")
    held = min(config.holdout_max_rows, round(row["train_rows"] * config.holdout_fraction))
    rows = (row["train_rows"] - held) * (1 + (copies if augment else 0))
    return max(1, rows // (config.batch_groups * row["n"]))
