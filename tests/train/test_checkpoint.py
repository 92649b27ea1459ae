"""revmux.train.checkpoint: epoch directories round-trip, older ones still resume, damaged ones name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from revmux.config import CONFIG_NAME, WEIGHTS_NAME
from revmux.errors import CheckpointError
from revmux.model import MuxModel
from revmux.train import TrainConfig, train
from revmux.train.checkpoint import (
    OPTIM_NAME,
    STATE_NAME,
    RunState,
    latest_checkpoint,
    publish_best,
    restore,
    resumable,
    save_checkpoint,
)
from revmux.train.trainer import _scheduler
from tests.tiny import tiny_bert
from tests.train import one_thread, toy_task, toy_view

CONFIG = TrainConfig(min_steps=0, n=2, k=1, epochs=3, lr=1e-2)
FINGERPRINT = {"backbone": "b" * 64, "train_data": "d" * 64}


@pytest.fixture(scope="module")
def view():
    return tiny_bert()


def _run(view, seed: int, steps: int) -> tuple[MuxModel, torch.optim.Optimizer, object]:
    """A model, AdamW and OneCycle scheduler after `steps` steps on random gradients."""
    torch.manual_seed(seed)
    model = MuxModel.from_backbone(view, n=2, k=1)
    optimizer = torch.optim.AdamW(model.mux.parameters(), lr=CONFIG.lr)
    scheduler = _scheduler(optimizer, CONFIG, 10)
    for _ in range(steps):
        for p in model.mux.parameters():
            p.grad = torch.randn_like(p)
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def _state(epoch: int) -> RunState:
    return RunState(epoch, 3 * epoch, 1, 0.75, [{"epoch": e, "loss": 1.0 / e} for e in range(1, epoch + 1)])


def _assert_same(a: tuple, b: tuple) -> None:
    (ma, oa, sa), (mb, ob, sb) = a, b
    for k, v in ma.mux.state_dict().items():
        torch.testing.assert_close(mb.mux.state_dict()[k], v, atol=0, rtol=0)
    sda, sdb = oa.state_dict(), ob.state_dict()
    assert sda["param_groups"] == sdb["param_groups"] and sda["state"].keys() == sdb["state"].keys()
    for i, per_param in sda["state"].items():
        for name, t in per_param.items():
            torch.testing.assert_close(sdb["state"][i][name], t, atol=0, rtol=0)
    assert sa.state_dict() == sb.state_dict()


def test_save_then_restore_continues_the_same_run(view, tmp_path):
    saved = _run(view, 0, 3)
    final = save_checkpoint(tmp_path, *saved, _state(1), CONFIG, FINGERPRINT)
    assert final == tmp_path / "checkpoints" / "epoch-1" == latest_checkpoint(tmp_path)
    assert {p.name for p in final.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, OPTIM_NAME, STATE_NAME}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-1"]
    fresh = _run(view, 1, 0)
    state = restore(final, resumable(final, CONFIG, FINGERPRINT), *fresh)
    assert state == _state(1)
    _assert_same(saved, fresh)
    publish_best(tmp_path, state.best_epoch)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        assert (tmp_path / name).read_bytes() == (final / name).read_bytes()


def test_a_checkpoint_written_by_earlier_revmux_still_resumes(view, tmp_path):
    """The on-disk format of earlier releases, written here without revmux.checkpoint's helpers."""
    saved = _run(view, 0, 3)
    model, optimizer, scheduler = saved
    ckpt = tmp_path / "checkpoints" / "epoch-2"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.mux.state_dict().items()}, str(ckpt / WEIGHTS_NAME))
    model.config.save(ckpt)
    opt = optimizer.state_dict()
    tensors = {f"state.{i}.{n}": t for i, per in opt["state"].items() for n, t in per.items()}
    save_file(tensors, str(ckpt / OPTIM_NAME))
    doc = {
        **vars(_state(2)), "config": CONFIG.to_dict(), "fingerprint": FINGERPRINT,
        "optimizer_param_groups": opt["param_groups"], "scheduler": scheduler.state_dict(),
    }  # fmt: skip
    (ckpt / STATE_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    assert latest_checkpoint(tmp_path) == ckpt
    fresh = _run(view, 1, 0)
    assert restore(ckpt, resumable(ckpt, CONFIG, FINGERPRINT), *fresh) == _state(2)
    _assert_same(saved, fresh)


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "missing"])
@pytest.mark.parametrize("name", [OPTIM_NAME, WEIGHTS_NAME])
def test_a_damaged_tensor_file_names_the_file(view, tmp_path, name, how):
    final = save_checkpoint(tmp_path, *_run(view, 0, 2), _state(1), CONFIG, FINGERPRINT)
    _damage(final / name, how)
    doc = resumable(final, CONFIG, FINGERPRINT)
    with pytest.raises(CheckpointError, match=rf"{final / name} (are|is) {how}"):
        restore(final, doc, *_run(view, 1, 0))


