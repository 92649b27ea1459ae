"""pack.py: widths {1, N...} from one teacher; bad paths and mismatched adapters fail at start-up, clearly."""

from __future__ import annotations

import json
import shutil

import pytest
import transformers

from revmux.errors import CheckpointError, ConfigError
from revmux.serve.pack import check_pack, find_adapter_dirs, load_pack

from .conftest import save_adapter, save_teacher


def test_a_pack_serves_the_teacher_and_every_adapter(pack_dir, teacher_dir):
    pack = load_pack(pack=pack_dir)
    assert pack.widths == [1, 2, 4] and pack.label_names == ["neg", "neu", "pos"]
    assert pack.backbone == str(teacher_dir.resolve()) and len(pack.backbone_hash) == 64
    assert set(pack.weight_hashes) == {2, 4} and pack.max_length == 64


def test_one_adapter_serves_one_and_its_n(pack_dir):
    assert load_pack(adapter=pack_dir / "n4").widths == [1, 4]


def test_a_training_run_directory_is_one_adapter_and_checkpoints_are_skipped(pack_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pack_dir / "n2", run)
    shutil.copytree(pack_dir / "n4", run / "checkpoints" / "epoch-0")
    assert find_adapter_dirs(run) == [run]
    root = tmp_path / "root"
    shutil.copytree(pack_dir, root)
    shutil.copytree(pack_dir / "n4", root / "checkpoints" / "epoch-0")
    assert [p.name for p in find_adapter_dirs(root)] == ["n2", "n4"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"pack": "/nonexistent/pack"}, "is not a directory"),
        ({"adapter": "/nonexistent/adapter"}, "is not an adapter directory"),
        ({}, "exactly one of --adapter"),
    ],
)
def test_bad_paths_name_the_flag(kwargs, needle):
    with pytest.raises((CheckpointError, ConfigError), match=needle):
        load_pack(**kwargs)


def test_an_empty_pack_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="holds no adapter"):
        load_pack(pack=tmp_path)


def test_adapters_of_two_teachers_are_refused(pack_dir, tmp_path, minilm_path):
    other = save_teacher(tmp_path / "other-teacher", minilm_path, seed=1)
    mixed = tmp_path / "mixed"
    shutil.copytree(pack_dir / "n2", mixed / "n2")
    save_adapter(other, mixed / "n4", 4)
    with pytest.raises(CheckpointError, match="mixes teachers"):
        load_pack(pack=mixed)


def test_an_adapter_on_another_backbone_than_model_is_refused(pack_dir, tmp_path, minilm_path):
    other = save_teacher(tmp_path / "other-teacher", minilm_path, seed=1)
    with pytest.raises(CheckpointError, match="different weights"):
        load_pack(adapter=pack_dir / "n2", model=other)


def test_two_adapters_for_one_n_are_refused(pack_dir, tmp_path):
    dup = tmp_path / "dup"
    shutil.copytree(pack_dir / "n2", dup / "a")
    shutil.copytree(pack_dir / "n2", dup / "b")
    with pytest.raises(CheckpointError, match="two adapters for N=2"):
        load_pack(pack=dup)


def _edit_config(directory, **changes):
    path = directory / "mux_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"max_length": 32}, "max_length 64 vs 32"),
        (
            {
                "prompt": {
                    "style": "plain",
                    "instruction": "Rate it.",
                    "template": "{text}",
                    "words": ["a", "b", "c"],
                }
            },
            "prompt None vs",
        ),
        ({"verbalizer_ids": [1, 2, 3]}, "verbalizer_ids None vs [1, 2, 3]"),
    ],
)
def test_adapters_that_encode_requests_differently_are_refused(pack_dir, tmp_path, changes, needle):
    mixed = tmp_path / "mixed"
    shutil.copytree(pack_dir / "n2", mixed / "n2")
    shutil.copytree(pack_dir / "n4", mixed / "n4")
    _edit_config(mixed / "n4", **changes)
    for check in (check_pack, load_pack):  # check_pack: what the Ray app runs before it deploys
        with pytest.raises(CheckpointError, match="mixes request encoders") as err:
            check(pack=mixed)
        assert (
            needle in str(err.value)
            and str(mixed / "n2") in str(err.value)
            and str(mixed / "n4") in str(err.value)
        )


def test_adapters_on_teachers_with_different_tokenizers_are_refused(pack_dir, tmp_path, teacher_dir):
    other = tmp_path / "same-weights-other-tokenizer"
    shutil.copytree(teacher_dir, other)
    tokenizer = transformers.AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["zzqxj"])
    tokenizer.save_pretrained(other)
    mixed = tmp_path / "mixed"
    shutil.copytree(pack_dir / "n2", mixed / "n2")
    shutil.copytree(pack_dir / "n4", mixed / "n4")
    _edit_config(mixed / "n4", backbone_path=str(other.resolve()))
    check_pack(pack=mixed)  # the configs agree; only the tokenizers differ
    with pytest.raises(CheckpointError, match=r"mixes request encoders: .* differ in tokenizer '"):
        load_pack(pack=mixed)
    pack = load_pack(pack=pack_dir)
    assert pack.encoder == pack.models[2].encoder == pack.models[4].encoder.replace()
    assert pack.encoder.max_length == 64 and pack.encoder.prompt is None
