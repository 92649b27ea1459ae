"""A fake runner for engine and HTTP tests: no model, answers derived from each input's own text."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from revmux.serve.batcher import Group
from revmux.serve.contract import Encoded, Output, token_hash
from revmux.serve.errors import TokenizationError

LABELS = ["neg", "pos"]


def text_of(enc: Encoded) -> str:
    return "".join(map(chr, enc.input_ids))


def expected_logits(text: str, pair: str | None = None) -> list[float]:
    """What FakeRunner answers: unique per input, so a swapped answer shows."""
    return [float(len(text + (pair or ""))), 0.0]


class FakeRunner:
    """Token ids are code points. Inputs containing BOOM fail tokenization, FAIL fail in the step,
    DROP get no output at all (a broken batch contract). `gate` blocks each step until set."""

    def __init__(
        self, widths: Sequence[int] = (1, 2, 4), *, delay_s: float = 0.0, gate: threading.Event | None = None
    ):
        self.widths = sorted(set(widths) | {1})
        self.label_names = list(LABELS)
        self.delay_s = delay_s
        self.gate = gate
        self.steps: list[list[tuple[int, list[str]]]] = []
        self.started = threading.Event()

    def tokenize(
        self, text: str, pair: str | None = None, *, truncate: bool = True, debug: bool = False
    ) -> Encoded:
        if "BOOM" in text:
            raise TokenizationError("the tokenizer failed on this input (ValueError).")
        return Encoded([ord(c) for c in text + (pair or "")], None, debug)

    def run(self, groups: Sequence[Group]) -> dict[int, Output | BaseException]:
        self.steps.append([(g.width, [text_of(r.payload) for r in g.requests]) for g in groups])
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        out: dict[int, Output | BaseException] = {}
        for g in groups:
            for r in g.requests:
                text = text_of(r.payload)
                if "DROP" in text:
                    continue
                if "FAIL" in text:
                    out[r.id] = RuntimeError("the model failed on this input")
                    continue
                h = token_hash(r.payload.input_ids) if r.payload.debug else None
                out[r.id] = Output([float(len(text)), 0.0], g.width, False, h)
        return out

    def seen_texts(self) -> list[str]:
        return [t for step in self.steps for _, texts in step for t in texts]

    def info(self) -> dict[str, Any]:
        return {"widths": self.widths, "labels": self.label_names, "backbone": "fake"}
