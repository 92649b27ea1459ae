"""revmux.train.trainer: the loop learns, touches only adapters, checkpoints, resumes exactly; TrainConfig checks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from revmux.cli import app
from revmux.config import CONFIG_NAME, WEIGHTS_NAME
from revmux.data import UNLABELED, TaskData, tokenize
from revmux.errors import ConfigError
from revmux.model import MuxModel
from revmux.train import TrainConfig, select_rows, train
from revmux.train.cache import LivePrefill
from revmux.train.checkpoint import OPTIM_NAME, STATE_NAME
from revmux.train.trainer import (
    LOG_NAME,
    _generator,
    _new_model,
    _prepare_rows,
    _scheduler,
    best_epoch,
    holdout_accuracy,
    holdout_scores,
)
from tests.train import one_thread, toy_task, toy_view

FAST = {"n": 2, "k": 1, "batch_groups": 8, "max_length": 32, "lr": 3e-3, "min_steps": 0}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def view(minilm_path, _one_thread):
    return toy_view(minilm_path)


@pytest.fixture(scope="module")
def data():
    return toy_task(rows=200)


@pytest.fixture(scope="module")
def run(view, data, tmp_path_factory):
    """One 4-epoch run (PCA init off, so that there is something left to learn)."""
    before = {k: v.clone() for k, v in view.model.state_dict().items()}
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(epochs=4, pca_init=False, mux_options={"pca_composite": False}, **FAST)
    result = train(
        view, data, config, out, backbone_path="toy", task="toy", cache_root=out / "cache", progress=False
    )
    return result, out, config, before


def test_training_loss_falls(run):
    history = run[0].history
    assert len(history) == 4
    assert history[-1]["loss"] < 0.6 * history[0]["loss"], [h["loss"] for h in history]
    assert history[-1]["ce"] < 0.5 * history[0]["ce"], [h["ce"] for h in history]
    assert run[0].best_holdout_accuracy > 0.75


def test_only_adapter_weights_change(run, view):
    before = run[3]
    after = view.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in view.model.parameters())
    first = load_file(str(run[1] / "checkpoints" / "epoch-1" / WEIGHTS_NAME))
    last = load_file(str(run[1] / "checkpoints" / "epoch-4" / WEIGHTS_NAME))
    assert any(not torch.equal(first[k], last[k]) for k in first)
    assert run[0].trainable_params == sum(t.numel() for t in first.values())


def test_checkpoint_per_epoch_and_log(run):
    result, out, config, _ = run
    for epoch in range(1, 5):
        ckpt = out / "checkpoints" / f"epoch-{epoch}"
        assert {p.name for p in ckpt.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, OPTIM_NAME, STATE_NAME}
    assert not list((out / "checkpoints").glob(".tmp*"))
    log = json.loads((out / LOG_NAME).read_text())
    assert log["config"] == config.to_dict() and log["best_epoch"] == result.best_epoch
    assert [h["holdout_accuracy"] for h in log["history"]] == [h["holdout_accuracy"] for h in result.history]
    for key in ("train_seconds", "cache_build_seconds", "examples_per_s", "trainable_params"):
        assert log[key] > 0, key
    agreements = [h["holdout_agreement"] for h in result.history]  # the default picks by agreement
    assert result.best_epoch == max(i + 1 for i, a in enumerate(agreements) if a == max(agreements))
    assert result.best_holdout_accuracy == result.history[result.best_epoch - 1]["holdout_accuracy"]


def test_root_adapter_is_the_best_checkpoint_and_reloads_identically(run, view, data):
    result, out, _, _ = run
    best = out / "checkpoints" / f"epoch-{result.best_epoch}"
    assert (out / WEIGHTS_NAME).read_bytes() == (best / WEIGHTS_NAME).read_bytes()
    loaded = MuxModel.from_pretrained(out, view)
    again = MuxModel.from_pretrained(best, view)
    assert loaded.config.task == "toy" and loaded.config.backbone_path == "toy"
    batch = tokenize(view.tokenizer, data.subset(range(16)), 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), again(batch), atol=0, rtol=0)


def test_holdout_rows_are_disjoint_from_training_rows(run, data):
    config = run[2]
    fit, held, fit_idx, held_idx = select_rows(data, config)
    assert set(fit_idx).isdisjoint(held_idx) and len(fit_idx) + len(held_idx) == len(data)
    assert fit.texts == [data.texts[i] for i in fit_idx] and held.labels == [data.labels[i] for i in held_idx]
    assert json.loads((run[1] / LOG_NAME).read_text())["holdout_rows"] == held_idx
    capped = TrainConfig(**{**config.to_dict(), "max_train_rows": 50})
    fit2, _, fit_idx2, held_idx2 = select_rows(data, capped)
    assert len(fit_idx2) + len(held_idx2) == 50 and set(fit_idx2).isdisjoint(held_idx2)


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(view, data, tmp_path):
    config = TrainConfig(epochs=2, max_train_rows=120, lambda_cos=0.1, **FAST)
    kw = {"backbone_path": "toy", "cache_root": tmp_path / "cache", "progress": False}
    straight = train(view, data, config, tmp_path / "a", **kw)
    half = train(view, data, config, tmp_path / "b", stop_after_epochs=1, **kw)
    assert len(half.history) == 1 and not (tmp_path / "b" / "checkpoints" / "epoch-2").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train(view, data, config, tmp_path / "b", **kw)
    resumed = train(view, data, config, tmp_path / "b", resume=True, **kw)
    a = load_file(str(tmp_path / "a" / "checkpoints" / "epoch-2" / WEIGHTS_NAME))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "epoch-2" / WEIGHTS_NAME))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert resumed.best_epoch == straight.best_epoch
    changed = TrainConfig(**{**config.to_dict(), "lr": 1e-2, "seed": 1})
    with pytest.raises(ConfigError, match=r"differs in \['lr', 'seed'\]"):
        train(view, data, changed, tmp_path / "b", resume=True, **kw)


def test_live_prefill_matches_the_cache_up_to_fp16(view, data, tmp_path):
    config = TrainConfig(epochs=1, max_train_rows=80, **FAST)
    kw = {"backbone_path": "toy", "cache_root": tmp_path / "cache", "progress": False}
    cached = train(view, data, config, tmp_path / "cached", **kw)
    live_config = TrainConfig(**{**config.to_dict(), "use_cache": False})
    live = train(view, data, live_config, tmp_path / "live", **kw)
    assert live.history[0]["loss"] == pytest.approx(cached.history[0]["loss"], abs=2e-3)
    assert live.best_holdout_accuracy == pytest.approx(cached.best_holdout_accuracy, abs=0.1)
    assert not list((tmp_path / "cache").glob(".tmp*"))


def test_nce_centre_reaches_the_loss_of_every_step(view, data, tmp_path, monkeypatch):
    import revmux.train.trainer as trainer

    seen = []
    loss = trainer.mux_loss
    monkeypatch.setattr(trainer, "mux_loss", lambda *a, **kw: seen.append(kw["nce_centre"]) or loss(*a, **kw))
    config = TrainConfig(epochs=1, max_train_rows=40, nce_centre=True, **FAST)
    kw = {"backbone_path": "toy", "cache_root": tmp_path / "cache", "progress": False}
    centred = train(view, data, config, tmp_path / "centred", **kw)
    plain = train(
        view, data, TrainConfig(**{**config.to_dict(), "nce_centre": False}), tmp_path / "raw", **kw
    )
    steps = len(seen) // 2
    assert steps >= 1 and seen == [True] * steps + [False] * steps
    assert centred.history[0]["nce"] != plain.history[0]["nce"]


def test_each_epoch_logs_the_gradient_norm_the_optimizer_stepped_on(view, data, tmp_path, monkeypatch):
    """`grad_norm` / `grad_norm_max` in the history are the mean and largest global norm of the adapters'
    gradients over the epoch's steps, as the optimizer saw them (a spike before a collapse shows there)."""
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **kw):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(
            float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads])))
        )
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    kw = {"backbone_path": "toy", "cache_root": tmp_path / "cache", "progress": False}
    result = train(view, data, TrainConfig(epochs=2, max_train_rows=40, **FAST), tmp_path / "run", **kw)
    per_epoch = len(seen) // 2
    assert per_epoch >= 1 and len(seen) == 2 * per_epoch
    for h, norms in zip(result.history, (seen[:per_epoch], seen[per_epoch:]), strict=True):
        assert h["grad_norm_max"] == pytest.approx(max(norms), rel=1e-4)
        assert h["grad_norm"] == pytest.approx(sum(norms) / len(norms), rel=1e-4)
        assert 0 < h["grad_norm"] <= h["grad_norm_max"]


