"""Which bytes a run read: SHA-256 of its input files.

A result is tied to its data, and a resumed job can refuse data that changed.

Shared by training (the data fingerprint logged with every run and tagged on every registered
version) and the runtime (an export's manifest, which ``--resume`` compares before reusing a block).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from recsys.io import DatasetPaths

__all__ = ["file_sha256", "data_fingerprint"]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MB chunks (a table of any size in constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(paths: DatasetPaths) -> dict[str, dict[str, object]]:
    """Row count (Parquet), size and SHA-256 of each table of a dataset: which data a run saw, to the byte."""
    out: dict[str, dict[str, object]] = {}
    for name, path in (("items", paths.items), ("interactions", paths.interactions), ("users", paths.users)):
        if path is None or not Path(path).exists():
            continue
        rows = pl.scan_parquet(path).select(pl.len()).collect().item() if str(path).endswith(".parquet") else None
        out[name] = {"path": str(path), "bytes": Path(path).stat().st_size, "sha256": file_sha256(path), "rows": rows}
    return out
