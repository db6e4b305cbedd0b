"""Literal tiny frames of the data contract, and a writer for them in every supported format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from contract_tables import write_table

ITEMS = {
    "item_id": ["a", "b", "c", "d"],
    "title": ["Sourdough Baking", "Telescope Basics", "Jazz Piano", "Tomato Gardening"],
    "description": ["Bread at home.", None, "Swing and bebop.", "Grow your own."],
    "category": ["Home", "Science", "Music", "Home"],
    "tags": ["cooking|baking", "", "jazz", None],
}

INTERACTIONS = {
    "user_id": ["u1", "u1", "u1", "u2", "u2", "u3", "u3", "u3"],
    "item_id": ["a", "b", "a", "c", "a", "d", "b", "d"],
    "timestamp": ["2024-01-01 10:00:00", "2024-01-01 10:00:00", "2024-01-01 10:00:05", "2024-01-02 09:00:00",
                  "2024-01-03 09:00:00", "2024-01-04 12:00:00", "2024-01-04 12:00:00", "2024-01-05 08:30:00"],
    "event": ["impression", "impression", "click", "click", "purchase", "impression", "impression", "click"],
    "impression_id": ["s1", "s1", "s1", None, None, "s2", "s2", None],
}


@pytest.fixture
def items() -> pl.DataFrame:
    return pl.DataFrame(ITEMS)


@pytest.fixture
def interactions() -> pl.DataFrame:
    return pl.DataFrame(INTERACTIONS)


@pytest.fixture
def dataset_files(tmp_path: Path, items: pl.DataFrame, interactions: pl.DataFrame
                  ) -> Callable[..., tuple[Path, Path]]:
    """Write (possibly modified) items and interactions; returns their paths."""

    def write(items_frame: pl.DataFrame | None = None, inter_frame: pl.DataFrame | None = None,
              ext: str = ".csv") -> tuple[Path, Path]:
        i = write_table(items if items_frame is None else items_frame, tmp_path / f"items{ext}")
        x = write_table(interactions if inter_frame is None else inter_frame, tmp_path / f"interactions{ext}")
        return i, x

    return write


