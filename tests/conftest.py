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


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> tuple[Path, str]:
    """A tiny pipeline trained by ``recsys train`` and registered as ``recsys`` (champion = challenger = v1).

    Returns the dataset folder and the SQLite tracking URI. Shared by the registry, export,
    serving and Spark tests; tests that change aliases must register their own versions.
    """
    from click.testing import CliRunner
    from tiny_train import tiny_train_args
    from trend_data import write_trend_data

    from recsys.cli import cli

    root = tmp_path_factory.mktemp("registered")
    data = write_trend_data(root / "data", seed=0)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = CliRunner().invoke(cli, tiny_train_args(data, uri, tiny_bert_dir))
    assert result.exit_code == 0, result.output
    return data, uri
