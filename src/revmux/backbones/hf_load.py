"""`from_pretrained` for the loads revmux does, with one line of ours instead of transformers' LOAD REPORT.

transformers 5 logs a multi-line "LOAD REPORT" table (a warning of `transformers.modeling_utils`)
whenever a checkpoint lacks weights the model has, e.g. the classification head that a sentence
encoder such as MiniLM never had. revmux loads such checkpoints on purpose (fine-tuning adds the
head), so the table appeared on every `revmux finetune` and demo run. `from_pretrained_quietly`
holds that report back and prints one line instead, only when weights were newly initialised (or
checkpoint weights went unused). If loading fails, the held-back report is logged as usual, since
transformers' error message refers to it. `no_hf_progress` also holds back transformers' per-load "Loading
weights" / "Writing model shards" bars: a fraction of a second each, they only fill logs with lines.
What it is not: a silencer for transformers' other warnings; only the LOAD REPORT is held back.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

_REPORT_LOGGER = "transformers.modeling_utils"
_MAX_NAMES = 6


class _HoldReport(logging.Filter):
    """Keeps the LOAD REPORT records back (in `held`) and lets every other record through."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.held.append(record)
            return False
        return True


@contextlib.contextmanager
def no_hf_progress() -> Iterator[None]:
    """transformers' tqdm bars off inside the block, restored after it (as the user had them)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def from_pretrained_quietly(auto: Any, source: str, *, new_head_note: str, **kwargs: Any) -> Any:
    """`auto.from_pretrained(source, **kwargs)` without the LOAD REPORT; our one-line summary goes to stderr.

    new_head_note: what happens to newly initialised weights, ending the line (e.g. "fine-tuning trains it").
    """
    logger = logging.getLogger(_REPORT_LOGGER)
    hold = _HoldReport()
    logger.addFilter(hold)
    try:
        with no_hf_progress():
            model, info = auto.from_pretrained(source, output_loading_info=True, **kwargs)
    except BaseException:
        logger.removeFilter(hold)
        for record in hold.held:
            logger.handle(record)
        raise
    logger.removeFilter(hold)
    for line in load_summary(model, source, info, new_head_note):
        print(line, file=sys.stderr, flush=True)
    return model


def load_summary(model: Any, source: str, info: dict[str, Any], new_head_note: str) -> list[str]:
    """Our lines about a load: newly initialised weights (one line) and unused checkpoint weights (one line)."""
    new = sorted(set(info.get("missing_keys") or ()) | {m[0] for m in info.get("mismatched_keys") or ()})
    unused = sorted(info.get("unexpected_keys") or ())
    lines = []
    if new:
        what = "newly initialised weights"
        if type(model).__name__.endswith("ForSequenceClassification"):
            what = f"new classification head for {model.config.num_labels} labels"
        lines.append(f"{source}: {what} ({_names(new)}): {new_head_note}")
    if unused:
        lines.append(f"{source}: checkpoint weights not used by {type(model).__name__} ({_names(unused)})")
    return lines


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMES])
    return shown if len(keys) <= _MAX_NAMES else f"{shown} and {len(keys) - _MAX_NAMES} more"
