"""The contract between the engine and a runner: what goes in (Encoded), what comes out (Output).

What it is: plain dataclasses and a Protocol, no torch, so the engine and the batcher stay free of
tensors and tests (or another front, such as a Ray Serve deployment) can plug in a fake runner.
A runner's `run(groups)` must return exactly one Output, or the exception that failed it, per
request id it was given; the engine fails a request whose output is missing.
What it is not: an implementation (runner.ModelRunner is the real one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from revmux.serve.batcher import Group


@dataclass
class Encoded:
    """One input's token ids, measured at admission."""

    input_ids: list[int]
    token_type_ids: list[int] | None = None
    debug: bool = False
    input_hash: str | None = None  # with debug: token_hash(input_ids), taken at admission

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


@dataclass
class Output:
    """One request's answer: logits in label order, the width N it ran at, whether it was re-run at N = 1
    (`fallback`), and whether its margin asked for that re-run but it did not happen (`fallback_failed`:
    the re-run failed, or the per-step cap was reached); then the multiplexed answer is kept, flagged."""

    logits: list[float]
    width: int
    fallback: bool = False
    input_hash: str | None = None
    fallback_failed: bool = False
    group_id: str | None = None  # which composite it shared (step.group); set by the engine


class Runner(Protocol):
    """What the engine needs from a runner."""

    widths: list[int]
    label_names: list[str]

    def tokenize(
        self, text: str, pair: str | None = None, *, truncate: bool = True, debug: bool = False
    ) -> Encoded: ...

    def run(self, groups: Sequence[Group]) -> dict[int, Output | BaseException]: ...

    def info(self) -> dict[str, Any]: ...


def token_hash(ids: Sequence[int]) -> str:
    """sha256 (hex, first 16 chars) of a token id sequence: what the debug field echoes."""
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]
