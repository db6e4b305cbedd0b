"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_bert import make_tiny_bert

# One intra-op thread: tiny models gain nothing from two, and on a shared machine OpenMP's
# spinning threads slow a busy core down by 30x (measured: 0.5 s vs 0.015 s per step).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-32 BERT and tokenizer on disk (a local Hugging Face model folder)."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
