"""TrainConfig: everything that decides an adapter training run's result.

Each field is written once here, with its default and its help (`metadata["help"]`): `revmux train`
derives one flag per field from it (`--batch-groups`, `--lambda-kd`, ...), recipes
(`revmux/configs/recipes/*.yaml`) and `--config FILE` use the field names as keys, and the resolved
config is saved in every checkpoint and in train_log.json. The mux kind's own knobs live in its options
dataclass (`revmux.mux`) and arrive here as `mux_options`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revmux.config import (
    DEFAULT_K,
    DEFAULT_KIND,
    DEFAULT_MAX_LENGTH,
    DEFAULT_N,
    config_from_dict,
    dashed,
    legacy_mux_options,
    load_yaml,
)
from revmux.config import flag_meta as _help
from revmux.config import is_int as _is_int
from revmux.errors import ConfigError
from revmux.mux.registry import mux_class, resolve_options, valid_kinds

SELECT_ON = ("agreement", "accuracy", "kl")
"""Hold-out measures that can pick the epoch kept (`select_on`); kl is the one where lower is better."""

FLAGS = {
    "kind": "--mux",
    "use_cache": "--cache",
}  # field -> flag where the flag is not the field name with dashes


def flag(name: str) -> str:
    """The `revmux train` flag of a TrainConfig field."""
    return FLAGS.get(name, dashed(name))


@dataclass
class TrainConfig:
    """Everything that decides a training run's result; saved in every checkpoint and in train_log.json."""

    kind: str = field(default=DEFAULT_KIND, metadata=_help("mux kind: revmux, ora, adapter, datamux"))
    n: int = field(default=DEFAULT_N, metadata=_help("requests per group N"))
    k: int = field(default=DEFAULT_K, metadata=_help("prefill layers k before the mux"))
    epochs: int = field(
        default=4, metadata=_help("passes over the training rows (at least; see --min-steps)")
    )
    min_steps: int = field(
        default=940,
        metadata=_help("more epochs than --epochs when needed to reach this many optimizer steps"),
    )
    steps_at_n: int | None = field(
        default=2,
        metadata=_help(
            "the width --epochs and --min-steps are counted at: a run at a wider N makes N / steps_at_n times "
            "as many of both, so every width gets as many optimizer steps from the same rows (unset: no scaling)"
        ),
    )
    batch_groups: int = field(default=32, metadata=_help("groups per optimizer step"))
    lr: float = field(default=1e-3, metadata=_help("peak learning rate"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay"))
    schedule: str = field(default="onecycle", metadata=_help("learning-rate schedule: onecycle or constant"))
    warmup_fraction: float = field(default=0.1, metadata=_help("share of steps warming up (onecycle)"))
    lambda_nce: float = field(default=0.25, metadata=_help("weight of InfoNCE against the teacher's reps"))
    lambda_kd: float = field(default=1.0, metadata=_help("weight of KL to the teacher's logits"))
    nce_centre: bool = field(
        default=False,
        metadata=_help(
            "InfoNCE on reps minus the mean of the batch's teacher reps: for backbones whose final states all "
            "point one way (a decoder LLM's read states have cosine ~0.98), where raw cosines cannot tell rows apart"
        ),
    )
    lambda_cos: float = field(default=0.0, metadata=_help("weight of the group cosine penalty"))
    lambda_state: float = field(
        default=4.0,
        metadata=_help(
            "weight of the MSE to the teacher's final states at the read positions (/ their variance)"
        ),
    )
    augment: list[str] | None = field(
        default=None,
        metadata=_help(
            "teacher-labelled augmentations of the training rows: crop, dropout, repair (pairs); '' for none "
            "(default: crop,dropout for sentence pairs, none for single sentences)"
        ),
    )
    augment_copies: int | None = field(
        default=None,
        metadata=_help("augmented rows per training row (default: 1 when augmenting, else 0)"),
    )
    max_length: int = field(default=DEFAULT_MAX_LENGTH, metadata=_help("tokens per row (longer: truncated)"))
    max_train_rows: int | None = field(default=None, metadata=_help("train on a stratified subset this size"))
    holdout_fraction: float = field(default=0.05, metadata=_help("share of train held out for selection"))
    holdout_max_rows: int = field(default=1000, metadata=_help("cap on the hold-out's rows"))
    select_on: str = field(
        default="agreement",
        metadata=_help(
            "hold-out measure that picks the epoch kept: agreement (with the teacher's answers; ties keep the "
            "later epoch), accuracy (gold labels; the first best epoch) or kl (the lowest KL from the teacher's "
            "class distribution to the student's; ties keep the later epoch)"
        ),
    )
    select_within_se: float = field(
        default=0.0,
        metadata=_help(
            "keep the latest epoch whose hold-out accuracy or agreement is within this many standard errors "
            "(binomial, over the hold-out's rows) of the best epoch's; 0 keeps the best epoch itself"
        ),
    )
    seed: int = field(
        default=0, metadata=_help("seed of init and groupings (the rows held out do not depend on it)")
    )
    pca_init: bool = field(default=True, metadata=_help("Down (and the PCA composite) from layer-k PCA"))
    mux_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("the mux kind's options (--mux-option KEY=VALUE); a recipe may key them by kind"),
    )
    shared_prefix: bool | None = field(
        default=None,
        metadata=_help("causal decoders: common prompt prefix enters the tail as is (default: on for them)"),
    )
    use_cache: bool = field(default=True, metadata=_help("cache layer-k states and teacher outputs on disk"))

    def __post_init__(self) -> None:
        def bad(name: str, want: str) -> ConfigError:
            return ConfigError(f"{flag(name)} must be {want}, got {getattr(self, name)!r}.")

        ints = {"n": 2, "k": 0, "epochs": 1, "batch_groups": 1, "max_length": 2, "holdout_max_rows": 1}
        ints |= {"augment_copies": 0, "min_steps": 0}
        for name, low in (ints | {"seed": 0}).items():
            v = getattr(self, name)
            if name == "augment_copies" and v is None:
                continue  # automatic (see augmentation)
            if not _is_int(v) or v < low:
                note = " (N = 1 has no adapters to train)" if name == "n" else ""
                raise bad(name, f"an integer >= {low}{note}")
        if self.max_train_rows is not None and (not _is_int(self.max_train_rows) or self.max_train_rows < 2):
            raise bad("max_train_rows", "an integer >= 2 or unset")
        if self.steps_at_n is not None and (not _is_int(self.steps_at_n) or self.steps_at_n < 1):
            raise bad("steps_at_n", "an integer >= 1 or unset")
        for name in (
            "lr",
            "weight_decay",
            "warmup_fraction",
            "lambda_nce",
            "lambda_kd",
            "lambda_cos",
            "lambda_state",
            "select_within_se",
        ):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0 or v == float("inf"):
                raise bad(name, "a finite number >= 0")
        if self.lr <= 0:
            raise bad("lr", "> 0")
        if not self.warmup_fraction < 1:
            raise bad("warmup_fraction", "in [0, 1)")
        if not isinstance(self.holdout_fraction, (int, float)) or not 0 < self.holdout_fraction < 1:
            raise bad("holdout_fraction", "in (0, 1)")
        if self.select_on not in SELECT_ON:
            raise bad("select_on", "'agreement', 'accuracy' or 'kl'")
        if self.select_within_se and self.select_on == "kl":
            raise ConfigError(
                f"{flag('select_within_se')} counts binomial standard errors of accuracy or agreement; with "
                f"{flag('select_on')} kl set it to 0."
            )
        if self.schedule not in ("onecycle", "constant"):
            raise bad("schedule", "'onecycle' or 'constant'")
        if isinstance(self.augment, str):
            self.augment = [a.strip() for a in self.augment.split(",") if a.strip()]
        known = ("crop", "dropout", "repair")  # revmux.train.extra.AUGMENTATIONS
        if self.augment is not None and (
            not isinstance(self.augment, list) or any(a not in known for a in self.augment)
        ):
            raise bad("augment", "a comma-separated list of " + ", ".join(known) + " (or '' for none)")
        if self.augment_copies and self.augment == []:
            raise ConfigError("--augment-copies > 0 needs --augment (crop, dropout, repair).")
        if self.kind not in valid_kinds():
            raise bad("kind", "one of " + ", ".join(valid_kinds()))
        for name in ("pca_init", "use_cache", "nce_centre"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        if self.shared_prefix is not None and not isinstance(self.shared_prefix, bool):
            raise bad("shared_prefix", "true, false or unset (automatic)")
        if not isinstance(self.mux_options, dict):
            raise ConfigError(f"mux_options must be a mapping of option to value, got {self.mux_options!r}.")
        # a recipe may key options by kind ({revmux: {pca_composite: true}}); flat keys (flags) win over them
        kinds = set(valid_kinds())
        per_kind = {k: v for k, v in self.mux_options.items() if k in kinds and isinstance(v, dict)}
        flat = {k: v for k, v in self.mux_options.items() if k not in per_kind}
        mine = per_kind.get(mux_class(self.kind).kind) or {}
        self.mux_options = {**mine, **flat}
        self.mux_options = resolve_options(self.kind, self.mux_options)  # checked; every option spelled out
        if self.mux_options.get("pca_composite") and not self.pca_init:
            raise ConfigError(
                "the PCA composite needs --pca-init (its basis comes from the PCA of layer-k states): keep "
                "--pca-init, or pass --mux-option pca_composite=false with --no-pca-init."
            )

    def augmentation(self, is_pair: bool) -> tuple[list[str], int]:
        """(augmentations, copies per row) this config applies to data of this kind.

        Unset `augment` means the measured default: one teacher-labelled crop-or-dropout copy of every row
        for sentence-pair tasks (it won on an MRPC train slice) and none for single sentences (it lost on
        SST-2); unset `augment_copies` means 1 when augmenting, else 0.
        """
        kinds = list(self.augment) if self.augment is not None else (PAIR_AUGMENT if is_pair else [])
        copies = self.augment_copies if self.augment_copies is not None else (1 if kinds else 0)
        return kinds, copies

    @property
    def width_scale(self) -> float:
        """How many times `epochs` and `min_steps` this run makes: N / steps_at_n above that width, else 1.
        An epoch at width N is batch_groups * N rows a step, so this keeps the steps of the narrower width."""
        if self.steps_at_n is None or self.n <= self.steps_at_n:
            return 1.0
        return self.n / self.steps_at_n

    def epochs_for(self, steps_per_epoch: int) -> int:
        """Epochs a run makes: `epochs`, or more when `min_steps` needs them (small training sets), both
        times `width_scale`."""
        scale = self.width_scale
        epochs, min_steps = math.ceil(self.epochs * scale), math.ceil(self.min_steps * scale)
        return max(epochs, -(-min_steps // max(1, steps_per_epoch)))

    @property
    def rows_per_step(self) -> int:
        """Requests per optimizer step: batch_groups * n."""
        return self.batch_groups * self.n

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "train config") -> TrainConfig:
        """Build from a mapping (YAML/JSON/flags); strings such as "1e-3" are converted. Configs written
        before `mux_options` existed (flat f_hidden, up_hidden, pca_composite keys) are migrated."""
        return config_from_dict(cls, _migrate(dict(data), source), source=source, flag=flag)

    @classmethod
    def from_saved(cls, data: dict[str, Any], source: str = "saved train config") -> TrainConfig:
        """A config saved by an earlier revmux (train_log.json, a checkpoint, a results row): fields it
        predates take the value that reproduces what that run did (`BEFORE`), not today's defaults."""
        return cls.from_dict({**BEFORE, **data}, source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(load_yaml(path), source=str(path))


PAIR_AUGMENT = ["crop", "dropout"]
"""The augmentations an unset `augment` applies to sentence-pair tasks (docs/RESULTS.md, recipe selection)."""

BEFORE = {
    "min_steps": 0,
    "lambda_state": 0.0,
    "augment": [],
    "augment_copies": 0,
    "select_on": "accuracy",
    "steps_at_n": None,
}
"""Fields added after configs were first saved, at the values that reproduce a run saved without them."""


def _migrate(data: dict[str, Any], source: str) -> dict[str, Any]:
    stale = ConfigError(f"{source}: up_norm is no longer supported (it did not help); remove it.")
    legacy = legacy_mux_options(data, data.get("kind", DEFAULT_KIND), up_norm=stale)
    if legacy is not None:
        data["mux_options"] = dict(data.get("mux_options") or {}) | legacy
    return data