def test_holdout_accuracy_counts_every_row_of_each_grouping(view, data):
    """The hold-out (through evaluation's grouping loop) equals a direct count per step of rows."""
    model = MuxModel.from_backbone(view, n=2, k=1)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.mux.parameters():
            p.normal_(0.0, 0.3)
    rows = data.subset(range(45))  # odd: every grouping has a leftover
    flipped = [1 - y if i % 3 == 0 else y for i, y in enumerate(rows.labels)]  # gold != teacher somewhere
    source = LivePrefill(view, 1, TaskData(rows.texts, None, flipped, rows.label_names, "flipped"), 32)
    config = TrainConfig(**{**FAST, "batch_groups": 4})
    expected, agreed, kls = [], [], []
    with torch.no_grad():
        for r in range(2):
            perm = torch.randperm(len(source), generator=_generator(config.seed, 10_000 + r))
            correct = same = 0
            for rows in perm.split(config.rows_per_step):
                state, _, t_logits, labels = source.batch(rows)
                logits = model.forward_from_prefill(state, order=torch.arange(len(rows))).logits
                correct += int((logits.argmax(-1) == labels).sum())
                same += int((logits.argmax(-1) == t_logits.argmax(-1)).sum())
                t, s = t_logits.float().softmax(-1), logits.float().softmax(-1)
                kls += (t * (t.log() - s.log())).sum(-1).tolist()  # KL(teacher || student), row by row
            expected.append(correct / len(source))
            agreed.append(same / len(source))
    assert holdout_accuracy(model, source, config, groupings=2) == sum(expected) / 2
    accuracy, agreement, kl = holdout_scores(model, source, config, groupings=2)
    assert accuracy == sum(expected) / 2 and agreement == pytest.approx(sum(agreed) / 2, abs=1e-12)
    assert len(kls) == 2 * len(source) and kl == pytest.approx(sum(kls) / len(kls), rel=1e-4)
    assert kl > 0  # an untrained student does not match its teacher
    assert agreement * 2 * len(source) == round(agreement * 2 * len(source))  # a count: ties compare equal
    assert sum(agreed) != sum(expected)  # two measures: the teacher is not always right
    history = [{"epoch": e, "holdout_agreement": a} for e, a in ((1, 0.5), (2, 0.75), (3, 0.75), (4, 0.5))]
    assert best_epoch(history, "agreement") == (3, 0.75)  # ties: the later epoch
    history = [{"epoch": e, "holdout_accuracy": a} for e, a in ((1, 0.5), (2, 0.75), (3, 0.75))]
    assert best_epoch(history, "accuracy") == (2, 0.75)  # the first best, as before
    history = [{"epoch": e, "holdout_kl": v} for e, v in ((1, 0.3), (2, 0.1), (3, 0.1), (4, 0.2))]
    assert best_epoch(history, "kl") == (3, 0.1)  # the lowest KL; ties: the later epoch
    assert best_epoch([], "kl") == (0, -1.0)


