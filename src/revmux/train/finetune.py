"""Full fine-tuning of a backbone and its classification head: the teacher, for users who have none.

What it is: a plain torch loop (AdamW, linear warmup then decay, length-bucketed shuffled batches)
that turns a pretrained model into a task classifier, scores it on a slice held out from TRAIN, and
writes a standard Hugging Face directory (safetensors + tokenizer + `finetune_log.json`) that
`pipeline("text-classification", model=out_dir)` and `revmux train` load as is.
With `verbalizer_ids` (one token id per class) the model keeps its LM head instead (causal LMs, T5) and
learns to put class c's token at the answer position: cross-entropy over the verbalizer tokens, read
exactly as the LM-head views read them; train its adapters with the same `--verbalizer`. T5 without
verbalizer ids is refused (revmux reads T5 only through its LM head).
What it is not: adapter training (that is `revmux.train`), a Trainer, or a hyper-parameter search.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from revmux.backbones.hf_load import no_hf_progress
from revmux.data import TaskData, model_inputs, split_holdout
from revmux.errors import ConfigError, DataError, RevmuxError
from revmux.progress import StepProgress

LOG_NAME = "finetune_log.json"


@dataclass
class FinetuneResult:
    """Where the fine-tuned model went, how well it does on the train hold-out, and the per-step losses."""

    out_dir: Path
    holdout_accuracy: float
    train_seconds: float
    steps: int
    losses: list[float] = field(default_factory=list)


def finetune(
    model_path: str | Path,
    train_data: TaskData,
    out_dir: str | Path,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 32,
    max_length: int = 64,
    max_train_rows: int | None = None,
    warmup_fraction: float = 0.06,
    weight_decay: float = 0.01,
    seed: int = 0,
    holdout_fraction: float = 0.05,
    progress: bool = True,
    verbalizer_ids: Sequence[int] | None = None,
) -> FinetuneResult:
    """Fine-tune `model_path` (a directory, hub id or zoo name such as "minilm") on `train_data`, save to `out_dir`.

    `verbalizer_ids`: fine-tune the LM head to answer with these tokens (see the module docstring).
    """
    import transformers

    _check_args(epochs, lr, batch_size, max_length, max_train_rows, warmup_fraction)
    torch.manual_seed(seed)
    train, holdout = _split(train_data, holdout_fraction, max_train_rows, seed)

    names = list(train_data.label_names)
    model, tokenizer, classify = _load_student(model_path, names, verbalizer_ids)

    encoded = _encode(tokenizer, train, max_length)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = epochs * steps_per_epoch
    # fused: one pass over every weight per step instead of a dozen (a quarter of a MiniLM step on CPU)
    fused = model.device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, fused=fused)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, round(warmup_fraction * total_steps), total_steps
    )

    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    with _Progress(total_steps, enabled=progress) as bar:
        for epoch in range(epochs):
            for rows in _bucketed_batches(encoded["lengths"], batch_size, seed=seed + epoch):
                batch = _collate(tokenizer, encoded, rows, model.device)
                labels = torch.tensor([train.labels[i] for i in rows], device=model.device)
                losses.append(_step(model, classify, batch, labels, optimizer, scheduler))
                bar.advance(len(rows), losses[-1])
    train_seconds = time.perf_counter() - start

    model.eval()
    accuracy = classifier_accuracy(
        model, tokenizer, holdout, max_length=max_length, batch_size=batch_size * 2, classify=classify
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with no_hf_progress():
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    settings = {
        "model_path": str(model_path), "data": train_data.source, "train_rows": len(train),
        "holdout_rows": len(holdout), "label_names": names, "epochs": epochs, "lr": lr,
        "batch_size": batch_size, "max_length": max_length, "max_train_rows": max_train_rows,
        "warmup_fraction": warmup_fraction, "weight_decay": weight_decay, "seed": seed,
        "holdout_fraction": holdout_fraction,
        "verbalizer_ids": None if verbalizer_ids is None else [int(i) for i in verbalizer_ids],
    }  # fmt: skip
    result = FinetuneResult(out, accuracy, train_seconds, len(losses), losses)
    log = {k: v for k, v in asdict(result).items() if k not in ("out_dir", "losses")}
    log.update(first_loss=losses[0], last_loss=losses[-1], config=settings)
    (out / LOG_NAME).write_text(json.dumps(log, indent=2) + "\n")
    return result


def _step(
    model: Any, classify: Callable, batch: Any, labels: torch.Tensor, optimizer: Any, scheduler: Any
) -> float:
    """One optimizer step of cross-entropy on `batch`; returns the loss."""
    loss = torch.nn.functional.cross_entropy(classify(batch).float(), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _load_student(
    model_path: str | Path, names: list[str], verbalizer_ids: Sequence[int] | None
) -> tuple[Any, Any, Callable]:
    """(model, tokenizer, classify) to fine-tune: a classification head of `names`, or an LM head read
    through `verbalizer_ids`; RevmuxError naming the source when it cannot be loaded."""
    import transformers

    from revmux.backbones.hf_load import from_pretrained_quietly
    from revmux.backbones.registry import load_tokenizer
    from revmux.backbones.zoo import resolve_model

    source = resolve_model(model_path)
    try:
        tokenizer = load_tokenizer(source)  # sets a pad token (eos) for decoders that ship without one
        if verbalizer_ids is not None:
            model, classify = _lm_classifier(source, verbalizer_ids, names)
        else:
            _refuse_lm_only(source)
            model = from_pretrained_quietly(
                transformers.AutoModelForSequenceClassification,
                source,
                new_head_note="fine-tuning trains it",
                num_labels=len(names),
                id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)},
                ignore_mismatched_sizes=True,  # a head trained for other classes is replaced
                dtype=torch.float32,
            )
            classify = _logits_of(model)
    except (OSError, ValueError) as exc:
        raise RevmuxError(
            f"cannot load a model to fine-tune from {str(model_path)!r}: {exc}. Pass a local model directory "
            "(with config.json and a tokenizer), 'minilm', or a hub id while the hub is reachable."
        ) from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, classify


@torch.inference_mode()
def classifier_accuracy(
    model: Any,
    tokenizer: Any,
    data: TaskData,
    *,
    max_length: int,
    batch_size: int = 64,
    classify: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> float:
    """Accuracy (0..1) of a Hugging Face sequence classifier (or of `classify(batch) -> logits`) on `data`."""
    classify = classify or _logits_of(model)
    encoded = _encode(tokenizer, data, max_length)
    order = sorted(range(len(data)), key=lambda i: encoded["lengths"][i])
    correct = 0
    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        pred = classify(_collate(tokenizer, encoded, rows, model.device)).argmax(-1)
        correct += sum(int(p) == data.labels[i] for p, i in zip(pred.tolist(), rows, strict=True))
    return correct / len(data)


# ----------------------------------------------------------------------------------------------- internals


def _logits_of(model: Any) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    return lambda batch: model(**batch).logits


def _refuse_lm_only(source: str) -> None:
    """RevmuxError for families that revmux reads only through their LM head (T5), when no verbalizer is given."""
    import transformers

    from revmux.backbones.registry import SEQ2SEQ_TYPES

    model_type = str(transformers.AutoConfig.from_pretrained(source).model_type)
    if model_type in SEQ2SEQ_TYPES:
        raise RevmuxError(
            f"{source!r} is a {model_type} model, which revmux reads only through its LM head; fine-tune it "
            "with a verbalizer instead of a classification head: pass --verbalizer IDS (one vocabulary "
            "token id per class, e.g. the ids of 'negative' and 'positive')."
        )


def _lm_classifier(
    source: str, verbalizer_ids: Sequence[int], names: list[str]
) -> tuple[Any, Callable[[dict[str, torch.Tensor]], torch.Tensor]]:
    """(trainable LM, batch -> verbalizer logits (B, C)) for causal LMs and T5, read as their views read them."""
    from revmux.backbones.registry import load_backbone

    if len(verbalizer_ids) != len(names):
        raise ConfigError(
            f"--verbalizer must give one token id per class: got {len(verbalizer_ids)} ids "
            f"{list(verbalizer_ids)} for {len(names)} classes {names}."
        )
    view = load_backbone(source, head="lm", verbalizer_ids=verbalizer_ids, dtype=torch.float32)
    model = view.model
    model.requires_grad_(True)  # the view froze it: here the whole model trains
    model.config.id2label = dict(enumerate(names))  # the view's label names, once saved
    model.config.label2id = {n: i for i, n in enumerate(names)}
    return model, view.forward_unsplit


def _check_args(
    epochs: int,
    lr: float,
    batch_size: int,
    max_length: int,
    max_train_rows: int | None,
    warmup_fraction: float,
) -> None:
    checks = [
        (epochs >= 1, "--epochs", epochs, "an integer >= 1"),
        (lr > 0, "--lr", lr, "a number > 0"),
        (batch_size >= 1, "--batch-size", batch_size, "an integer >= 1"),
        (max_length >= 2, "--max-length", max_length, "an integer >= 2"),
        (
            max_train_rows is None or max_train_rows >= 1,
            "--max-train-rows",
            max_train_rows,
            "an integer >= 1",
        ),
        (0.0 <= warmup_fraction < 1.0, "warmup_fraction", warmup_fraction, "in [0, 1)"),
    ]
    for ok, flag, value, expected in checks:
        if not ok:
            raise ConfigError(f"{flag} must be {expected}, got {value!r}.")


def _encode(tokenizer: Any, data: TaskData, max_length: int) -> dict[str, Any]:
    """Unpadded token ids of every row (truncated to `max_length`) and their lengths."""
    enc = tokenizer(data.texts, text_pair=data.pairs, truncation=True, max_length=max_length)
    out: dict[str, Any] = model_inputs(enc)
    out["lengths"] = [len(ids) for ids in enc["input_ids"]]
    return out


def _collate(
    tokenizer: Any, encoded: dict[str, Any], rows: list[int], device: torch.device
) -> dict[str, torch.Tensor]:
    """Pad the given rows to their longest (on the tokenizer's padding side) as tensors on `device`."""
    features = {k: [v[i] for i in rows] for k, v in encoded.items() if k != "lengths"}
    padded = tokenizer.pad(features, padding="longest", return_tensors="pt")
    return {k: v.to(device) for k, v in padded.items()}


def _bucketed_batches(lengths: list[int], batch_size: int, *, seed: int) -> Iterator[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within pools of 50 batches, cut, shuffle batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for s in range(0, len(order), pool):
        chunk = sorted(order[s : s + pool], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    yield from batches


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _Progress:
    """Fine-tuning progress over steps: loss, examples/s and ETA (revmux.progress; a no-op when disabled)."""

    def __init__(self, total_steps: int, *, enabled: bool) -> None:
        self.examples = 0
        self.start = time.perf_counter()
        fields = "loss {loss:.4f}, {rate:.1f} ex/s"
        self.steps = StepProgress("fine-tuning", total_steps, fields=fields, enabled=enabled)

    def __enter__(self) -> _Progress:
        self.steps.__enter__()
        return self

    def advance(self, examples: int, loss: float) -> None:
        self.examples += examples
        rate = self.examples / max(time.perf_counter() - self.start, 1e-9)
        self.steps.advance(loss=loss, rate=rate)

    def __exit__(self, *exc: object) -> None:
        self.steps.__exit__(*exc)


def _split(
    data: TaskData, holdout_fraction: float, max_train_rows: int | None, seed: int
) -> tuple[TaskData, TaskData]:
    """(train rows, hold-out rows): a stratified hold-out, then at most `max_train_rows` random train rows."""
    if data.num_classes < 2:
        raise DataError(
            f"{data.source}: found {data.num_classes} class(es) {data.label_names}; "
            "a classifier needs at least 2. Check --label-col."
        )
    train, holdout = split_holdout(data, holdout_fraction, seed=seed)
    if max_train_rows is not None and len(train) > max_train_rows:
        train = train.subset(sorted(random.Random(seed).sample(range(len(train)), max_train_rows)))
    return train, holdout
