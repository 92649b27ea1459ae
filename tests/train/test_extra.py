"""revmux.train.extra: unlabeled files (good and bad), augmentations, and that their rows carry no gold label."""

from __future__ import annotations

import pytest

from revmux.data import UNLABELED, TaskData
from revmux.errors import ConfigError, DataError
from revmux.train.extra import augment, read_unlabeled, with_extra

NAMES = ["negative", "positive"]


def _pairs() -> TaskData:
    texts = [f"premise number {i} is about a cat sitting on the mat" for i in range(6)]
    pairs = [f"hypothesis {i} says something" for i in range(6)]
    return TaskData(texts, pairs, [0, 1, 0, 1, 0, 1], ["entailment", "not_entailment"], "toy-pairs")


def test_text_lines_are_rows_and_pairs_split_on_one_tab(tmp_path):
    f = tmp_path / "u.txt"
    f.write_text("a fine film\n  another one  \n\n")  # trailing blank lines are allowed
    data = read_unlabeled(f, label_names=NAMES, pair=False)
    assert data.texts == ["a fine film", "another one"] and data.pairs is None
    assert data.labels == [UNLABELED, UNLABELED] and data.has_unlabeled
    f.write_text("the cat sat\tan animal sat\nit rains\tthe sun shines\n")
    pairs = read_unlabeled(f, label_names=NAMES, pair=True)
    assert pairs.pairs == ["an animal sat", "the sun shines"]


@pytest.mark.parametrize(
    ("content", "pair", "message"),
    [
        ("one\n\nthree\n", False, r"u.txt, line 2: empty line"),
        ("a\tb\nno tab here\n", True, r"u.txt, line 2: a pair task needs two non-empty sentences"),
        ("a\tb\tc\n", True, r"line 1: .*found 2 tab"),
        ("", False, r"no rows \(the file is empty\)"),
    ],
)
def test_bad_text_files_name_the_file_and_line(tmp_path, content, pair, message):
    f = tmp_path / "u.txt"
    f.write_text(content)
    with pytest.raises(DataError, match=message):
        read_unlabeled(f, label_names=NAMES, pair=pair)


def test_tables_read_a_column_and_bad_tables_name_line_and_column(tmp_path):
    f = tmp_path / "u.csv"
    f.write_text('id,sentence\n1,"good, really"\n2,bad\n')
    data = read_unlabeled(f, label_names=NAMES, pair=False, text_col="sentence")
    assert data.texts == ["good, really", "bad"]
    with pytest.raises(DataError, match=r"u.csv, line 1: no column 'text'"):
        read_unlabeled(f, label_names=NAMES, pair=False)
    f.write_text('sentence\nok\n""\n')
    with pytest.raises(DataError, match=r"u.csv, line 3, column 'sentence': missing or empty"):
        read_unlabeled(f, label_names=NAMES, pair=False, text_col="sentence")
    j = tmp_path / "u.jsonl"
    j.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(DataError, match=r"u.jsonl, line 2: malformed JSON"):
        read_unlabeled(j, label_names=NAMES, pair=False)
    with pytest.raises(ConfigError, match="--unlabeled-pair-col"):
        read_unlabeled(j, label_names=NAMES, pair=True)
    b = tmp_path / "bad.txt"
    b.write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(DataError, match=r"bad.txt, line 2: not valid UTF-8"):
        read_unlabeled(b, label_names=NAMES, pair=False)
    with pytest.raises(DataError, match="file not found"):
        read_unlabeled(tmp_path / "missing.txt", label_names=NAMES, pair=False)


def test_augmented_rows_are_unlabeled_derived_and_deterministic():
    data = _pairs()
    out = augment(data, ["crop", "dropout", "repair"], copies=2, seed=3)
    assert len(out) == 2 * len(data) and out.labels == [UNLABELED] * len(out)  # never the gold column
    assert out == augment(data, ["crop", "dropout", "repair"], copies=2, seed=3)
    assert out != augment(data, ["crop", "dropout", "repair"], copies=2, seed=4)
    source_words = {w for t in data.texts + data.pairs for w in t.split()}
    assert all(set(t.split()) <= source_words for t in out.texts + out.pairs)  # only the rows' own words
    crops = [out.texts[i] for i in range(len(out)) if i % 3 == 0]  # kinds are taken in turn: crop first
    assert all(len(c.split()) < len(data.texts[0].split()) for c in crops)
    repaired = [(out.texts[i], out.pairs[i]) for i in range(len(out)) if i % 3 == 2]
    originals = set(zip(data.texts, data.pairs, strict=True))
    assert all(pair not in originals for pair in repaired)  # a premise with another row's hypothesis
    assert all(p in data.pairs for _, p in repaired)


def test_augment_rejects_bad_settings():
    single = TaskData(["a b c"], None, [0], NAMES, "s")
    with pytest.raises(ConfigError, match="needs a pair task"):
        augment(single, ["repair"], copies=1)
    with pytest.raises(ConfigError, match="unknown augmentation 'shuffle'"):
        augment(single, ["shuffle"], copies=1)
    assert len(augment(single, [], copies=0)) == 0


def test_with_extra_appends_and_checks_shape():
    data = _pairs()
    extra = augment(data, ["repair"], copies=1)
    both = with_extra(data, extra)
    assert len(both) == 2 * len(data) and both.labels[: len(data)] == data.labels
    single = TaskData(["x"], None, [UNLABELED], data.label_names, "u")
    with pytest.raises(DataError, match="the task takes pairs"):
        with_extra(data, single)
