"""Importers from public dataset formats to the data contract (``recsys data import``)."""

from __future__ import annotations

import logging
from pathlib import Path

from recsys.errors import DataContractError
from recsys.importers.base import ImportedDataset, ImportReport, write_dataset

__all__ = ["IMPORTERS", "import_dataset"]

logger = logging.getLogger(__name__)

IMPORTERS = ("movielens", "mind", "amazon", "microlens")


def _read(name: str, src: Path, options: dict[str, object]) -> ImportedDataset:
    # Imported lazily so that one importer's dependencies never slow down another's start.
    if name == "movielens":
        from recsys.importers.movielens import MovieLensOptions, import_movielens
        return import_movielens(src, MovieLensOptions(**options))  # type: ignore[arg-type]
    if name == "mind":
        from recsys.importers.mind import import_mind
        return import_mind(src, **options)  # type: ignore[arg-type]
    if name == "microlens":
        from recsys.importers.microlens import import_microlens
        return import_microlens(src, **options)  # type: ignore[arg-type]
    from recsys.importers.amazon import import_amazon
    return import_amazon(src, **options)  # type: ignore[arg-type]


def import_dataset(name: str, src: str | Path, out: str | Path, **options: object) -> ImportReport:
    """Convert the public dataset ``name`` found at ``src`` into contract Parquet files in ``out``.

    Args:
        name: one of ``IMPORTERS``.
        src: the downloaded dataset's folder (see each importer for the files it expects).
        out: folder to write ``items.parquet``, ``interactions.parquet`` (and side tables) to.
        **options: importer-specific settings (e.g. ``purchase_threshold`` for MovieLens).

    Returns:
        The count check: rows read per input file, used or dropped with a reason, and written.
    """
    if name not in IMPORTERS:
        raise ValueError(f"Invalid dataset {name!r}. Must be one of {', '.join(IMPORTERS)}")
    src = Path(src)
    if not src.exists():
        raise DataContractError(f"{src}: source not found")
    data = _read(name, src, {k: v for k, v in options.items() if v is not None})
    return write_dataset(data, out)
