"""Extra training text for distillation: unlabeled files and task-aware augmentation, labelled by the teacher.

What it is: the student is distilled from a frozen teacher, so any text of the task's kind is training
data once the teacher has labelled it. `read_unlabeled` reads such text (`revmux train --unlabeled FILE`:
one text per line, a tab between the two sentences of a pair task, or a .csv/.tsv/.jsonl column);
`augment` derives new rows from the training rows: span crops, word dropout and, for pair tasks,
re-pairing a first sentence with another row's second. Every row made here is `UNLABELED`: the
trainer takes its label from the teacher's logits (revmux.train.cache), never from a gold column.
What it is not: a tokenizer-level augmenter, or a source of evaluation data.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path

from revmux.data import UNLABELED, TaskData
from revmux.errors import ConfigError, DataError

AUGMENTATIONS = ("crop", "dropout", "repair")
CROP_KEEP = (0.5, 0.9)  # share of words a span crop keeps, uniform in this range
DROPOUT_P = 0.15  # chance of dropping each word (at least one word stays)


def read_unlabeled(
    path: str | Path,
    *,
    label_names: Sequence[str],
    pair: bool,
    text_col: str = "text",
    pair_col: str | None = None,
) -> TaskData:
    """Unlabeled rows from `path`: a text file (one row per line; a pair task's line holds its two sentences
    separated by one tab) or a .csv / .tsv / .jsonl file read by column (`text_col`, `pair_col` for pairs).

    Every row is UNLABELED. Errors name the file and line: empty text, a missing tab or column, bad UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--unlabeled {path}: file not found.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"--unlabeled {path}, line {line}: not valid UTF-8; re-save the file as UTF-8."
        ) from exc
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".jsonl"):
        if pair and pair_col is None:
            raise ConfigError(
                f"--unlabeled {path}: this is a pair task; name the second sentence's column with "
                "--unlabeled-pair-col."
            )
        rows = _table_rows(path, text, suffix, text_col, pair_col if pair else None)
    else:
        rows = _line_rows(path, text, pair)
    if not rows:
        raise DataError(f"--unlabeled {path}: no rows (the file is empty).")
    texts = [r[0] for r in rows]
    pairs = [r[1] for r in rows] if pair else None
    return TaskData(texts, pairs, [UNLABELED] * len(rows), list(label_names), f"unlabeled:{path.name}")


def augment(data: TaskData, kinds: Sequence[str], copies: int, *, seed: int = 0) -> TaskData:
    """`copies` new rows per row of `data`, each from one of `kinds` (taken in turn), all UNLABELED.

    crop: a random contiguous span of 50-90% of the words (each sentence of a pair cropped on its own);
    dropout: each word dropped with probability 0.15; repair (pair tasks only): the row's first sentence
    with the second sentence of another random row. Deterministic for `seed`; rows that come out
    identical to their source are kept (the teacher's label is still the right target).
    """
    bad = [k for k in kinds if k not in AUGMENTATIONS]
    if bad:
        raise ConfigError(
            f"--augment: unknown augmentation {bad[0]!r}; choose from {', '.join(AUGMENTATIONS)}."
        )
    if copies < 0:
        raise ConfigError(f"--augment-copies must be >= 0, got {copies}.")
    if copies == 0 or len(data) == 0:
        return TaskData(
            [], [] if data.is_pair else None, [], list(data.label_names), data.source + " [augmented]"
        )
    if not kinds:
        raise ConfigError("--augment-copies > 0 needs at least one --augment kind (crop, dropout, repair).")
    if "repair" in kinds and not data.is_pair:
        raise ConfigError("--augment repair re-pairs sentences: it needs a pair task (mrpc, rte, qnli).")
    rng = random.Random(seed * 7919 + 17)
    texts: list[str] = []
    pairs: list[str] | None = [] if data.is_pair else None
    for c in range(copies):
        for i in range(len(data)):
            kind = kinds[(c * len(data) + i) % len(kinds)]
            a = data.texts[i]
            b = data.pairs[i] if data.pairs is not None else None
            if kind == "crop":
                a, b = _crop(a, rng), None if b is None else _crop(b, rng)
            elif kind == "dropout":
                a, b = _dropout(a, rng), None if b is None else _dropout(b, rng)
            else:  # repair
                j = rng.randrange(len(data) - 1) if len(data) > 1 else 0
                j += j >= i and len(data) > 1
                b = data.pairs[j]  # type: ignore[index]
            texts.append(a)
            if pairs is not None:
                pairs.append(b)  # type: ignore[arg-type]
    return TaskData(
        texts, pairs, [UNLABELED] * len(texts), list(data.label_names), data.source + " [augmented]"
    )


