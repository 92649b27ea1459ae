"""revmux.data: GLUE loaders on the real shared data, the bundled SST-2 sample, generic tables, splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from revmux.data import (
    BUNDLED_SST2_DIR,
    TASKS,
    TaskData,
    load_hf_dataset,
    load_task,
    model_inputs,
    read_table,
    split_fixed,
    split_holdout,
    tokenize,
)
from revmux.errors import ConfigError, DataError

GLUE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"GLUE data not found at {GLUE_DIR}")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- GLUE


@needs_glue
@pytest.mark.parametrize(
    ("task", "split", "rows", "names", "counts"),
    [
        ("sst2", "dev", 872, ["negative", "positive"], [428, 444]),
        ("mrpc", "dev", 408, ["not_equivalent", "equivalent"], [129, 279]),
        ("rte", "dev", 277, ["entailment", "not_entailment"], [146, 131]),
        ("qnli", "dev", 5463, ["entailment", "not_entailment"], [2702, 2761]),
        ("mrpc", "train", 3668, ["not_equivalent", "equivalent"], [1194, 2474]),
        ("rte", "train", 2490, ["entailment", "not_entailment"], [1249, 1241]),
    ],
)
def test_glue_tasks_load_with_documented_counts(task, split, rows, names, counts) -> None:
    data = load_task(task, split, GLUE_DIR)
    assert len(data) == rows
    assert data.label_names == names
    assert list(data.label_counts().values()) == counts
    assert data.is_pair == (TASKS[task].pair_col is not None)
    assert all(t and t == t.strip() for t in data.texts)
    assert str(GLUE_DIR) in data.source


@needs_glue
def test_glue_quirks_bom_and_string_labels() -> None:
    mrpc = load_task("MRPC", "dev", GLUE_DIR)  # dev.tsv starts with a BOM before "Quality"
    assert mrpc.texts[0].startswith("He said the foodservice pie business")
    assert mrpc.pairs is not None and mrpc.pairs[0].startswith('" The foodservice pie business')
    assert mrpc.labels[:2] == [1, 0]
    rte = load_task("rte", "dev", GLUE_DIR)
    assert rte.labels[0] == 1  # first RTE dev row is not_entailment


@needs_glue
def test_glue_missing_split_names_expected_path() -> None:
    with pytest.raises(DataError) as exc:
        load_task("qnli", "train", GLUE_DIR)
    assert str(GLUE_DIR / "QNLI" / "train.tsv") in str(exc.value)


def test_unknown_task_lists_known_ones_and_suggests_files() -> None:
    with pytest.raises(DataError) as exc:
        load_task("cola", "dev")
    msg = str(exc.value)
    assert all(t in msg for t in ("sst2", "mrpc", "rte", "qnli")) and "--train/--eval" in msg


def test_non_bundled_task_without_data_dir() -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_task("rte", "dev")


# ---------------------------------------------------------------------------------------------- bundled


def test_bundled_sst2_sample_loads_without_data_dir() -> None:
    train, dev = load_task("sst2", "train"), load_task("sst2", "dev")
    assert (len(train), len(dev)) == (4000, 872)
    assert train.label_names == dev.label_names == ["negative", "positive"]
    assert train.label_counts() == {"negative": 1747, "positive": 2253}
    assert (BUNDLED_SST2_DIR / "README.md").is_file()
    with pytest.raises(DataError, match="'train' and 'dev'"):
        load_task("sst2", "test")


@needs_glue
def test_bundled_sample_is_drawn_from_glue() -> None:
    assert load_task("sst2", "dev").sha256() == load_task("sst2", "dev", GLUE_DIR).sha256()
    full = set((GLUE_DIR / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:])
    sample = (BUNDLED_SST2_DIR / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert sample[0] == "sentence\tlabel" and set(sample[1:]) <= full


# ---------------------------------------------------------------------------------------------- read_table


def test_csv_string_labels_with_quotes_and_pairs(tmp_path) -> None:
    f = write(tmp_path / "t.csv", 'a,b,y\n"hi, there",x,spam\nbye,"say ""no""",ham\n')
    data = read_table(f, text_col="a", pair_col="b", label_col="y")
    assert data.texts == ["hi, there", "bye"] and data.pairs == ["x", 'say "no"']
    assert data.label_names == ["ham", "spam"] and data.labels == [1, 0]


def test_tsv_integer_labels_sort_numerically(tmp_path) -> None:
    f = write(tmp_path / "t.tsv", 'text\tlabel\nsay "hi\t10\nb\t2\n\nc\t1\n')
    data = read_table(f, text_col="text")
    assert data.texts == ['say "hi', "b", "c"]  # QUOTE_NONE: a lone quote is text
    assert data.label_names == ["1", "2", "10"] and data.labels == [2, 1, 0]
    ev = read_table(
        write(tmp_path / "e.tsv", "text\tlabel\nz\t02\n"), text_col="text", label_names=data.label_names
    )
    assert ev.labels == [1]


