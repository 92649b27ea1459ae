"""from_pretrained_quietly: transformers' LOAD REPORT is held back, one line of ours says what is new."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import transformers

from revmux.backbones import load_backbone
from revmux.backbones.hf_load import from_pretrained_quietly
from revmux.data import TaskData
from revmux.train.finetune import finetune

CLS = transformers.AutoModelForSequenceClassification
NOTE = "fine-tuning trains it"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log() -> Iterator[_Records]:
    """Every message transformers logs (its loggers do not propagate to the root logger)."""
    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _config() -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny BERT encoder without a classification head (as MiniLM ships), with MiniLM's tokenizer."""
    directory = tmp_path_factory.mktemp("encoder")
    transformers.BertModel(_config()).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(minilm_path).save_pretrained(directory)
    return directory


def _our_lines(err: str) -> list[str]:
    """stderr without transformers' tqdm bars (Loading weights, Writing model shards)."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "it/s]" not in line]


def _report_count(log: _Records) -> int:
    return sum("LOAD REPORT" in m for m in log.messages)


def test_plain_from_pretrained_logs_the_report(encoder_dir, transformers_log):
    """The control: without our helper, transformers logs its multi-line report for the new head."""
    CLS.from_pretrained(str(encoder_dir), num_labels=3)
    assert _report_count(transformers_log) == 1


def test_a_new_head_is_one_line_of_ours_and_no_report(encoder_dir, transformers_log, capsys):
    model = from_pretrained_quietly(CLS, str(encoder_dir), new_head_note=NOTE, num_labels=3)
    assert model.config.num_labels == 3
    assert _report_count(transformers_log) == 0
    assert _our_lines(capsys.readouterr().err) == [
        f"{encoder_dir}: new classification head for 3 labels (classifier.bias, classifier.weight): {NOTE}"
    ]


def test_a_complete_checkpoint_loads_silently(tmp_path, transformers_log, capsys):
    CLS.from_config(_config()).save_pretrained(tmp_path)
    from_pretrained_quietly(CLS, str(tmp_path), new_head_note=NOTE)
    assert _report_count(transformers_log) == 0
    assert _our_lines(capsys.readouterr().err) == []


def test_a_failed_load_still_logs_the_report_its_error_refers_to(tmp_path, transformers_log):
    CLS.from_config(_config()).save_pretrained(tmp_path)  # a 2-label head; 5 labels mismatch
    with pytest.raises(RuntimeError, match="report"):
        from_pretrained_quietly(CLS, str(tmp_path), new_head_note=NOTE, num_labels=5)
    assert _report_count(transformers_log) == 1
    assert logging.getLogger("transformers.modeling_utils").filters == []


def test_load_backbone_says_the_head_is_untrained(encoder_dir, transformers_log, capsys):
    view = load_backbone(encoder_dir)
    assert view.num_labels == 2
    assert _report_count(transformers_log) == 0
    assert "new classification head for 2 labels" in capsys.readouterr().err


def test_finetune_prints_our_line_instead_of_the_report_and_plain_progress(
    encoder_dir, tmp_path, transformers_log, capsys
):
    rng = random.Random(0)
    texts = [" ".join(rng.choices(["good", "bad", "fine"], k=3)) for _ in range(24)]
    data = TaskData(
        texts=texts, pairs=None, labels=[i % 2 for i in range(24)], label_names=["n", "p"], source="t"
    )
    finetune(encoder_dir, data, tmp_path / "teacher", epochs=1, batch_size=8, progress=True)
    assert _report_count(transformers_log) == 0
    err = capsys.readouterr().err
    assert (
        "new classification head for 2 labels (classifier.bias, classifier.weight): fine-tuning trains it"
        in err
    )
    assert "LOAD REPORT" not in err
    assert re.search(r"fine-tuning: (\d+)/\1 \(100%\), .*, loss \d\.\d{4}, [\d.]+ ex/s", err)  # not a tty


def test_transformers_progress_bars_are_off_during_a_load_and_restored_after():
    from transformers.utils import logging as hf_logging

    seen = []

    class Auto:
        @staticmethod
        def from_pretrained(source, **kwargs):
            seen.append(hf_logging.is_progress_bar_enabled())
            return transformers.BertModel(
                transformers.BertConfig(
                    hidden_size=8,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    intermediate_size=8,
                    vocab_size=20,
                )
            ), {}

    assert hf_logging.is_progress_bar_enabled()
    from_pretrained_quietly(Auto, "fake", new_head_note=NOTE)
    assert seen == [False] and hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a user who turned them off keeps them off
    try:
        from_pretrained_quietly(Auto, "fake", new_head_note=NOTE)
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
