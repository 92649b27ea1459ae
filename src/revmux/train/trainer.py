"""Adapter training: `TrainConfig`, and `train`, a plain loop over cached layer-k states.

What it is: the recipe of docs/method.md section 4. The backbone and its head stay frozen; only the
multiplexer's adapters train, with CE + InfoNCE + KD (+ the group cosine penalty) against the teacher
outputs stored by `revmux.train.cache`. Groups are redrawn every epoch from a generator seeded by
(seed, epoch); checkpoints are selected on a slice held out from TRAIN; every epoch is checkpointed
(adapter + optimizer state as safetensors, scalars as JSON, no pickle: `revmux.train.checkpoint`) so
that `resume=True` ends with the same weights as an uninterrupted run.
What it is not: teacher fine-tuning (`revmux.train.finetune`), evaluation on the reported split
(`revmux.evaluate`), or a general-purpose Trainer.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from revmux.backbones import BackboneView, LayerState, backbone_hash
from revmux.checkpoint import load_adapter_weights, write_json
from revmux.data import TaskData, split_fixed, split_holdout
from revmux.encoding import RequestEncoder
from revmux.errors import ConfigError, DataError
from revmux.model import MuxModel
from revmux.progress import StepProgress
from revmux.prompting import PromptSpec, shared_prefix_mask
from revmux.train.cache import LivePrefill, PrefillCache, build_cache, real_token_states
from revmux.train.checkpoint import (
    RunState,
    latest_checkpoint,
    publish_best,
    restore,
    resumable,
    save_checkpoint,
)
from revmux.train.config import TrainConfig
from revmux.train.extra import augment, with_extra
from revmux.train.losses import mux_loss, pooled, teacher_targets

LOG_NAME = "train_log.json"
HOLDOUT_GROUPINGS = 2
SPLIT_SEED = 0  # which rows train and which are held out, whatever the run's seed (select_rows)


class HoldoutScores(NamedTuple):
    """A model's hold-out measures (`holdout_scores`), each averaged over the same fixed groupings."""

    accuracy: float  # on the gold labels
    agreement: float  # with the teacher's answers (a count over rows, so equal counts compare equal)
    kl: float  # KL(teacher || student) of the class distributions, mean over rows


@dataclass
class TrainResult:
    """Where the adapter went and how the run went (history: one dict per epoch)."""

    out_dir: Path
    best_epoch: int
    best_holdout_accuracy: float
    history: list[dict[str, Any]]
    epochs: int  # epochs the schedule spans: config.epochs, or more for config.min_steps
    train_seconds: float
    cache_build_seconds: float
    trainable_params: int


def select_rows(data: TaskData, config: TrainConfig) -> tuple[TaskData, TaskData, list[int], list[int]]:
    """(train part, hold-out part, their row indices into `data`): max_train_rows, then a stratified hold-out.

    The split uses SPLIT_SEED, not the run's seed: runs of several seeds train and select on the same rows
    (they differ in initialisation and order only) and share one prefill/teacher cache."""
    # split on a stand-in whose texts are the row numbers: same labels, so the same stratified split
    proxy = TaskData(
        [str(i) for i in range(len(data))], None, list(data.labels), list(data.label_names), data.source
    )
    if config.max_train_rows is not None and len(data) > config.max_train_rows:
        proxy = split_fixed(proxy, config.max_train_rows, seed=SPLIT_SEED)[1]
    rest, held = split_holdout(
        proxy, config.holdout_fraction, seed=SPLIT_SEED, max_rows=config.holdout_max_rows
    )
    fit_idx, held_idx = [int(t) for t in rest.texts], [int(t) for t in held.texts]
    return data.subset(fit_idx), data.subset(held_idx), fit_idx, held_idx