def test_jsonl_three_classes_and_train_names(tmp_path) -> None:
    rows = [{"t": "a", "y": "pos"}, {"t": "b", "y": "neg"}, {"t": "c", "y": "neu"}, {"t": "d", "y": 7}]
    f = write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in rows[:3]) + "\n\n")
    data = read_table(f, text_col="t", label_col="y")
    assert data.label_names == ["neg", "neu", "pos"] and data.labels == [2, 0, 1] and data.pairs is None
    assert data.source == str(f)
    ev = read_table(f, text_col="t", label_col="y", label_names=["pos", "neu", "neg", "other"])
    assert ev.labels == [0, 2, 1] and ev.num_classes == 4


def test_named_classes_accept_integer_ids(tmp_path) -> None:
    f = write(tmp_path / "t.csv", "text,label\na,1\nb,0\n")
    assert read_table(f, text_col="text", label_names=["neg", "pos"]).labels == [1, 0]


def err(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as exc:
        fn(*args, **kw)
    return str(exc.value)


def test_missing_column_lists_present_and_flag(tmp_path) -> None:
    for name, body, line in [
        ("m.csv", "sentence,label\na,1\n", 1),
        ("m.tsv", "sentence\tlabel\na\t1\n", 1),
        ("m.jsonl", '{"sentence": "a", "label": 1}\n', 1),
    ]:
        f = write(tmp_path / name, body)
        msg = err(read_table, f, text_col="text")
        assert f"file {f}, line {line}, column 'text'" in msg
        assert "sentence, label" in msg and "--text-col" in msg
    f = write(tmp_path / "p.jsonl", '{"t": "a", "label": 1}\n{"t": "b"}\n')
    msg = err(read_table, f, text_col="t")
    assert f"file {f}, line 2, column 'label'" in msg and "--label-col" in msg
    assert "--pair-col" in err(read_table, tmp_path / "m.csv", text_col="sentence", pair_col="s2")


@pytest.mark.parametrize(
    ("name", "body", "where", "what"),
    [
        ("e.csv", "text,label\na,1\n,0\n", "line 3, column 'text'", "empty"),
        ("e.tsv", "text\tlabel\na\t1\n   \t0\n", "line 3, column 'text'", "whitespace-only"),
        (
            "e.jsonl",
            '{"text": "a", "label": 1}\n{"text": " ", "label": 0}\n',
            "line 2, column 'text'",
            "empty",
        ),
        ("l.csv", "text,label\na,1\nb,\n", "line 3, column 'label'", "label is empty"),
        ("l.jsonl", '{"text": "a", "label": null}\n', "line 1, column 'label'", "label is empty"),
        ("f.jsonl", '{"text": "a", "label": 1.5}\n', "line 1, column 'label'", "string or an integer"),
        (
            "j.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b", "label": }\n',
            "line 2, column 24",
            "malformed JSON",
        ),
        ("o.jsonl", '["a", 1]\n', "line 1, column 1", "JSON object"),
        ("z.csv", "", "line 1, column 1", "empty"),
        ("z.jsonl", "\n  \n", "line 1, column 1", "empty"),
        ("h.tsv", "text\tlabel\n", "line 2, column 1", "no data rows"),
        ("n.tsv", "text\tlabel\nhas\ttab\t1\n", "line 2, column 3", "3 fields"),
        ("s.csv", 'text,label\n"multi\nline",1\nshort\n', "line 4, column 'label'", "1 fields"),
    ],
)
def test_errors_name_file_line_and_column(tmp_path, name, body, where, what) -> None:
    f = write(tmp_path / name, body)
    msg = err(read_table, f, text_col="text")
    assert f"file {f}, {where}" in msg and what in msg


def test_unseen_label_in_eval_file(tmp_path) -> None:
    f = write(tmp_path / "ev.csv", "text,label\na,pos\nb,maybe\n")
    msg = err(read_table, f, text_col="text", label_names=["neg", "pos"])
    assert (
        f"file {f}, line 3, column 'label': label 'maybe' was not seen in training (known: neg, pos)" in msg
    )
    msg = err(read_table, f, text_col="text", label_names=["0", "1"])  # integer-named classes: no id fallback
    assert "line 2" in msg and "'pos'" in msg


def test_out_of_range_integer_label_for_named_task(tmp_path) -> None:
    f = write(tmp_path / "ev.tsv", "sentence\tlabel\na\t1\nb\t2\n")
    assert "line 3, column 'label': label '2'" in err(
        read_table, f, text_col="sentence", label_names=["n", "p"]
    )


def test_not_utf8_reports_line(tmp_path) -> None:
    f = tmp_path / "latin.csv"
    f.write_bytes("text,label\nok,1\ncaf\u00e9,0\n".encode("latin-1"))
    msg = err(read_table, f, text_col="text")
    assert f"file {f}, line 3, column 4" in msg and "UTF-8" in msg