def with_extra(data: TaskData, *extra: TaskData) -> TaskData:
    """`data` followed by the rows of each `extra` (same label names, same single/pair shape)."""
    texts, pairs, labels = (
        list(data.texts),
        None if data.pairs is None else list(data.pairs),
        list(data.labels),
    )
    for e in extra:
        if e.label_names != data.label_names:
            raise DataError(f"{e.source}: label names {e.label_names} differ from the training data's.")
        if e.is_pair != data.is_pair:
            want = "pairs" if data.is_pair else "single texts"
            raise DataError(f"{e.source}: the task takes {want}; this text does not match.")
        texts += e.texts
        labels += e.labels
        if pairs is not None:
            pairs += e.pairs or []
    return TaskData(texts, pairs, labels, list(data.label_names), data.source)


# ----------------------------------------------------------------------------------------------- internals


def _crop(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) < 3:
        return text
    keep = max(1, round(len(words) * rng.uniform(*CROP_KEEP)))
    start = rng.randrange(len(words) - keep + 1)
    return " ".join(words[start : start + keep])


def _dropout(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) < 2:
        return text
    kept = [w for w in words if rng.random() >= DROPOUT_P]
    return " ".join(kept) if kept else rng.choice(words)


def _line_rows(path: Path, text: str, pair: bool) -> list[tuple[str, str | None]]:
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines are allowed
    rows: list[tuple[str, str | None]] = []
    for no, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        where = f"--unlabeled {path}, line {no}"
        if not line.strip():
            raise DataError(f"{where}: empty line; remove it (every line is one training row).")
        if not pair:
            rows.append((line.strip(), None))
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise DataError(
                f"{where}: a pair task needs two non-empty sentences separated by one tab, found "
                f"{len(parts) - 1} tab(s)."
            )
        rows.append((parts[0].strip(), parts[1].strip()))
    return rows


def _table_rows(
    path: Path, text: str, suffix: str, text_col: str, pair_col: str | None
) -> list[tuple[str, str | None]]:
    cols = [c for c in (text_col, pair_col) if c is not None]
    records: list[tuple[int, dict]] = []
    if suffix == ".jsonl":
        for no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"--unlabeled {path}, line {no}: malformed JSON ({exc.msg}).") from exc
            if not isinstance(obj, dict):
                raise DataError(f"--unlabeled {path}, line {no}: expected a JSON object.")
            records.append((no, obj))
    else:
        reader = csv.reader(
            io.StringIO(text, newline=""),
            delimiter="\t" if suffix == ".tsv" else ",",
            quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL,
        )
        header = [h.strip() for h in next(reader, [])]
        for col in cols:
            if col not in header:
                raise DataError(
                    f"--unlabeled {path}, line 1: no column {col!r} (columns: {', '.join(header)}); set "
                    "--unlabeled-col / --unlabeled-pair-col."
                )
        for no, values in enumerate(reader, 2):
            if values:
                records.append((no, dict(zip(header, values, strict=False))))
    rows: list[tuple[str, str | None]] = []
    for no, rec in records:
        got: list[str] = []
        for col in cols:
            value = rec.get(col)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"--unlabeled {path}, line {no}, column {col!r}: missing or empty text.")
            got.append(value.strip())
        rows.append((got[0], got[1] if pair_col is not None else None))
    return rows