def test_select_within_se_keeps_the_latest_epoch_within_the_holdouts_noise():
    """The demo run's hold-out agreement by epoch (200 rows): the best, epoch 4, is 1.25 points above epoch 8,
    less than one standard error (1.57 points), so one standard error keeps epoch 8; a tighter slack or a
    larger hold-out keeps the best; a later epoch outside the slack is never kept."""
    agreement = (0.875, 0.9025, 0.9425, 0.9475, 0.9425, 0.93, 0.935, 0.935)
    history = [{"epoch": e, "holdout_agreement": a} for e, a in enumerate(agreement, start=1)]
    assert best_epoch(history, "agreement") == (4, 0.9475)
    assert best_epoch(history, "agreement", 1.0, 200) == (8, 0.935)
    assert best_epoch(history, "agreement", 0.5, 200) == (5, 0.9425)  # floor 0.9396: epochs 6-8 fall below it
    assert best_epoch(history, "agreement", 1.0, 5000) == (4, 0.9475)  # se 0.32 points: epoch 5 is 0.5 below
    assert best_epoch(history, "agreement", 1.0, 0) == (4, 0.9475)  # rows unknown: the best itself
    worse = [*history, {"epoch": 9, "holdout_agreement": 0.90}]
    assert best_epoch(worse, "agreement", 1.0, 200) == (8, 0.935)
    accuracy = [{"epoch": e, "holdout_accuracy": a} for e, a in ((1, 0.8), (2, 0.81), (3, 0.805))]
    assert best_epoch(accuracy, "accuracy", 1.0, 200) == (3, 0.805)
    assert best_epoch(accuracy, "accuracy") == (2, 0.81)
    perfect = [{"epoch": e, "holdout_agreement": a} for e, a in ((1, 1.0), (2, 0.995))]
    assert best_epoch(perfect, "agreement", 1.0, 200) == (1, 1.0)  # no spread at p = 1: the best