def test_optimizer_tensors_that_do_not_fit_the_adapter_are_refused(view, tmp_path):
    final = save_checkpoint(tmp_path, *_run(view, 0, 2), _state(1), CONFIG, FINGERPRINT)
    doc = resumable(final, CONFIG, FINGERPRINT)
    save_file({"state.0.exp_avg": torch.zeros(7, 7)}, str(final / OPTIM_NAME))
    with pytest.raises(
        CheckpointError, match=r"state.0.exp_avg in .*optimizer.safetensors has shape \(7, 7\)"
    ):
        restore(final, doc, *_run(view, 1, 0))
    save_file({"exp_avg": torch.zeros(2)}, str(final / OPTIM_NAME))
    with pytest.raises(CheckpointError, match=r"holds 'exp_avg', expected state.<i>.<name>"):
        restore(final, doc, *_run(view, 1, 0))
    save_file({"state.999.exp_avg": torch.zeros(2)}, str(final / OPTIM_NAME))
    with pytest.raises(CheckpointError, match=r"holds 'state.999.exp_avg'"):
        restore(final, doc, *_run(view, 1, 0))


def test_a_damaged_trainer_state_names_the_file(view, tmp_path):
    final = save_checkpoint(tmp_path, *_run(view, 0, 1), _state(1), CONFIG, FINGERPRINT)
    path = final / STATE_NAME
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in doc.items() if k != "fingerprint"}))
    with pytest.raises(CheckpointError, match=rf"{path} lacks \['fingerprint'\]"):
        resumable(final, CONFIG, FINGERPRINT)
    _damage(path, "truncated")
    with pytest.raises(CheckpointError, match=rf"trainer state {path} is not valid JSON"):
        resumable(final, CONFIG, FINGERPRINT)


def test_an_interrupted_checkpoint_leaves_the_previous_epoch_latest(view, tmp_path, monkeypatch):
    run = _run(view, 0, 2)
    save_checkpoint(tmp_path, *run, _state(1), CONFIG, FINGERPRINT)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("revmux.train.checkpoint.write_json", interrupted)  # after adapter and optimizer
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, *run, _state(2), CONFIG, FINGERPRINT)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-1"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "epoch-1"


def test_train_resume_from_a_truncated_optimizer_file_names_it(minilm_path, tmp_path):
    with one_thread():
        view, data = toy_view(minilm_path), toy_task(rows=120)
        config = TrainConfig(
            min_steps=0, epochs=2, max_train_rows=60, n=2, k=1, batch_groups=8, max_length=32
        )
        kw = {"backbone_path": "toy", "cache_root": tmp_path / "cache", "progress": False}
        train(view, data, config, tmp_path / "run", stop_after_epochs=1, **kw)
        optim = tmp_path / "run" / "checkpoints" / "epoch-1" / OPTIM_NAME
        _damage(optim, "truncated")
        with pytest.raises(CheckpointError, match=rf"optimizer state {optim} are truncated or corrupted"):
            train(view, data, config, tmp_path / "run", resume=True, **kw)
