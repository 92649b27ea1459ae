"""Batch prediction with a MuxModel, shaped like transformers' text-classification pipeline.

What it is: `predict(model, texts)` returns, per text, `[{"label": name, "score": prob}, ...]` sorted
by score (the top `top_k`, or all labels for `top_k=None`), and `read_texts(path)` reads a file of one
text per line (a .tsv line may carry a second sentence after a tab). Texts are grouped N at a time in
the order given, so a text's scores depend on its partners, exactly as in serving without a queue.
What it is not: a server or a queue (that is `revmux.serve`); it has no confidence fallback to N = 1.
"""

from __future__ import annotations

from pathlib import Path

import torch

from revmux.errors import ConfigError, InputError
from revmux.model import MuxModel


def predict(
    model: MuxModel,
    texts: list[str],
    pairs: list[str] | None = None,
    *,
    top_k: int | None = 1,
    max_length: int | None = None,
    batch_size: int = 64,
) -> list[list[dict]]:
    """Per text, the `top_k` labels (all for None) with softmax scores, highest first."""
    _check_inputs(texts, pairs)
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"--top-k must be an integer >= 1 (or None for all labels), got {top_k!r}.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be an integer >= 1, got {batch_size!r}.")
    view = model.view
    encoder = model.encoder if max_length is None else model.encoder.replace(max_length=max_length)
    texts, pairs = encoder.render(texts, pairs)  # as in training; ConfigError without a tokenizer
    names = model.config.label_names or view.label_names
    k = len(names) if top_k is None else min(top_k, len(names))
    chunk = batch_size * model.n
    model.eval()
    out: list[list[dict]] = []
    with torch.inference_mode():
        for s in range(0, len(texts), chunk):
            inputs = encoder.tokenize(
                texts[s : s + chunk], None if pairs is None else pairs[s : s + chunk], device=view.device
            )
            probs = model(inputs).float().softmax(-1)
            scores, ids = probs.topk(k, dim=-1)
            for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True):
                out.append(
                    [{"label": names[i], "score": p} for p, i in zip(row_scores, row_ids, strict=True)]
                )
    return out


def read_texts(path: str | Path) -> tuple[list[str], list[str] | None]:
    """(texts, pairs) from a UTF-8 file of one text per line; blank lines are skipped.

    In a .tsv file every line is either `text` or `text<TAB>pair` (all lines alike, no header).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file {path} not found; pass a text file with one text per line.")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"file {path} is not valid UTF-8 ({exc}); re-save it as UTF-8.") from exc
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise InputError(f"file {path} holds no text; write one text per line.")
    if path.suffix.lower() != ".tsv":
        return [line.strip() for _, line in numbered], None
    rows = [(i, line.split("\t")) for i, line in numbered]
    width = len(rows[0][1])
    for i, fields in rows:
        if len(fields) != width or width > 2:
            raise InputError(
                f"file {path}, line {i}: {len(fields)} tab-separated fields, expected {min(width, 2)} "
                "like line 1 (text, or text<TAB>pair)."
            )
    texts = [fields[0].strip() for _, fields in rows]
    return texts, ([fields[1].strip() for _, fields in rows] if width == 2 else None)


def _check_inputs(texts: list[str], pairs: list[str] | None) -> None:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InputError(
            f"texts must be a list of strings, got {type(texts).__name__}; wrap one text in a list."
        )
    if not texts:
        raise InputError("no texts given; pass at least one text.")
    if pairs is not None and len(pairs) != len(texts):
        raise InputError(f"got {len(texts)} texts but {len(pairs)} pairs; pass one pair per text.")
    for what, values in (("text", texts), ("pair", pairs or [])):
        for i, t in enumerate(values):
            if not isinstance(t, str):
                raise InputError(f"{what} {i} is a {type(t).__name__}, not a string; pass strings.")
            if not t.strip():
                raise InputError(f"{what} {i} is empty; pass non-empty text.")
