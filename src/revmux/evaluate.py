"""Evaluation of a MuxModel over R random groupings (docs/method.md section 5).

What it is: `evaluate(model, data)` tokenizes and prefills the evaluation set once (layers [0, k)),
takes the teacher's (N = 1) predictions from the same states, then re-draws the groups R times and
reports accuracy mean and std over groupings, agreement with the teacher, partner sensitivity and
per-class accuracy, as an `EvalReport` whose `to_dict()` is the JSON `revmux eval --json` prints;
`grouping_predictions` returns the per-row predictions behind it. Its knobs are the fields of
`revmux.eval_config.EvalConfig` (the flags of `revmux eval`), which also asks for the optional
adversarial-partner (`revmux.adversarial`) and fallback (`revmux.fallback`) measurements.
What it is not: checkpoint selection (that uses a hold-out of TRAIN, in `revmux.train`) or timing
(`revmux.bench`). The per-row layer-k states are kept in memory: evaluation sets are small.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from revmux.backbones import LayerState
from revmux.backbones.quantize import int8_smoothing, quantize_backbone
from revmux.data import TaskData, tokenize
from revmux.errors import ConfigError, DataError
from revmux.eval_config import EvalConfig
from revmux.model import MuxModel
from revmux.progress import track


@dataclass
class EvalReport:
    """Accuracies are fractions in [0, 1]; `partner_sensitivity` is None when groupings < 2.

    Per-class accuracies are None for classes without rows in the evaluation set. `extra` holds the
    optional measurements (`revmux eval --adversarial-partners / --fallback-margin / --quantize`).
    """

    task: str
    backbone: str
    mux: str
    n: int
    k: int
    groupings: int
    accuracy_mean: float
    accuracy_std: float
    teacher_accuracy: float
    agreement: float
    partner_sensitivity: float | None
    per_class_accuracy: dict[str, float | None]
    teacher_per_class_accuracy: dict[str, float | None]
    bound: float
    trainable_params: int
    num_examples: int
    extra: dict[str, Any] = field(default_factory=dict)  # what EvalConfig asked for beyond accuracy

    def to_dict(self) -> dict[str, Any]:
        """The fields, with `extra`'s keys (quantize, adversarial, fallback) at the top level when set."""
        out = dataclasses.asdict(self)
        return out | out.pop("extra")


@dataclass
class Prefilled:
    """Layer-k states of every row at the set's full padded width T, padding columns included."""

    hidden: Tensor  # (M, T, d)
    mask: Tensor  # (M, T)

    def rows(self, view: Any, idx: Tensor) -> LayerState:
        """A LayerState for rows `idx`, trimmed to the columns holding their real tokens (`view.trim`)."""
        return view.trim(LayerState(self.hidden[idx], self.mask[idx]))


def evaluate(
    model: MuxModel,
    data: TaskData,
    *,
    config: EvalConfig | None = None,
    progress: bool = False,
    task: str | None = None,
    **knobs: Any,
) -> EvalReport:
    """Accuracy of `model` on `data` as mean and std over `groupings` random groupings, beside the teacher.

    The knobs are the fields of `config` (an EvalConfig, default its defaults), each overridable by the
    keyword of the same name (`groupings=3`, `batch_size=8`, ...); an unknown keyword is refused. See
    `grouping_predictions` for how groups are drawn. `quantize` converts the model's backbone in place
    first; `adversarial_partners` and `fallback_margin` add their measurements to the report's `extra`.
    `task` names the data in the report (default: the model's task, else the data's source).
    """
    cfg = EvalConfig.resolve(config, knobs)
    quantize_backbone(model.view, cfg.quantize)
    kw = {"groupings": cfg.groupings, "batch_size": cfg.batch_size, "seed": cfg.seed}
    kw["max_length"] = cfg.max_length
    states, probs, preds = grouping_outputs(model, data, **kw, progress=progress)
    teacher = probs.argmax(-1)
    labels = torch.tensor(data.labels)
    measures = _summary(preds, teacher, labels)
    extra = _partner_checks(model, data, cfg, kw)
    if cfg.serve_window is not None:
        served = served_predictions(
            model, states, teacher, cfg.serve_window, groupings=cfg.groupings, batch_size=cfg.batch_size,
            seed=cfg.seed,
        )  # fmt: skip
        extra["served"] = {"window": cfg.serve_window, **_summary(served, teacher, labels)}
    return EvalReport(
        task=task or model.config.task or data.source,
        backbone=model.config.backbone_path or model.view.model_type,
        mux=model.config.kind,
        n=model.n,
        k=model.k,
        groupings=cfg.groupings,
        accuracy_mean=measures["accuracy_mean"],
        accuracy_std=measures["accuracy_std"],
        teacher_accuracy=_share(teacher == labels),
        agreement=measures["agreement"],
        partner_sensitivity=measures["partner_sensitivity"],
        per_class_accuracy=_per_class(preds, labels, data.label_names),
        teacher_per_class_accuracy=_per_class([teacher], labels, data.label_names),
        bound=model.config.speedup_bound,
        trainable_params=model.num_trainable(),
        num_examples=len(data),
        extra=extra,
    )