def train(
    view: BackboneView,
    train_data: TaskData,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    backbone_path: str | Path,
    task: str | None = None,
    resume: bool = False,
    cache_root: str | Path | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    prompt: PromptSpec | None = None,
    recipe: str | None = None,
    unlabeled: TaskData | None = None,
) -> TrainResult:
    """Train the adapters of a fresh (or resumed) MuxModel on `train_data`; write checkpoints to `out_dir`.

    `out_dir` ends up holding the best epoch's adapter (mux_config.json + mux_model.safetensors),
    `checkpoints/epoch-{i}/` and train_log.json. `stop_after_epochs` stops early (to simulate an
    interruption in tests); the schedule still spans `config.epochs`. `prompt`: a prompted teacher's spec
    (revmux.prompting): rows become its prompts, and the adapter saves it for eval, predict and serve.
    `recipe` (the name of the recipe the config came from, `revmux.recipes`) is recorded in train_log.json.
    `unlabeled`: extra text of the task (`revmux.train.extra.read_unlabeled`), labelled by the teacher and
    added to the training part (never to the hold-out), as are `config.augment`'s rows.
    """
    out_dir = Path(out_dir)
    train_data, fit, held, held_idx = _prepare_rows(view, train_data, config, prompt, unlabeled)
    sha = backbone_hash(view.model)
    fingerprint = {"backbone": sha, "train_data": train_data.sha256()}
    if unlabeled is not None:
        fingerprint["unlabeled"] = unlabeled.sha256()
    latest = latest_checkpoint(out_dir)
    if latest is not None and not resume:
        raise ConfigError(
            f"{out_dir} already holds checkpoints (latest {latest.name}); pass --resume to continue that run, "
            "or choose a new --out."
        )
    resumed = resumable(latest, config, fingerprint) if latest is not None else None
    model = _new_model(view, config, backbone_path, task, prompt)
    start = time.perf_counter()
    sources = [_source(view, config, part, cache_root, progress, sha) for part in (fit, held)]
    cache_seconds = time.perf_counter() - start
    steps_per_epoch = max(1, len(fit) // config.rows_per_step)
    epochs = config.epochs_for(steps_per_epoch)
    info = {
        "config": config.to_dict(), "recipe": recipe, "task": task, "backbone_path": str(backbone_path),
        "backbone_hash": sha, "train_rows": len(fit), "teacher_labelled_rows": sum(y < 0 for y in fit.labels),
        "unlabeled_source": unlabeled.source if unlabeled is not None else None, "holdout_rows": held_idx,
        "steps_per_epoch": steps_per_epoch, "epochs": epochs, "cache_build_seconds": cache_seconds,
        "cache_hit": all(s.hit for s in sources) if config.use_cache else None,
        "trainable_params": model.num_trainable(),
    }  # fmt: skip
    optimizer = torch.optim.AdamW(model.mux.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config, steps_per_epoch * epochs)
    if latest is not None and resumed is not None:
        state = restore(latest, resumed, model, optimizer, scheduler)
        scratch = functools.partial(_new_model, view, config, backbone_path, task, prompt)
        _repick(state, config, sources[1], scratch, out_dir)  # --select-on may differ from the saved run's
        publish_best(out_dir, state.best_epoch)  # in case the interruption came between the two
    else:
        state = RunState()
        if config.pca_init and hasattr(model.mux, "init_down_pca"):
            model.mux.init_down_pca(pca_states(sources[0], skip_shared_prefix=model.config.shared_prefix))
    run = _Run(
        model, sources, optimizer, scheduler, config, out_dir, info, fingerprint, steps_per_epoch, epochs
    )
    _epochs(run, state, progress, stop_after_epochs)
    seconds = _write_log(out_dir, info, state)
    return TrainResult(
        out_dir=out_dir,
        best_epoch=state.best_epoch,
        best_holdout_accuracy=state.history[state.best_epoch - 1]["holdout_accuracy"],
        history=state.history,
        epochs=epochs,
        train_seconds=seconds,
        cache_build_seconds=cache_seconds,
        trainable_params=model.num_trainable(),
    )


def _prepare_rows(
    view: BackboneView,
    data: TaskData,
    config: TrainConfig,
    prompt: PromptSpec | None,
    unlabeled: TaskData | None = None,
) -> tuple[TaskData, TaskData, TaskData, list[int]]:
    """(the rows as the model's encoder sends them, the train part with its augmented and unlabeled rows
    appended, the hold-out, its row indices). Augmentation works on the raw rows, before any prompt."""
    if data.has_unlabeled:
        raise DataError(
            f"{data.source}: training data needs gold labels; pass unlabeled text as --unlabeled."
        )
    _check_labels(view, data)
    fit, held, _, held_idx = select_rows(data, config)
    if len(fit) < config.n:
        raise DataError(
            f"{data.source}: {len(fit)} training rows after the hold-out, need >= --n {config.n}."
        )
    kinds, copies = config.augmentation(fit.is_pair)
    extra = [augment(fit, kinds, copies, seed=config.seed)]
    extra += [unlabeled] if unlabeled is not None else []
    encoder = RequestEncoder(view.tokenizer, config.max_length, prompt)  # = model.encoder's
    return encoder.prepare(data), encoder.prepare(with_extra(fit, *extra)), encoder.prepare(held), held_idx


@dataclass
class _Run:
    """What every epoch of one training run uses."""

    model: MuxModel
    sources: list[Any]  # (train part, hold-out): PrefillCache or LivePrefill
    optimizer: torch.optim.Optimizer
    scheduler: Any
    config: TrainConfig
    out_dir: Path
    info: dict[str, Any]
    fingerprint: dict[str, str]
    steps_per_epoch: int
    epochs: int


def _epochs(run: _Run, state: RunState, progress: bool, stop_after_epochs: int | None) -> None:
    """Epochs state.epoch + 1 .. run.epochs: train, hold-out accuracy, checkpoint, publish the best, log."""
    c = run.config
    with _progress_bar(progress, run.steps_per_epoch * run.epochs, state.step, run.epochs) as bar:
        for epoch in range(state.epoch + 1, run.epochs + 1):

            def on_step(loss: float, rate: float, e: int = epoch) -> None:
                bar.advance(epoch=e, loss=loss, rate=rate)

            stats = _train_epoch(
                run.model,
                run.sources[0],
                run.optimizer,
                run.scheduler,
                c,
                epoch,
                run.steps_per_epoch,
                on_step,
            )
            t0 = time.perf_counter()
            stats |= holdout_log(holdout_scores(run.model, run.sources[1], c))
            stats["eval_seconds"] = time.perf_counter() - t0
            state.epoch, state.step = epoch, state.step + run.steps_per_epoch
            state.history.append({"epoch": epoch, **stats})
            state.best_epoch, state.best_metric = best_epoch(
                state.history, c.select_on, c.select_within_se, len(run.sources[1])
            )
            save_checkpoint(run.out_dir, run.model, run.optimizer, run.scheduler, state, c, run.fingerprint)
            publish_best(run.out_dir, state.best_epoch)
            _write_log(run.out_dir, run.info, state)
            if stop_after_epochs is not None and epoch >= stop_after_epochs:
                break


def holdout_log(scores: HoldoutScores) -> dict[str, float]:
    """An epoch's hold-out measures as its history keys: holdout_accuracy, holdout_agreement, holdout_kl."""
    return {f"holdout_{name}": value for name, value in scores._asdict().items()}


def best_epoch(
    history: list[dict[str, Any]], select_on: str, within_se: float = 0.0, rows: int = 0
) -> tuple[int, float]:
    """(epoch kept, its measure) by hold-out `select_on`: the first epoch of best accuracy; the last of best
    agreement with the teacher, or of lowest KL to it (ties keep the later epoch); (0, -1.0) if empty.

    With `within_se` > 0 (accuracy or agreement, measured on `rows` hold-out rows): the latest epoch whose
    measure is within `within_se` binomial standard errors, sqrt(p (1 - p) / rows), of the best one's p. On a
    small hold-out the best epoch differs from its neighbours by noise, and the one-cycle schedule's later
    epochs, at a lower learning rate, are the better bet."""
    best, metric = 0, -1.0
    sign = -1.0 if select_on == "kl" else 1.0  # kl: lower is better
    key = f"holdout_{select_on}"
    for h in history:
        value = h[key]
        if not best or sign * value > sign * metric or (select_on != "accuracy" and value == metric):
            best, metric = h["epoch"], value
    if not best or not within_se or rows < 1 or select_on == "kl":
        return best, metric
    floor = metric - within_se * math.sqrt(max(metric * (1.0 - metric), 0.0) / rows)
    latest = max((h for h in history if h[key] >= floor), key=lambda h: h["epoch"])
    return latest["epoch"], latest[key]


def _repick(
    state: RunState,
    config: TrainConfig,
    held: PrefillCache | LivePrefill,
    new_model: Callable[[], MuxModel],
    out_dir: Path,
) -> None:
    """On resume: score the saved epochs that lack `config.select_on`'s hold-out measure (runs saved before
    that measure was logged) from their checkpoints, then keep the best epoch by it. Training does not
    depend on the measure, so the result is the run `config` would have made."""
    key = f"holdout_{config.select_on}"
    scratch = None
    for h in state.history:
        if key not in h:
            scratch = scratch or new_model()
            checkpoint = out_dir / "checkpoints" / f"epoch-{h['epoch']}"
            scratch.mux.load_state_dict(load_adapter_weights(checkpoint, scratch.mux))
            scores = holdout_log(holdout_scores(scratch, held, config))
            h.setdefault("holdout_accuracy", scores.pop("holdout_accuracy"))
            h.update(scores)
    state.best_epoch, state.best_metric = best_epoch(
        state.history, config.select_on, config.select_within_se, len(held)
    )


def holdout_accuracy(
    model: MuxModel,
    source: PrefillCache | LivePrefill,
    config: TrainConfig,
    groupings: int = HOLDOUT_GROUPINGS,
) -> float:
    """Accuracy on `source` averaged over `groupings` random groupings (`holdout_scores`'s first)."""
    return holdout_scores(model, source, config, groupings)[0]


@torch.no_grad()
def holdout_scores(
    model: MuxModel,
    source: PrefillCache | LivePrefill,
    config: TrainConfig,
    groupings: int = HOLDOUT_GROUPINGS,
) -> HoldoutScores:
    """Accuracy on the gold labels, agreement with the teacher's answers and KL(teacher || student) on
    `source`, each averaged over `groupings` random groupings with fixed seeds (the same every epoch),
    through evaluation's grouping loop (`revmux.evaluate.predict_grouping`)."""
    from revmux.evaluate import predict_grouping  # the grouping loop of `revmux eval`

    was_training = model.training
    model.eval()
    labels = torch.as_tensor(source.labels, dtype=torch.long)
    classes = model.view.num_labels
    teacher = torch.zeros(len(labels), classes)  # its log-probabilities, from the same batches as the states

    def states(rows: Tensor) -> LayerState:
        state, _, t_logits, _ = source.batch(rows)
        teacher[rows.cpu()] = t_logits.float().log_softmax(-1).cpu()
        return state

    accuracies, agreed, kl = [], 0, 0.0
    for r in range(groupings):
        perm = torch.randperm(len(source), generator=_generator(config.seed, 10_000 + r))
        pred = torch.full_like(labels, -1)
        logits = torch.zeros(len(labels), classes)
        predict_grouping(model, states, perm, config.rows_per_step, pred, logits_out=logits)
        accuracies.append(int((pred == labels).sum()) / len(source))
        agreed += int((pred == teacher.argmax(-1)).sum())
        kl += float(F.kl_div(logits.log_softmax(-1), teacher, log_target=True, reduction="sum"))
    model.train(was_training)
    # agreement from the count, so that equal counts are equal floats (ties keep the later epoch)
    n = groupings * len(source)
    return HoldoutScores(sum(accuracies) / groupings, agreed / n, kl / n)


@torch.no_grad()
def pca_states(
    source: PrefillCache | LivePrefill, *, skip_shared_prefix: bool = False, max_tokens: int = 16384
) -> Tensor:
    """(M, d) layer-k states of real tokens for the PCA init; with `skip_shared_prefix`, only the columns
    after the prompt prefix common to the rows (the only columns a shared-prefix model multiplexes)."""

    def common_prefix(state: LayerState) -> Tensor:  # the rows of a chunk as one group, no read to stop at
        h = state.hidden.unsqueeze(0)
        return shared_prefix_mask(
            h, state.attention_mask.unsqueeze(0), torch.tensor([h.shape[2]], device=h.device)
        )[0]

    exclude = common_prefix if skip_shared_prefix else None
    return real_token_states(source, max_tokens=max_tokens, exclude=exclude)


# ----------------------------------------------------------------------------------------------- internals


def _generator(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + salt) % (2**63 - 1))