def test_missing_file_and_bad_extension(tmp_path) -> None:
    assert str(tmp_path / "nope.csv") in err(read_table, tmp_path / "nope.csv", text_col="t")
    assert ".jsonl" in err(read_table, write(tmp_path / "x.json", "{}"), text_col="t")


def test_hf_dataset_without_library_says_use_files(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    msg = err(load_hf_dataset, "glue", "train", text_col="sentence", pair_col=None, label_col="label")
    assert "--train/--eval" in msg


# ---------------------------------------------------------------------------------------------- TaskData & splits


def make(labels: list[int], names: list[str] | None = None) -> TaskData:
    names = names or [str(i) for i in range(max(labels) + 1)]
    return TaskData([f"t{i}" for i in range(len(labels))], None, labels, names, "mem")


def test_taskdata_subset_counts_hash() -> None:
    d = TaskData(["a", "b", "c"], ["x", "y", "z"], [0, 1, 1], ["n", "p"], "mem")
    s = d.subset([2, 0])
    assert (s.texts, s.pairs, s.labels) == (["c", "a"], ["z", "x"], [1, 0])
    assert d.label_counts() == {"n": 1, "p": 2} and s.label_counts() == {"n": 1, "p": 1}
    assert d.sha256() == TaskData(["a", "b", "c"], ["x", "y", "z"], [0, 1, 1], ["n", "p"], "other").sha256()
    assert d.sha256() != d.subset([0, 1, 2][::-1]).sha256() and len(d.sha256()) == 64
    with pytest.raises(DataError):
        TaskData(["a"], None, [2], ["n", "p"], "mem")


def test_split_holdout_stratified_deterministic_disjoint() -> None:
    data = make([0] * 900 + [1] * 97 + [2] * 3)
    train, held = split_holdout(data, 0.05, seed=0)
    assert len(held) == 50 and len(train) == 950
    assert held.label_counts() == {"0": 44, "1": 5, "2": 1}  # 45/4.85/0.15, minority lifted to 1
    assert set(train.texts).isdisjoint(held.texts) and set(train.texts) | set(held.texts) == set(data.texts)
    again = split_holdout(data, 0.05, seed=0)[1]
    assert again.texts == held.texts
    assert split_holdout(data, 0.05, seed=1)[1].texts != held.texts
    assert len(split_holdout(make([0, 1] * 20000), 0.05)[1]) == 1000  # max_rows cap
    tiny_train, tiny_held = split_holdout(make([0, 0, 1, 1]), 0.05)
    assert sorted(tiny_held.labels) == [0, 1] and sorted(tiny_train.labels) == [0, 1]
    with pytest.raises(ConfigError):
        split_holdout(data, 1.5)


@needs_glue
def test_split_fixed_qnli_4463_1000() -> None:
    dev = load_task("qnli", "dev", GLUE_DIR)
    rest, held = split_fixed(dev, 1000, seed=0)
    assert (len(rest), len(held)) == (4463, 1000)
    assert abs(held.label_counts()["entailment"] - round(1000 * 2702 / 5463)) <= 1
    assert set(zip(rest.texts, rest.pairs, strict=True)).isdisjoint(zip(held.texts, held.pairs, strict=True))
    assert split_fixed(dev, 1000, seed=0)[1].sha256() == held.sha256()
    with pytest.raises(ConfigError):
        split_fixed(dev, len(dev), seed=0)


# ---------------------------------------------------------------------------------------------- tokenize


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def test_tokenize_single_and_pair(tokenizer) -> None:
    single = load_task("sst2", "dev").subset(range(8))
    enc = tokenize(tokenizer, single, max_length=16)
    assert set(enc) >= {"input_ids", "attention_mask"}
    assert enc["input_ids"].shape == enc["attention_mask"].shape and enc["input_ids"].shape[0] == 8
    assert enc["input_ids"].shape[1] <= 16
    pair = TaskData(
        ["is it raining?", "who won"], ["it is raining today.", "nobody"], [0, 1], ["e", "n"], "mem"
    )
    enc = tokenize(tokenizer, pair, max_length=64)
    assert enc["input_ids"].shape[0] == 2 and "token_type_ids" in enc
    assert enc["token_type_ids"][0].max() == 1  # second segment marked
    sep = tokenizer.sep_token_id
    assert (enc["input_ids"][0] == sep).sum() == 2


def test_model_inputs_keeps_only_what_backbones_accept(tokenizer) -> None:
    enc = tokenizer(["a", "bb cc"], padding=True, return_offsets_mapping=True, return_length=True)
    assert set(enc) > {"input_ids", "attention_mask", "token_type_ids"}
    assert list(model_inputs(enc)) == ["input_ids", "attention_mask", "token_type_ids"]
    assert model_inputs({"input_ids": [1], "offset_mapping": [(0, 1)]}) == {"input_ids": [1]}