@pytest.mark.parametrize(
    ("value", "select_on"), [(-1.0, "agreement"), (float("inf"), "agreement"), (1.0, "kl")]
)
def test_select_within_se_rejects_what_it_cannot_count(value, select_on):
    with pytest.raises(ConfigError, match="--select-within-se"):
        TrainConfig(select_within_se=value, select_on=select_on)


def test_select_on_agreement_keeps_the_last_epoch_most_like_the_teacher(view, data, tmp_path):
    config = TrainConfig(epochs=3, max_train_rows=120, select_on="agreement", **FAST)
    result = train(
        view, data, config, tmp_path / "r", backbone_path="toy", cache_root=tmp_path / "c", progress=False
    )
    agreements = [h["holdout_agreement"] for h in result.history]
    best = max(agreements)
    assert result.best_epoch == max(i + 1 for i, a in enumerate(agreements) if a == best)
    assert result.best_holdout_accuracy == result.history[result.best_epoch - 1]["holdout_accuracy"]
    log = json.loads((tmp_path / "r" / LOG_NAME).read_text())
    assert log["best_holdout_agreement"] == best and log["config"]["select_on"] == "agreement"
    with pytest.raises(ConfigError, match="--select-on must be 'agreement', 'accuracy' or 'kl'"):
        TrainConfig(select_on="loss")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epochs", 0, "--epochs must be an integer >= 1, got 0"),
        ("n", 1, "--n must be an integer >= 2"),
        ("k", -1, "--k must be an integer >= 0, got -1"),
        ("batch_groups", 0, "--batch-groups must be an integer >= 1"),
        ("lr", 0.0, "--lr must be > 0, got 0.0"),
        ("lambda_nce", -1.0, "--lambda-nce must be a finite number >= 0"),
        ("holdout_fraction", 1.0, r"--holdout-fraction must be in \(0, 1\)"),
        ("warmup_fraction", 1.0, r"--warmup-fraction must be in \[0, 1\)"),
        ("schedule", "cosine", "--schedule must be 'onecycle' or 'constant'"),
        ("kind", "mixer", "--mux must be one of"),
        ("max_train_rows", 1, "--max-train-rows must be an integer >= 2 or unset"),
        ("use_cache", "yes", "--cache must be true or false"),
        ("nce_centre", "yes", "--nce-centre must be true or false"),
    ],
)
def test_config_errors_name_the_flag(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("warmup", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_onecycle_schedule_runs_for_any_step_count(warmup):
    for total in range(1, 13):
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([param], lr=1e-3)
        scheduler = _scheduler(optimizer, TrainConfig(warmup_fraction=warmup), total)
        for _ in range(total):
            optimizer.step()
            scheduler.step()
        assert 0 < optimizer.param_groups[0]["lr"] <= 1e-3


def test_config_dict_and_yaml_round_trip(tmp_path):
    config = TrainConfig(kind="ora", n=4, k=1, lr=5e-4, max_train_rows=100)
    assert TrainConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "run.yaml"
    path.write_text("kind: ora\nn: 4\nk: 1\nlr: 5e-4\nmax_train_rows: 100\n")  # YAML reads 5e-4 as a string
    assert TrainConfig.from_yaml(path) == config
    with pytest.raises(ConfigError, match=r"unknown keys \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        TrainConfig.from_yaml(path)


def _cli_train_args(view, data, tmp_path, rows: int) -> tuple:
    """Save the toy teacher and `rows` toy rows as a TSV under tmp_path; (teacher dir, `revmux train` args)."""
    teacher = tmp_path / "teacher"
    view.model.save_pretrained(teacher)
    view.tokenizer.save_pretrained(teacher)
    lines = ["sentence\tlabel"] + [
        f"{t}\t{y}" for t, y in zip(data.texts[:rows], data.labels[:rows], strict=True)
    ]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    args = [
        "train",
        "--teacher",
        str(teacher),
        "--train",
        str(tmp_path / "train.tsv"),
        "--text-col",
        "sentence",
    ]
    return teacher, args


def test_cli_trains_and_flags_override_yaml(view, data, tmp_path, monkeypatch):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    teacher, args = _cli_train_args(view, data, tmp_path, rows=80)
    (tmp_path / "run.yaml").write_text("epochs: 5\nbatch_groups: 8\nmax_length: 32\nk: 1\n")
    out = tmp_path / "adapter"
    args += ["--n", "2", "--mux", "revmux", "--out", str(out), "--config", str(tmp_path / "run.yaml")]
    result = CliRunner().invoke(app, [*args, "--epochs", "1", "--min-steps", "0"])
    assert result.exit_code == 0, result.output
    assert "kept epoch 1 of 1" in result.output and str(out) in result.output
    log = json.loads((out / LOG_NAME).read_text())
    assert log["config"]["epochs"] == 1 and log["config"]["batch_groups"] == 8 and log["task"] == "train"
    assert MuxModel.from_pretrained(out).config.backbone_path == str(teacher.resolve())
    bad = CliRunner().invoke(app, [*args, "--n", "1"])
    assert bad.exit_code == 2 and "--n must be an integer >= 2" in bad.output


def test_pca_composite_is_the_default_and_needs_pca_init():
    assert TrainConfig().mux_options == {
        "f_hidden": None,
        "up_hidden": None,
        "pca_composite": True,
        "natural_scale": False,
    }
    assert "pca_composite" not in TrainConfig(kind="ora").mux_options
    with pytest.raises(ConfigError, match=r"'ora' does not take option\(s\) \['pca_composite'\]"):
        TrainConfig(kind="ora", mux_options={"pca_composite": True})
    with pytest.raises(ConfigError, match="needs --pca-init"):
        TrainConfig(pca_init=False)
    off = TrainConfig(pca_init=False, mux_options={"pca_composite": "false"})
    assert off.mux_options["pca_composite"] is False


def test_mux_options_keyed_by_kind_and_flags_over_them():
    """Recipes key options by kind; a --mux-option flag (a flat key) wins over the recipe's."""
    recipe = {"revmux": {"pca_composite": True, "f_hidden": 16}, "ora": {"up_hidden": 8}}
    assert TrainConfig(mux_options=recipe).mux_options == {
        "f_hidden": 16,
        "up_hidden": None,
        "pca_composite": True,
        "natural_scale": False,
    }
    assert TrainConfig(kind="ora", mux_options=recipe).mux_options == {"f_hidden": None, "up_hidden": 8}
    assert TrainConfig(kind="adapter", mux_options=recipe).mux_options == {
        "f_hidden": None,
        "up_hidden": None,
    }
    flagged = TrainConfig(mux_options=recipe | {"pca_composite": "false"}, pca_init=True)
    assert flagged.mux_options["pca_composite"] is False and flagged.mux_options["f_hidden"] == 16


def test_configs_saved_before_mux_options_migrate():
    """Older train logs and checkpoints spelled the adapter knobs as flat keys."""
    old = TrainConfig.from_dict({"f_hidden": 8, "up_hidden": None, "up_norm": False, "pca_composite": False})
    assert old.mux_options == {
        "f_hidden": 8,
        "up_hidden": None,
        "pca_composite": False,
        "natural_scale": False,  # added since: its default
    }
    assert TrainConfig.from_dict({"kind": "ora", "pca_composite": False}).mux_options == {
        "f_hidden": None,
        "up_hidden": None,
    }
    with pytest.raises(ConfigError, match="up_norm is no longer supported"):
        TrainConfig.from_dict({"up_norm": True})


def test_cli_pca_composite_trains_saves_the_basis_and_reloads(view, data, tmp_path, monkeypatch):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    _, args = _cli_train_args(view, data, tmp_path, rows=len(data))
    out = tmp_path / "adapter"
    args += [
        "--n",
        "2",
        "--k",
        "1",
        "--epochs",
        "2",
        "--min-steps",
        "0",
        "--batch-groups",
        "8",
        "--max-length",
        "32",
    ]
    for bad, message in (("pca_composite=maybe", "takes true or false"), ("gain=2", "does not take")):
        refused = CliRunner().invoke(app, [*args, "--out", str(out), "--mux-option", bad])
        assert refused.exit_code == 2 and message in refused.output and not out.exists()
    result = CliRunner().invoke(app, [*args, "--out", str(out)])  # no flag: the PCA composite by default
    assert result.exit_code == 0, result.output
    log = json.loads((out / LOG_NAME).read_text())
    assert log["config"]["mux_options"]["pca_composite"] is True
    assert log["history"][-1]["ce"] < log["history"][0]["ce"]
    loaded = MuxModel.from_pretrained(out, view)
    assert loaded.config.options["pca_composite"]
    basis = loaded.mux.composite_basis
    torch.testing.assert_close(basis @ basis.T, torch.eye(basis.shape[0]), atol=1e-4, rtol=0)
    assert not torch.allclose(basis, torch.eye(basis.shape[0]))  # set from the PCA, not left at identity
    assert loaded.mux.composite_mean.abs().sum() > 0
    first = load_file(out / "checkpoints" / "epoch-1" / WEIGHTS_NAME)
    assert torch.equal(first["composite_basis"], basis)  # fixed: not trained, saved in every checkpoint
    batch = tokenize(view.tokenizer, data.subset(list(range(6))), max_length=32)
    with torch.inference_mode():
        out_logits = loaded(batch)
    assert out_logits.shape == (6, 2) and torch.isfinite(out_logits).all()


def test_cli_shared_prefix_on_an_encoder_is_a_clear_error(view, data, tmp_path, monkeypatch):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    _, args = _cli_train_args(view, data, tmp_path, rows=40)
    out = tmp_path / "adapter"
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--k", "1", "--shared-prefix"])
    assert result.exit_code == 2 and "shared_prefix needs a causal decoder" in result.output
    assert not (out / "mux_config.json").exists()


def test_cli_unlabeled_text_and_augmentation_join_training_labelled_by_the_teacher(
    view, data, tmp_path, monkeypatch
):
    monkeypatch.setenv("REVMUX_CACHE", str(tmp_path / "cache"))
    teacher, args = _cli_train_args(view, data, tmp_path, rows=80)
    (tmp_path / "extra.txt").write_text("\n".join(data.texts[100:140]) + "\n")  # rows not in --train
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    import revmux.train.trainer as trainer_module

    real_targets = trainer_module.teacher_targets

    def spy(labels, logits):
        seen.append((labels.clone(), logits.clone()))
        return real_targets(labels, logits)

    monkeypatch.setattr(trainer_module, "teacher_targets", spy)
    out = tmp_path / "adapter"
    common = [
        *args,
        "--n",
        "2",
        "--k",
        "1",
        "--max-length",
        "32",
        "--batch-groups",
        "8",
        "--epochs",
        "1",
        "--min-steps",
        "0",
    ]
    result = CliRunner().invoke(
        app,
        [*common, "--out", str(out), "--unlabeled", str(tmp_path / "extra.txt"), "--augment", "crop,dropout"]
        + ["--augment-copies", "1", "--lambda-state", "2"],
    )
    assert result.exit_code == 0, result.output
    log = json.loads((out / LOG_NAME).read_text())
    held = len(log["holdout_rows"])
    assert log["teacher_labelled_rows"] == 40 + (80 - held)  # the file's rows + one copy of each train row
    assert log["train_rows"] == 40 + 2 * (80 - held)
    assert log["config"]["augment"] == ["crop", "dropout"] and log["history"][0]["state"] > 0
    assert log["unlabeled_source"] == "unlabeled:extra.txt"
    labels = torch.cat([s[0] for s in seen])
    assert (labels == -1).sum() > 0 and labels.min() >= -1  # extra rows reach the loss unlabeled ...
    for lab, logits in seen:  # ... and the loss gets the teacher's label for them
        mask = lab < 0
        assert torch.equal(real_targets(lab, logits)[mask], logits.argmax(-1)[mask])
    (tmp_path / "bad.txt").write_text("fine\n\nstill fine\n")
    bad = CliRunner().invoke(
        app, [*common, "--out", str(tmp_path / "b"), "--unlabeled", str(tmp_path / "bad.txt")]
    )
    assert bad.exit_code == 2 and "bad.txt, line 2: empty line" in " ".join(bad.output.split()).replace(
        "/ ", "/"
    )


def test_min_steps_adds_epochs_only_where_the_data_is_small():
    config = TrainConfig(epochs=2, min_steps=10)
    assert config.epochs_for(3) == 4  # 3 steps an epoch: 4 epochs reach 10 steps
    assert config.epochs_for(10) == 2 and config.epochs_for(100) == 2  # --epochs is a floor
    assert TrainConfig(min_steps=0, epochs=3).epochs_for(1) == 3
    with pytest.raises(ConfigError, match="--min-steps must be an integer >= 0"):
        TrainConfig(min_steps=-1)


def test_steps_at_n_gives_wider_groups_the_steps_of_the_narrower_width():
    # an epoch at N=4 is half the steps of one at N=2 (32 groups of 4 rows a step): steps_at_n=2 doubles
    # both --epochs and --min-steps at N=4 and changes nothing at N=2
    two = TrainConfig(n=2, epochs=4, min_steps=940, steps_at_n=2)
    four = dataclasses.replace(two, n=4)
    assert two.width_scale == 1.0 and four.width_scale == 2.0
    assert two.epochs_for(518 * 2) == 4 and four.epochs_for(518) == 8  # full split: epochs decide
    assert two.epochs_for(59) == 16 and four.epochs_for(29) == 65  # small sets: 940 and 1,880 steps
    assert dataclasses.replace(four, steps_at_n=None).epochs_for(518) == 4  # unset: as written
    assert dataclasses.replace(four, n=3).epochs_for(518) == 6  # 4 * 3 / 2
    with pytest.raises(ConfigError, match="--steps-at-n must be an integer >= 1 or unset"):
        TrainConfig(steps_at_n=0)


def test_configs_saved_before_a_field_existed_keep_what_their_run_did():
    later = ("lambda_state", "min_steps", "augment", "augment_copies", "steps_at_n")
    old = {key: v for key, v in TrainConfig().to_dict().items() if key not in later}
    assert TrainConfig.from_dict(old).lambda_state == 4.0  # a user's YAML without it: today's default
    saved = TrainConfig.from_saved(old)  # a train_log.json or results row written before it existed
    assert saved.lambda_state == 0.0 and saved.min_steps == 0 and saved.augment == []
    assert saved.steps_at_n is None
    assert saved.augmentation(is_pair=True) == ([], 0)  # saved before pairs were augmented by default
    assert TrainConfig.from_saved(TrainConfig().to_dict()) == TrainConfig()  # present fields win


def test_default_augments_sentence_pairs_only_and_labels_come_from_the_teacher(view):
    single = toy_task(rows=60)
    pairs = TaskData(single.texts, list(reversed(single.texts)), single.labels, single.label_names, "pairs")
    config = TrainConfig(**FAST)  # augment and augment_copies unset: the measured default
    assert config.augmentation(is_pair=True) == (["crop", "dropout"], 1)
    assert config.augmentation(is_pair=False) == ([], 0)
    _, fit, held, _ = _prepare_rows(view, pairs, config, None)
    originals = len(pairs) - len(held)
    assert len(fit) == 2 * originals  # one teacher-labelled copy of every training row
    assert fit.labels[originals:] == [UNLABELED] * originals  # never the gold column
    assert len(_prepare_rows(view, single, config, None)[1]) == len(single) - len(held)
    off = TrainConfig(**FAST, augment="")  # `--augment ''`: none, even for pairs
    assert off.augment == [] and off.augmentation(is_pair=True) == ([], 0)
    assert len(_prepare_rows(view, pairs, off, None)[1]) == originals
    assert TrainConfig(**FAST, augment_copies=2).augmentation(is_pair=True) == (["crop", "dropout"], 2)
    assert TrainConfig(**FAST, augment=["repair"]).augmentation(is_pair=True) == (["repair"], 1)
    with pytest.raises(ConfigError, match="--augment-copies > 0 needs --augment"):
        TrainConfig(**FAST, augment="", augment_copies=1)


def test_the_hold_out_and_row_cap_do_not_depend_on_the_seed():
    data = TaskData(
        [f"text {i}" for i in range(400)], None, [i % 2 for i in range(400)], ["neg", "pos"], "toy"
    )
    splits = [
        select_rows(data, TrainConfig(n=2, k=1, seed=seed, max_train_rows=300, holdout_max_rows=50))[2:]
        for seed in (0, 1, 7)
    ]
    assert splits[0] == splits[1] == splits[2]  # seeds differ in init and order only: one cache serves all
    fit, held = splits[0]
    assert len(fit) + len(held) == 300 and not set(fit) & set(held)


@pytest.mark.parametrize("measure", ["agreement", "kl"])
def test_resume_with_another_select_on_repicks_from_the_saved_checkpoints(view, data, tmp_path, measure):
    """A finished run resumed with --select-on MEASURE keeps the epoch that measure picks, scoring from
    its checkpoint each saved epoch that lacks it (runs saved before it was logged), without training."""
    kw = {"backbone_path": "toy", "cache_root": tmp_path / "c", "progress": False}
    config = TrainConfig(epochs=3, max_train_rows=120, **{**FAST, "select_on": "accuracy"})
    key = f"holdout_{measure}"
    first = train(view, data, config, tmp_path / "r", **kw)
    logged = [h.pop(key) for h in first.history]
    state_file = tmp_path / "r" / "checkpoints" / "epoch-3" / STATE_NAME
    doc = json.loads(state_file.read_text())
    for h in doc["history"]:
        del h[key]  # as a run saved before the measure was logged
    state_file.write_text(json.dumps(doc))
    again = train(
        view,
        data,
        TrainConfig(**{**config.to_dict(), "select_on": measure}),
        tmp_path / "r",
        resume=True,
        **kw,
    )
    scored = [h[key] for h in again.history]
    assert scored == pytest.approx(logged, abs=1e-9)
    assert [h["seconds"] for h in again.history] == [h["seconds"] for h in first.history]  # nothing retrained
    best = max(scored) if measure == "agreement" else min(scored)
    assert again.best_epoch == max(i + 1 for i, a in enumerate(scored) if a == best)  # ties: the later
    published = load_file(tmp_path / "r" / WEIGHTS_NAME)
    kept = load_file(tmp_path / "r" / "checkpoints" / f"epoch-{again.best_epoch}" / WEIGHTS_NAME)
    assert all(torch.equal(published[k], kept[k]) for k in kept)
    log = json.loads((tmp_path / "r" / LOG_NAME).read_text())
    assert log["config"]["select_on"] == measure and log["best_epoch"] == again.best_epoch
    assert log[f"best_{key}"] == scored[again.best_epoch - 1]


def test_resume_with_select_within_se_repicks_without_training(view, data, tmp_path):
    """--select-within-se picks the epoch kept without changing training: a finished run resumed with it
    keeps the epoch the rule picks from the logged hold-out agreement, retrains nothing and publishes it."""
    kw = {"backbone_path": "toy", "cache_root": tmp_path / "c", "progress": False}
    config = TrainConfig(epochs=3, max_train_rows=120, **FAST)
    first = train(view, data, config, tmp_path / "r", **kw)
    wide = TrainConfig(**{**config.to_dict(), "select_within_se": 1e6})  # every epoch is within the slack
    again = train(view, data, wide, tmp_path / "r", resume=True, **kw)
    assert [h["seconds"] for h in again.history] == [h["seconds"] for h in first.history]
    assert again.best_epoch == 3
    published = load_file(tmp_path / "r" / WEIGHTS_NAME)
    kept = load_file(tmp_path / "r" / "checkpoints" / "epoch-3" / WEIGHTS_NAME)
    assert all(torch.equal(published[k], kept[k]) for k in kept)
    log = json.loads((tmp_path / "r" / LOG_NAME).read_text())
    assert log["best_epoch"] == 3 and log["config"]["select_within_se"] == 1e6


def test_training_runs_the_tail_packed_where_the_backbone_packs_rows(view):
    """The trained model is the served one: its tail packs composites on encoders that can (the gradients
    through it are those of the padded tail, tests/test_model_runs.py)."""
    model = _new_model(view, TrainConfig(**FAST), "toy", None)
    assert view.packs_rows and model.packs_tail