def _summary(preds: list[Tensor], teacher: Tensor, labels: Tensor) -> dict[str, float | None]:
    """Accuracy mean and std, agreement and partner sensitivity of per-grouping predictions."""
    accs = [_share(p == labels) for p in preds]
    changed = [_share(a != b) for a, b in zip(preds, preds[1:], strict=False)]
    return {
        "accuracy_mean": statistics.fmean(accs),
        "accuracy_std": statistics.pstdev(accs),
        "agreement": statistics.fmean(_share(p == teacher) for p in preds),
        "partner_sensitivity": statistics.fmean(changed) if changed else None,
    }


def served_predictions(
    model: MuxModel,
    states: Prefilled,
    teacher: Tensor,
    window: int,
    *,
    groupings: int = 10,
    batch_size: int = 64,
    seed: int = 0,
) -> list[Tensor]:
    """One prediction tensor (M,) per grouping, with groups drawn as `revmux serve` draws them.

    Grouping r takes the rows in the random arrival order `grouping_permutation(M, seed + r)`, cuts it into
    windows of `window` requests (the server's batch) and, in each window, groups requests of similar
    token counts: the window sorted longest first, consecutive runs of N the groups, the window's last
    (size mod N) rows at N = 1, as the server runs them. `states` and `teacher` come from `grouping_outputs`.
    """
    if window < 1:
        raise ConfigError(f"--serve-window must be an integer >= 1, got {window!r}.")
    view, N = model.view, model.n
    M = teacher.shape[0]
    lengths = states.mask.sum(1)
    preds: list[Tensor] = []
    with torch.inference_mode():
        for r in range(groupings):
            pred = teacher.clone()
            for arrivals in grouping_permutation(M, seed + r).split(window):
                sorted_rows = arrivals[torch.argsort(lengths[arrivals], descending=True, stable=True)]
                whole = sorted_rows[: (len(sorted_rows) // N) * N] if N > 1 else sorted_rows[:0]
                predict_grouping(
                    model, lambda idx: states.rows(view, idx.to(view.device)), whole, batch_size * N, pred
                )
            preds.append(pred)
    return preds


def _partner_checks(model: MuxModel, data: TaskData, cfg: EvalConfig, kw: dict[str, Any]) -> dict[str, Any]:
    """The optional measurements of `cfg`: the backbone's quantization, adversarial partners (a dict) and
    the fallback sweep (a list of dicts); empty when none was asked for."""
    out: dict[str, Any] = {} if cfg.quantize == "none" else {"quantize": cfg.quantize}
    if cfg.quantize == "int8":
        out["int8_smooth"] = int8_smoothing(model.view)  # the smoothing alpha (None: plain dynamic int8)
    if cfg.adversarial_partners is not None:
        from revmux.adversarial import adversarial_partners

        out["adversarial"] = adversarial_partners(
            model, data, candidates=cfg.adversarial_partners, rows=cfg.adversarial_rows,
            batch_size=cfg.batch_size, seed=cfg.seed, max_length=cfg.max_length,
        ).to_dict()  # fmt: skip
    if cfg.fallback_margin is not None:
        from revmux.fallback import fallback_sweep

        out["fallback"] = fallback_sweep(model, data, cfg.fallback_margin, **kw)
    return out


def grouping_predictions(
    model: MuxModel,
    data: TaskData,
    *,
    groupings: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    max_length: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, list[Tensor]]:
    """(teacher predictions (M,), one prediction tensor (M,) per grouping), all in data order.

    Grouping r is a random permutation of all rows (`grouping_permutation(M, seed + r)`) whose consecutive
    runs of N are the groups, `batch_size` groups per forward pass; the last M mod N rows of it run at
    N = 1, i.e. get the teacher's prediction (as MuxModel runs leftovers). N = 1 is the teacher.
    """
    _, probs, preds = grouping_outputs(
        model, data, groupings=groupings, batch_size=batch_size, seed=seed, max_length=max_length,
        progress=progress,
    )  # fmt: skip
    return probs.argmax(-1), preds


def grouping_outputs(
    model: MuxModel,
    data: TaskData,
    *,
    groupings: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    max_length: int | None = None,
    progress: bool = False,
) -> tuple[Prefilled, Tensor, list[Tensor]]:
    """What `grouping_predictions` computes, with what it computes it from: (the prefilled layer-k states
    and masks, the teacher's class probabilities (M, C), one prediction tensor (M,) per grouping)."""
    if groupings < 1:
        raise ConfigError(f"--groupings must be an integer >= 1, got {groupings!r}.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be an integer >= 1, got {batch_size!r}.")
    view = model.view
    data = prepared(model, data, max_length)
    model.eval()
    N, M = model.n, len(data)
    chunk = batch_size * N
    m = (M // N) * N if N > 1 else 0  # rows in full groups
    preds: list[Tensor] = []
    with torch.inference_mode():
        states, probs = prefill_rows(model, data, chunk, max_length, progress)
        teacher = probs.argmax(-1)
        for r in _steps(range(groupings), progress, "groupings"):
            perm = grouping_permutation(M, seed + r)
            pred = teacher.clone()  # leftovers (and every row when N = 1) run unmultiplexed
            predict_grouping(model, lambda idx: states.rows(view, idx.to(view.device)), perm[:m], chunk, pred)
            preds.append(pred)
    return states, probs, preds


def grouping_permutation(num_rows: int, seed: int) -> Tensor:
    """The random order of grouping `seed`: consecutive runs of N of its first M - M mod N rows are the groups."""
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))


def prepared(model: MuxModel, data: TaskData, max_length: int | None) -> TaskData:
    """`data` checked against the model's labels and made into what its request encoder sends (prompts)."""
    if len(data) == 0:
        raise DataError(f"{data.source}: no rows to evaluate.")
    if data.has_unlabeled:
        raise DataError(f"{data.source}: evaluation needs a label on every row; some are unlabeled.")
    view = model.view
    if data.num_classes != view.num_labels:
        raise DataError(
            f"{data.source} has {data.num_classes} classes {data.label_names}, the model predicts "
            f"{view.num_labels} ({model.config.label_names or view.label_names}). Evaluate on data of the "
            "task the model was trained for."
        )
    return model.encoder.replace(max_length=max_length or model.config.max_length).prepare(data)


def predict_grouping(
    model: MuxModel,
    states: Callable[[Tensor], LayerState],
    perm: Tensor,
    rows_per_pass: int,
    out: Tensor,
    margin_out: Tensor | None = None,
    logits_out: Tensor | None = None,
) -> Tensor:
    """Write into `out` (M,) the predictions for the rows of `perm`, whose consecutive runs of N are the groups.

    `states(rows)` gives the layer-k states of `rows`; `rows_per_pass` rows (a multiple of N for whole
    groups) go through `forward_from_prefill` at a time, the last `len(rows) mod N` of a pass at N = 1.
    With `margin_out` (M,), also each answer's top-1 minus top-2 probability (what the fallback tests);
    with `logits_out` (M, C), each row's logits (float32).
    The grouping loop of evaluation, the fallback sweep and the training hold-out. Returns `out`.
    """
    for rows in perm.split(rows_per_pass):
        if not rows.numel():
            continue
        order = torch.arange(rows.numel(), device=model.view.device)
        logits = model.forward_from_prefill(states(rows), order=order).logits
        out[rows] = logits.argmax(-1).to(out.device)
        if logits_out is not None:
            logits_out[rows] = logits.float().to(logits_out.device)
        if margin_out is not None:
            top = logits.float().softmax(-1).topk(min(2, logits.shape[-1]), dim=-1).values.cpu()
            margin_out[rows] = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
    return out


def prefill_rows(
    model: MuxModel, data: TaskData, chunk: int, max_length: int | None, progress: bool = False
) -> tuple[Prefilled, Tensor]:
    """Tokenize once and prefill layers [0, k) in length-sorted chunks; the teacher's class probabilities
    (M, C), float32, from the same states (their argmax is the teacher's prediction).

    Every row is prefilled at the set's full padded width T, so its padding columns hold the states the
    backbone computes there, as in serving (`MuxModel.forward`) and the training cache: a short request
    grouped with a longer one is mixed with its own padding states, not zeros. The teacher runs on each
    chunk trimmed to its real columns.
    """
    view = model.view
    tokenizer = view.tokenizer
    if tokenizer is None:
        raise ConfigError("the model's backbone view has no tokenizer; load it with load_backbone(path).")
    inputs = tokenize(tokenizer, data, max_length or model.config.max_length)
    mask = inputs["attention_mask"]
    M, T = mask.shape
    hidden = torch.zeros(M, T, view.hidden_size, dtype=view.dtype, device=view.device)
    teacher = torch.empty(M, view.num_labels)
    sorted_rows = torch.argsort(mask.sum(1), stable=True)
    for s in _steps(range(0, M, chunk), progress, "prefill"):
        idx = sorted_rows[s : s + chunk]
        state = model.prefill({key: v[idx].to(view.device) for key, v in inputs.items()})
        hidden[idx.to(view.device)] = state.hidden
        teacher[idx] = model.teacher_from_prefill(view.trim(state))[1].float().softmax(-1).cpu()
    return Prefilled(hidden, mask.to(view.device)), teacher


def _share(hits: Tensor) -> float:
    """Fraction of True in a bool tensor, exactly (count / size)."""
    return int(hits.sum()) / hits.numel()


def _per_class(preds: list[Tensor], labels: Tensor, names: list[str]) -> dict[str, float | None]:
    """Accuracy per class, averaged over the given predictions; None for classes with no rows."""
    out: dict[str, float | None] = {}
    for c, name in enumerate(names):
        rows = labels == c
        out[name] = statistics.fmean(_share(p[rows] == c) for p in preds) if rows.any() else None
    return out


def _steps(items: range, progress: bool, what: str) -> Any:
    return track(items, what, enabled=progress) if progress else items
