"""Adapter training (backbone and head frozen): prefill/teacher cache, teacher fine-tuning, losses, the loop.

`train(view, data, TrainConfig(...), out_dir, backbone_path=...)` trains, checkpoints and selects an
adapter; `revmux.train.losses` holds the loss terms. Teacher fine-tuning lives in `revmux.train.finetune`.
"""

from revmux.train.config import TrainConfig
from revmux.train.losses import group_cos_penalty, info_nce, kd_kl, mux_loss
from revmux.train.trainer import TrainResult, holdout_accuracy, select_rows, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "group_cos_penalty",
    "holdout_accuracy",
    "info_nce",
    "kd_kl",
    "mux_loss",
    "select_rows",
    "train",
]
