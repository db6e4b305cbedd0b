"""Test helper: write a frame in any format the loaders accept."""

from __future__ import annotations

from pathlib import Path

import polars as pl


def write_table(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` in the format its extension names (list columns joined for CSV)."""
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    elif path.suffix == ".jsonl":
        frame.write_ndjson(path)
    else:
        flat = frame.with_columns(pl.col(c).list.join("|") for c, t in frame.schema.items()
                                  if isinstance(t, pl.List))
        flat.write_csv(path, separator="\t" if path.suffix == ".tsv" else ",")
    return path
