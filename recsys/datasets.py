"""Dataset-level operations behind the ``recsys data`` commands and the demo.

Each function is the one library call of a CLI command: it takes paths and config objects,
does the work, and returns what the command prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.split import SplitConfig, split_summary, temporal_split
from recsys import contract as C
from recsys.io import Dataset, DatasetPaths, load_dataset, validate_dataset, write_dataset_folder, write_parquet_atomic
from recsys.summary import DatasetSummary, summarize
from recsys.synthetic import SyntheticConfig, generate_synthetic
from recsys.validation import ContractPolicy, ValidationReport

__all__ = ["Validated", "validate", "split_dataset", "write_synthetic", "SPLIT_FILE"]

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.parquet"


@dataclass(frozen=True)
class Validated:
    """The outcome of ``validate``: the report, and the data and its summary when valid."""

    report: ValidationReport
    data: Dataset | None
    summary: DatasetSummary | None


def validate(paths: DatasetPaths, policy: ContractPolicy = ContractPolicy()) -> Validated:
    """Check a dataset against the contract; data and summary are ``None`` when there are errors."""
    report, data = validate_dataset(paths, policy)
    return Validated(report, data, summarize(data) if data is not None else None)


def split_dataset(data: Dataset | DatasetPaths, config: SplitConfig, out: Path) -> tuple[pl.DataFrame, Path]:
    """Split a dataset's interactions in time and write them, labelled, to ``out``.

    Args:
        data: a validated dataset, or the paths of one (loaded and validated here).
        config: the split mode and fractions.
        out: Parquet file for the labelled interactions.

    Returns:
        The per-window summary (``features.split.split_summary``) and the written file.
    """
    if isinstance(data, DatasetPaths):
        data = load_dataset(data)
    logger.info("splitting %d interactions (%s)", data.interactions.height, config.describe())
    labelled = temporal_split(data.interactions, config).collect()
    return split_summary(labelled), write_parquet_atomic(labelled, out)


def write_synthetic(out: Path, config: SyntheticConfig = SyntheticConfig()) -> DatasetPaths:
    """Generate a synthetic dataset (``recsys.synthetic``) and write it as contract Parquet."""
    items, interactions = generate_synthetic(config)
    write_dataset_folder({C.ITEMS_FILE: items, C.INTERACTIONS_FILE: interactions}, out)
    return DatasetPaths.from_dir(out)
