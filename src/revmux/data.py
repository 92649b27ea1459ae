"""Labelled text-classification data: GLUE-layout TSVs, generic csv/tsv/jsonl tables, stratified splits.

What it is: readers that turn a file into a `TaskData` (texts, optional second sentences, integer labels,
label names), with errors that name the file, line and column at fault; the four GLUE tasks revmux is
evaluated on (`TASKS`); a bundled 4,000-row SST-2 sample for the offline demo; stratified hold-out splits
and a tokenizer wrapper. What it is not: a downloader, a cache, or a general dataset library. Nothing is
fetched from the network unless `load_hf_dataset` is called with the optional `datasets` library installed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from revmux.errors import ConfigError, DataError

BUNDLED_SST2_DIR = Path(__file__).parent / "datasets" / "sst2"
UNLABELED = -1  # label id of a row the teacher labels (extra training text: revmux.train.extra)
_INT = re.compile(r"[+-]?\d+")
_FLAGS = {"text": "--text-col", "pair": "--pair-col", "label": "--label-col"}


@dataclass
class TaskData:
    """One split of a classification task: `labels[i]` indexes `label_names`, or is `UNLABELED` (-1) for
    training text that the frozen teacher labels (never in evaluation data)."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[int]
    label_names: list[str]
    source: str

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.labels) != n or (self.pairs is not None and len(self.pairs) != n):
            raise DataError(f"{self.source}: texts, pairs and labels differ in length.")
        if any(not (0 <= y < len(self.label_names) or y == UNLABELED) for y in self.labels):
            raise DataError(f"{self.source}: a label id is out of range for classes {self.label_names}.")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def has_unlabeled(self) -> bool:
        """True when some rows are UNLABELED (teacher-labelled training text)."""
        return UNLABELED in self.labels

    @property
    def is_pair(self) -> bool:
        return self.pairs is not None

    def subset(self, indices: Sequence[int]) -> TaskData:
        """The rows at `indices`, in that order."""
        idx = list(indices)
        return TaskData(
            texts=[self.texts[i] for i in idx],
            pairs=None if self.pairs is None else [self.pairs[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            label_names=list(self.label_names),
            source=self.source,
        )

    def label_counts(self) -> dict[str, int]:
        """Labelled rows per class, in label-id order (classes with no rows count 0; UNLABELED rows skipped)."""
        counts = [0] * self.num_classes
        for y in self.labels:
            if y != UNLABELED:
                counts[y] += 1
        return dict(zip(self.label_names, counts, strict=True))

    def sha256(self) -> str:
        """Content hash of texts, pairs, labels and label names (not `source`), for cache keys."""
        payload = {"texts": self.texts, "pairs": self.pairs, "labels": self.labels, "names": self.label_names}
        blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class TaskSpec:
    """Where a GLUE task lives (`<data_dir>/<dir>/<split>.tsv`) and which columns it uses."""

    dir: str
    text_col: str
    pair_col: str | None
    label_col: str
    label_names: tuple[str, ...]


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec("SST-2", "sentence", None, "label", ("negative", "positive")),
    "mrpc": TaskSpec("MRPC", "#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent")),
    "rte": TaskSpec("RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    "qnli": TaskSpec("QNLI", "question", "sentence", "label", ("entailment", "not_entailment")),
}


def load_task(task: str, split: str, data_dir: str | Path | None = None) -> TaskData:
    """Load `split` ("train", "dev") of a GLUE task; without `data_dir`, sst2 reads the bundled sample."""
    key = task.lower().replace("-", "")
    if key not in TASKS:
        raise DataError(
            f"unknown task {task!r}; known tasks: {', '.join(TASKS)}. "
            "For any other data, pass --train/--eval files (csv, tsv or jsonl) instead."
        )
    spec = TASKS[key]
    if data_dir is None and key != "sst2":
        raise DataError(
            f"task {key!r} is not bundled (only sst2 is): pass --data-dir pointing at a GLUE download "
            f"holding {spec.dir}/{split}.tsv, or pass --train/--eval files instead."
        )
    path = (BUNDLED_SST2_DIR if data_dir is None else Path(data_dir) / spec.dir) / f"{split}.tsv"
    if not path.is_file():
        if data_dir is None:
            raise DataError(f"file {path} not found: the bundled SST-2 sample has 'train' and 'dev' only.")
        raise DataError(f"file {path} not found: expected <data-dir>/{spec.dir}/{split}.tsv (GLUE layout).")
    names = list(spec.label_names)
    return read_table(
        path, text_col=spec.text_col, pair_col=spec.pair_col, label_col=spec.label_col, label_names=names
    )


def read_table(
    path: str | Path,
    *,
    text_col: str,
    pair_col: str | None = None,
    label_col: str = "label",
    label_names: Sequence[str] | None = None,
) -> TaskData:
    """Read a .csv, .tsv (no quoting) or .jsonl file of labelled texts, any number of classes.

    Without `label_names` the classes are the labels found in the file, sorted (numerically when they
    are all integers). With them (e.g. the train file's names when reading the eval file), every label
    must be one of them; integer labels are taken as ids when no name is itself an integer.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"file {path}: unsupported extension {suffix!r}; use .csv, .tsv or .jsonl.")
    if not path.is_file():
        raise DataError(f"file {path} not found.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = raw[: exc.start].rfind(b"\n") + 1
        line, col = raw[: exc.start].count(b"\n") + 1, exc.start - start + 1
        raise DataError(
            f"file {path}, line {line}, column {col} (byte): not valid UTF-8 (byte {raw[exc.start]:#04x}); "
            "re-save the file as UTF-8."
        ) from exc
    where = f"file {path}"
    if not text.strip():
        raise DataError(f"{where}, line 1, column 1: the file is empty (expected a header or JSON rows).")
    cols = {"text": text_col, "pair": pair_col, "label": label_col}
    if suffix == ".jsonl":
        return _build(where, str(path), _jsonl_records(where, text), None, cols, label_names)
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter="\t" if suffix == ".tsv" else ",",
        quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL,
    )
    header = [h.strip() for h in next(reader)]
    return _build(where, str(path), _csv_records(where, reader, header), header, cols, label_names)


def load_hf_dataset(
    name: str, split: str, *, text_col: str, pair_col: str | None, label_col: str
) -> TaskData:
    """Load a Hugging Face hub dataset split (needs the optional `datasets` library and network access).

    `name` is "PATH" or "PATH:CONFIG", e.g. "glue:sst2" (the CLI's `--task hf:glue:sst2`).
    """
    hint = "pass --train/--eval files (csv, tsv or jsonl) or --data-dir with GLUE TSVs instead"
    try:
        import datasets

        path, _, config = name.partition(":")
        ds = datasets.load_dataset(path, config or None, split=split)
    except ImportError as exc:
        raise DataError(
            f"cannot load dataset {name!r}: 'datasets' is not importable ({exc}); {hint}."
        ) from exc
    except Exception as exc:  # offline, unreachable hub, unknown name or split: all user-fixable
        raise DataError(
            f"cannot load dataset {name!r} [{split}] ({type(exc).__name__}: {exc}); {hint}."
        ) from exc
    names = getattr(ds.features.get(label_col), "names", None)  # a ClassLabel column: ids -> names
    where = f"dataset {name!r} split {split!r}"

    def records() -> Iterator[tuple[int, Mapping[str, Any]]]:
        for i, row in enumerate(ds):
            y = row.get(label_col)
            if names and isinstance(y, int) and 0 <= y < len(names):
                row = {**row, label_col: names[y]}
            yield i + 1, row

    cols = {"text": text_col, "pair": pair_col, "label": label_col}
    return _build(where, f"hf:{name}[{split}]", records(), list(ds.column_names), cols, names, unit="row")


def split_holdout(
    data: TaskData, fraction: float = 0.05, *, seed: int = 0, max_rows: int = 1000
) -> tuple[TaskData, TaskData]:
    """(train, held_out): a stratified slice of TRAIN for checkpoint selection, at least 1 row per class
    when possible, at most `max_rows`; deterministic for `seed`."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"hold-out fraction must be in (0, 1), got {fraction!r}.")
    if len(data) < 2:
        raise DataError(f"{data.source}: need at least 2 rows to hold some out, got {len(data)}.")
    splittable = sum(1 for c in data.label_counts().values() if c >= 2)
    n = min(max(round(fraction * len(data)), splittable, 1), max_rows, len(data) - 1)
    return split_fixed(data, n, seed=seed)


def split_fixed(data: TaskData, n_heldout: int, *, seed: int) -> tuple[TaskData, TaskData]:
    """(rest, held_out) with exactly `n_heldout` held-out rows, stratified by label; both keep file order."""
    if not 0 < n_heldout < len(data):
        raise ConfigError(f"cannot hold out {n_heldout} rows from {data.source} ({len(data)} rows).")
    if data.has_unlabeled:
        raise DataError(f"{data.source}: a stratified split needs labelled rows; split before adding text.")
    by_class: list[list[int]] = [[] for _ in data.label_names]
    for i, y in enumerate(data.labels):
        by_class[y].append(i)
    rng = random.Random(seed)
    for members in by_class:
        rng.shuffle(members)
    quotas = _allocate([len(m) for m in by_class], n_heldout)
    held = sorted(i for members, q in zip(by_class, quotas, strict=True) for i in members[:q])
    held_set = set(held)
    rest = [i for i in range(len(data)) if i not in held_set]
    tag = f" (seed {seed}: {len(rest)} rest / {len(held)} held out)"
    rest_data, held_data = data.subset(rest), data.subset(held)
    rest_data.source, held_data.source = data.source + tag, data.source + tag + " [held out]"
    return rest_data, held_data


MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(encoding: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a tokenizer's output that the backbones accept (`MODEL_INPUT_KEYS`), nothing else."""
    return {k: encoding[k] for k in MODEL_INPUT_KEYS if k in encoding}


def tokenize(tokenizer: Any, data: TaskData, max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize all rows into one padded batch: input_ids, attention_mask (+ token_type_ids if given)."""
    if len(data) == 0:
        raise DataError(f"{data.source}: no rows to tokenize.")
    kw = {"padding": "longest", "truncation": True, "max_length": max_length, "return_tensors": "pt"}
    return model_inputs(tokenizer(data.texts, text_pair=data.pairs, **kw))


# ----------------------------------------------------------------------------------------------- internals


def _allocate(counts: list[int], n: int) -> list[int]:
    """Per-class held-out quotas summing to n: proportional (largest remainder), then >= 1 per class
    that has >= 2 rows, taken from the largest quota."""
    total = sum(counts)
    exact = [n * c / total for c in counts]
    quotas = [int(x) for x in exact]
    order = sorted(range(len(counts)), key=lambda i: (quotas[i] - exact[i], i))
    for i in order[: n - sum(quotas)]:
        quotas[i] += 1
    for i, c in enumerate(counts):
        donor = max(range(len(quotas)), key=lambda j: (quotas[j], -j))
        if quotas[i] == 0 and c >= 2 and quotas[donor] > 1:
            quotas[donor] -= 1
            quotas[i] += 1
    return quotas


def _csv_records(where: str, reader: Any, header: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            col = header[len(row)] if len(row) < len(header) else len(header) + 1
            raise DataError(
                f"{where}, line {start}, column {col!r}: row has {len(row)} fields but the header has "
                f"{len(header)} (a stray delimiter inside a text? tsv files must not contain tabs in text)."
            )
        yield start, dict(zip(header, row, strict=True))


def _jsonl_records(where: str, text: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}, line {line}, column {exc.colno}: malformed JSON ({exc.msg}).") from exc
        if not isinstance(obj, dict):
            raise DataError(
                f"{where}, line {line}, column 1: expected a JSON object, got {type(obj).__name__}."
            )
        yield line, obj


def _build(
    where: str,
    source: str,
    records: Iterable[tuple[int, Mapping[str, Any]]],
    header: list[str] | None,
    cols: dict[str, str | None],
    label_names: Sequence[str] | None,
    unit: str = "line",
) -> TaskData:
    """Validate records into a TaskData; a known `header` is checked up front (line 1)."""

    def err(line: int, col: object, msg: str) -> DataError:
        return DataError(f"{where}, {unit} {line}, column {col!r}: {msg}")

    def check_columns(line: int, present: Sequence[str]) -> None:
        for role, col in cols.items():
            if col is not None and col not in present:
                listed = ", ".join(map(str, present))
                raise err(
                    line, col, f"no such column (columns present: {listed}); set {_FLAGS[role]} to one."
                )

    if header is not None:
        check_columns(1, header)
    texts: list[str] = []
    pairs: list[str] | None = [] if cols["pair"] is not None else None
    raw_labels: list[tuple[int, str]] = []
    for line, rec in records:
        if header is None:
            check_columns(line, list(rec))
        for col, out in ((cols["text"], texts), (cols["pair"], pairs)):
            if out is None:
                continue
            value = rec[col]
            if not isinstance(value, str):
                raise err(line, col, f"expected a string, got {value!r}.")
            if not value.strip():
                raise err(line, col, "text is empty or whitespace-only.")
            out.append(value.strip())
        label = rec[cols["label"]]
        if isinstance(label, bool) or not isinstance(label, (str, int, type(None))):
            raise err(line, cols["label"], f"label must be a string or an integer, got {label!r}.")
        label = "" if label is None else str(label).strip()
        if not label:
            raise err(line, cols["label"], "label is empty.")
        raw_labels.append((line, label))
    if not texts:
        raise err(2, 1, "no data rows (only a header or blank lines).")
    names, ids = _label_ids(err, cols["label"], raw_labels, label_names)
    return TaskData(texts=texts, pairs=pairs, labels=ids, label_names=names, source=source)


def _label_ids(
    err: Callable[[int, object, str], DataError],
    col: str | None,
    raw: list[tuple[int, str]],
    label_names: Sequence[str] | None,
) -> tuple[list[str], list[int]]:
    """Names and ids; integer labels are normalised ("01" -> "1") and sort numerically."""
    norm = [(line, str(int(v)) if _INT.fullmatch(v) else v) for line, v in raw]
    if label_names is None:
        found = {v for _, v in norm}
        names = sorted(found, key=int) if all(_INT.fullmatch(v) for v in found) else sorted(found)
    else:
        names = [str(n) for n in label_names]
    index = {n: i for i, n in enumerate(names)}
    ids_allowed = not any(_INT.fullmatch(n) for n in names)  # "0"/"1" are ids for named GLUE classes
    ids: list[int] = []
    for line, v in norm:
        if v in index:
            ids.append(index[v])
        elif ids_allowed and _INT.fullmatch(v) and 0 <= int(v) < len(names):
            ids.append(int(v))
        else:
            raise err(line, col, f"label {v!r} was not seen in training (known: {', '.join(names)}).")
    return names, ids