def _check_labels(view: BackboneView, data: TaskData) -> None:
    if data.num_classes != view.num_labels:
        raise DataError(
            f"{data.source} has {data.num_classes} classes {data.label_names}, the teacher's head has "
            f"{view.num_labels} {view.label_names}. Pass a teacher fine-tuned on this task."
        )
    names = [n.lower() for n in view.label_names]
    ours = [n.lower() for n in data.label_names]
    if names != ours and sorted(names) == sorted(ours):
        raise DataError(
            f"the teacher orders its labels {view.label_names}, the data {data.label_names}: label ids would "
            "not match. Re-order the data's label names or fix the teacher's id2label."
        )


def _new_model(
    view: BackboneView, config: TrainConfig, backbone_path: str | Path, task: str | None, prompt: Any = None
) -> MuxModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # repeatable adapter init without touching the caller's RNG
        model = MuxModel.from_backbone(
            view, kind=config.kind, n=config.n, k=config.k, backbone_path=backbone_path, task=task,
            max_length=config.max_length, options=config.mux_options, shared_prefix=config.shared_prefix,
            prompt=prompt,
        )  # fmt: skip
    return model.to(view.device)  # where the view packs rows, the tail trains packed, as it serves


def _source(
    view: BackboneView, config: TrainConfig, data: TaskData, cache_root: Any, progress: bool, sha: str
) -> PrefillCache | LivePrefill:
    if not config.use_cache:
        return LivePrefill(view, config.k, data, config.max_length)
    return build_cache(
        view, config.k, data, config.max_length, cache_root=cache_root, progress=progress, backbone_sha=sha
    )


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    if config.schedule == "constant":
        return None
    pct = config.warmup_fraction
    if abs(pct * total_steps - 1) < 1e-9:  # OneCycleLR divides by pct * total - 1
        pct = 2 / total_steps if total_steps > 2 else 0.0
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=pct
    )


