"""revmux.checkpoint: the adapter file format, atomic writes, validated reads, and the generic helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import revmux.checkpoint as ckpt
from revmux import model as model_module
from revmux.checkpoint import (
    atomic_directory,
    check_compatible,
    copy_adapter,
    load_adapter_weights,
    load_tensors,
    read_json,
    save_adapter,
    save_tensors,
    write_json,
)
from revmux.config import CONFIG_NAME, WEIGHTS_NAME
from revmux.errors import CheckpointError
from revmux.model import MuxModel
from tests.tiny import tiny_batch, tiny_bert


@pytest.fixture(scope="module")
def view():
    return tiny_bert()


def _model(view, seed: int) -> MuxModel:
    torch.manual_seed(seed)
    model = MuxModel.from_backbone(view, kind="revmux", n=2, k=1, task="toy")
    with torch.no_grad():
        for p in model.mux.parameters():
            p.normal_(0.0, 0.3)
    return model


def _logits(model: MuxModel) -> torch.Tensor:
    with torch.inference_mode():
        return model(tiny_batch([5, 7, 3, 9]))


def test_the_file_format_is_unchanged(view, tmp_path):
    """mux_config.json is the sorted, indented config; the safetensors metadata names the kind."""
    model = _model(view, 0)
    assert model.save_pretrained(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    expected = json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"
    assert (tmp_path / CONFIG_NAME).read_text() == expected
    with safe_open(str(tmp_path / WEIGHTS_NAME), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "revmux_kind": "revmux"}
        assert set(f.keys()) == set(model.mux.state_dict())
    save_adapter(tmp_path / "again", model.config, model.mux)  # what save_pretrained calls
    assert (tmp_path / "again" / CONFIG_NAME).read_text() == expected
    again, first = load_tensors(tmp_path / "again" / WEIGHTS_NAME), load_tensors(tmp_path / WEIGHTS_NAME)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)


def test_check_compatible_is_the_one_model_uses():
    assert model_module.check_compatible is check_compatible


@pytest.mark.parametrize("fail_in", ["weights", "config"])
def test_an_interrupted_save_leaves_the_old_adapter_intact(view, tmp_path, monkeypatch, fail_in):
    old = _model(view, 0)
    old.save_pretrained(tmp_path)
    (tmp_path / "train_log.json").write_text("{}")  # other files of the directory are never touched
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_written(tensors, path, metadata):  # dies after writing part of the file
        path.write_bytes(b"\x00" * 10)
        raise KeyboardInterrupt

    def no_json(*args, **kwargs):
        raise KeyboardInterrupt

    new = _model(view, 1)
    if fail_in == "weights":
        monkeypatch.setattr(ckpt, "_save_file", half_written)
    else:
        monkeypatch.setattr(ckpt.json, "dumps", no_json)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary file left either
    torch.testing.assert_close(
        _logits(MuxModel.from_pretrained(tmp_path, view)), _logits(old), atol=0, rtol=0
    )
    new.save_pretrained(tmp_path)
    torch.testing.assert_close(
        _logits(MuxModel.from_pretrained(tmp_path, view)), _logits(new), atol=0, rtol=0
    )
    assert (tmp_path / "train_log.json").read_text() == "{}"


def test_adapter_weights_with_wrong_keys_or_shapes_name_the_file(view, tmp_path):
    model = _model(view, 0)
    model.save_pretrained(tmp_path)
    weights = tmp_path / WEIGHTS_NAME
    tensors = load_tensors(weights)
    assert set(load_adapter_weights(tmp_path, model.mux)) == set(tensors)  # a directory or the file itself
    name = sorted(tensors)[0]
    renamed = {("renamed." + k if k == name else k): v for k, v in tensors.items()}
    save_tensors(weights, renamed)
    with pytest.raises(
        CheckpointError, match=rf"{weights}.*missing \['{name}'\], unexpected \['renamed.{name}'\]"
    ):
        load_adapter_weights(weights, model.mux)
    save_tensors(weights, {**tensors, name: torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match=rf"{name} in {weights} has shape \(3, 3\).*re-train"):
        MuxModel.from_pretrained(tmp_path, view)
    with pytest.raises(CheckpointError, match="missing. Re-save"):
        load_adapter_weights(tmp_path / "elsewhere" / WEIGHTS_NAME, model.mux)


def test_tensor_files_round_trip_and_fail_with_the_name_and_the_fix(tmp_path):
    path = tmp_path / "sub" / "t.safetensors"
    tensors = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor(1.0)}
    save_tensors(path, tensors, {"what": "test"})
    loaded = load_tensors(path)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert [p.name for p in path.parent.iterdir()] == ["t.safetensors"]
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(
        CheckpointError, match=rf"optimizer state {path} are truncated or corrupted.*Do this\."
    ):
        load_tensors(path, what="optimizer state", fix="Do this.")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'none'} are missing"):
        load_tensors(tmp_path / "none")


def test_json_files_are_written_aside_and_read_with_clear_errors(tmp_path):
    path = tmp_path / "deep" / "state.json"
    write_json(path, {"b": (1, 2), "a": Path("x/y")}, sort_keys=True)
    assert path.read_text() == '{\n  "a": "x/y",\n  "b": [\n    1,\n    2\n  ]\n}\n'
    assert read_json(path) == {"a": "x/y", "b": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]
    with pytest.raises(TypeError, match="object is not JSON-serializable"):
        write_json(path, {"a": object()})
    assert read_json(path) == {"a": "x/y", "b": [1, 2]}  # the failed write left the old file
    path.write_text('{"a": 1')
    with pytest.raises(CheckpointError, match=rf"trainer state {path} is not valid JSON.*Fix it\."):
        read_json(path, what="trainer state", fix="Fix it.")
    path.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="must hold a JSON object, got list"):
        read_json(path)
    with pytest.raises(CheckpointError, match="is missing"):
        read_json(tmp_path / "none.json")


def test_atomic_directory_replaces_only_when_complete(tmp_path):
    final = tmp_path / "epoch-1"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-1"]
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    with atomic_directory(final) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (final / "new.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-1"]
    assert [p.name for p in final.iterdir()] == ["new.txt"]


def test_copy_adapter_copies_both_files_or_names_the_missing_one(view, tmp_path):
    _model(view, 0).save_pretrained(tmp_path / "a")
    copy_adapter(tmp_path / "a", tmp_path / "b")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    (tmp_path / "a" / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS_NAME} is missing"):
        copy_adapter(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / WEIGHTS_NAME).is_file()


def test_from_pretrained_without_a_backbone_path_says_what_to_pass(view, tmp_path):
    _model(view, 0).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="names no backbone; pass --model"):
        MuxModel.from_pretrained(tmp_path)


def test_truncated_and_corrupted_checkpoints_raise_named_errors(view, tmp_path):
    MuxModel.from_backbone(view, kind="revmux", n=2, k=1).save_pretrained(tmp_path)
    weights = tmp_path / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        MuxModel.from_pretrained(tmp_path, view)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        MuxModel.from_pretrained(tmp_path, view)
    weights.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        MuxModel.from_pretrained(tmp_path, view)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        MuxModel.from_pretrained(tmp_path, view)
    with pytest.raises(CheckpointError, match="no mux_config.json"):
        MuxModel.from_pretrained(tmp_path / "nowhere", view)


def test_mismatched_backbone_raises_naming_both_values(view, tmp_path):
    MuxModel.from_backbone(view, kind="revmux", n=2, k=1).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="hidden size 32, this backbone has 48"):
        MuxModel.from_pretrained(tmp_path, tiny_bert(hidden=48))
    with pytest.raises(CheckpointError, match="layer count 3, this backbone has 4"):
        MuxModel.from_pretrained(tmp_path, tiny_bert(layers=4))
    with pytest.raises(CheckpointError, match="content hash differs"):
        MuxModel.from_pretrained(tmp_path, tiny_bert(seed=1))
    with pytest.raises(CheckpointError, match="3 labels|2 labels"):
        MuxModel.from_pretrained(tmp_path, tiny_bert(num_labels=3))