def _progress_bar(enabled: bool, total: int, completed: int, epochs: int) -> StepProgress:
    """Progress over all steps: epoch, loss (running mean), examples/s and ETA (revmux.progress)."""
    fields = "epoch {epoch}/{epochs}, loss {loss:.4f}, {rate:.0f} ex/s"
    return StepProgress("train", total, fields=fields, enabled=enabled, completed=completed, epochs=epochs)


def _train_epoch(
    model: MuxModel,
    source: PrefillCache | LivePrefill,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    epoch: int,
    steps: int,
    on_step: Callable[[float, float], None],
) -> dict[str, Any]:
    """One epoch over a fresh random grouping: `steps` steps of rows_per_step consecutive permuted rows."""
    model.train()
    N, R = config.n, config.rows_per_step
    perm = torch.randperm(len(source), generator=_generator(config.seed, epoch))
    sums = {"loss": 0.0, "ce": 0.0, "nce": 0.0, "kd": 0.0, "state": 0.0, "cos": 0.0}
    examples, start = 0, time.perf_counter()
    params = [p for p in model.mux.parameters() if p.requires_grad]
    norms: list[float] = []
    for s in range(steps):
        rows = perm[s * R : (s + 1) * R]
        rows = rows[: len(rows) - len(rows) % N]
        state, t_reps, t_logits, labels = source.batch(rows)
        labels = teacher_targets(labels, t_logits)  # unlabeled rows: the teacher's
        out = model.forward_from_prefill(
            state, order=torch.arange(len(rows)), return_down=config.lambda_cos > 0
        )
        down_mask = (
            None if out.down is None else state.attention_mask.view(-1, N, state.attention_mask.shape[1])
        )
        loss, parts = mux_loss(
            out.logits, pooled(out.reps, state.attention_mask), t_reps, t_logits, labels,
            down=out.down, down_mask=down_mask, lambda_nce=config.lambda_nce,
            lambda_kd=config.lambda_kd, lambda_cos=config.lambda_cos, lambda_state=config.lambda_state,
            nce_centre=config.nce_centre,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for name in sums:
            sums[name] += parts[name]
        examples += len(rows)
        on_step(sums["loss"] / (s + 1), examples / max(time.perf_counter() - start, 1e-9))
    seconds = time.perf_counter() - start
    model.eval()
    means = {name: v / steps for name, v in sums.items()}
    return {
        **means,
        "grad_norm": sum(norms) / max(len(norms), 1),
        "grad_norm_max": max(norms, default=0.0),
        "examples": examples,
        "seconds": seconds,
        "examples_per_s": examples / max(seconds, 1e-9),
    }


def _write_log(out_dir: Path, info: dict[str, Any], state: RunState) -> float:
    """train_log.json: the run's facts plus the history so far; returns train seconds (all runs)."""
    seconds = sum(h["seconds"] + h["eval_seconds"] for h in state.history)
    train_only = sum(h["seconds"] for h in state.history)
    examples = sum(h["examples"] for h in state.history)
    # the kept epoch's hold-out measures (None where an older run did not log one)
    kept = state.history[state.best_epoch - 1] if state.best_epoch else {}
    log = {
        **info,
        "epochs_completed": state.epoch,
        "history": state.history,
        "best_epoch": state.best_epoch,
        **{f"best_holdout_{name}": kept.get(f"holdout_{name}") for name in HoldoutScores._fields},
        "train_seconds": seconds,
        "examples_per_s": examples / train_only if train_only else 0.0,
    }
    write_json(out_dir / LOG_NAME, log)
    return seconds
