"""Reading and writing tables: the only place that touches data files.

Readers turn every file-level failure (missing file, unsupported extension, a file that is
not what its extension says) into a :class:`DataContractError` that names the file, and
``load_dataset`` checks the tables against the contract once, here, so inner code can trust
them. Writers go through a temporary file and an atomic rename, so a killed run never
leaves a half-written output behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys import contract as C
from recsys.errors import DataContractError
from recsys.validation import (
    ROW,
    CheckResult,
    ContractPolicy,
    Problem,
    ValidationReport,
    check_interactions,
    check_items,
    check_users,
)

__all__ = [
    "SUPPORTED_EXTENSIONS", "Dataset", "DatasetPaths", "scan_table", "read_table", "write_parquet_atomic",
    "validate_dataset", "load_dataset",
]

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".parquet": "Parquet", ".pq": "Parquet", ".csv": "CSV", ".tsv": "TSV",
    ".jsonl": "JSON Lines", ".ndjson": "JSON Lines", ".json": "JSON Lines",
}


def _format_of(path: Path) -> str:
    fmt = SUPPORTED_EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise DataContractError(
            f"{path}: unsupported file extension '{path.suffix or '(none)'}'; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)} (Parquet, CSV/TSV or JSON Lines)")
    return fmt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def scan_table(path: str | os.PathLike[str]) -> pl.LazyFrame:
    """Lazily scan a Parquet, CSV/TSV or JSON Lines file, with a ``__row`` column (1-based).

    CSV/TSV columns are read as strings: the contract checks convert them, so ids such as
    ``"007"`` keep their zeros and a bad value is reported by row instead of failing the read.

    Raises:
        DataContractError: the file is missing, has an unsupported extension, or cannot be
            read in the format its extension names.
    """
    path = Path(path)
    if not path.exists():
        raise DataContractError(f"{path}: file not found; check the path (a data folder holds items and "
                                "interactions as .parquet, .csv, .tsv or .jsonl)")
    if path.is_dir():
        raise DataContractError(f"{path}: is a folder, expected a file")
    fmt = _format_of(path)
    if path.stat().st_size == 0:
        raise DataContractError(f"{path}: the file is empty (0 bytes)")
    try:
        if fmt == "Parquet":
            lf = pl.scan_parquet(path)
        elif fmt in ("CSV", "TSV"):
            lf = pl.scan_csv(path, separator="\t" if fmt == "TSV" else ",", infer_schema=False)
        else:
            lf = pl.scan_ndjson(path, infer_schema_length=10_000)
        lf.collect_schema()
    except Exception as exc:  # polars raises several types for unreadable input
        raise DataContractError(f"{path}: cannot be read as {fmt} ({_first_line(exc)}); "
                                "is the file complete and really in that format?") from exc
    return lf.with_row_index(ROW, offset=1)


def read_table(path: str | os.PathLike[str], columns: list[str] | None = None) -> pl.DataFrame:
    """Read a table eagerly (optionally only some columns), with file errors as DataContractError."""
    lf = scan_table(path)
    if columns is not None:
        present = lf.collect_schema().names()
        lf = lf.select([c for c in [ROW, *columns] if c in present])
    try:
        return lf.collect()
    except Exception as exc:
        raise DataContractError(f"{path}: cannot be read as {_format_of(Path(path))} ({_first_line(exc)}); "
                                "is the file complete, UTF-8 encoded and really in that format?") from exc


def write_parquet_atomic(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class DatasetPaths:
    """Where a dataset's tables live; ``from_dir`` finds them in a folder written by an importer."""

    items: Path
    interactions: Path
    users: Path | None = None

    @classmethod
    def from_dir(cls, folder: str | os.PathLike[str]) -> DatasetPaths:
        """The tables of a contract folder: ``items``, ``interactions`` and optional ``users``.

        Each may be Parquet, CSV/TSV or JSON Lines (``items.csv``, ``interactions.jsonl``, ...), as
        the contract allows; a missing table is named with the file names looked for.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise DataContractError(f"{folder}: data folder not found")
        items = _table_file(folder, C.ITEMS_FILE)
        interactions = _table_file(folder, C.INTERACTIONS_FILE)
        users = _table_file(folder, C.USERS_FILE)
        return cls(items, interactions, users if users.exists() else None)


def _table_file(folder: Path, parquet_name: str) -> Path:
    """``folder/<table>.<ext>`` for the one supported extension present (Parquet when none is).

    Two formats of the same table are refused: which one is meant cannot be guessed.
    """
    stem = Path(parquet_name).stem
    found = [folder / f"{stem}{ext}" for ext in SUPPORTED_EXTENSIONS if (folder / f"{stem}{ext}").is_file()]
    if len(found) > 1:
        raise DataContractError(f"{folder}: {', '.join(p.name for p in found)} are the same table in several "
                                "formats; keep one")
    return found[0] if found else folder / parquet_name


@dataclass(frozen=True)
class Dataset:
    """A validated dataset in the contract's schemas (see ``recsys.contract``)."""

    items: pl.DataFrame
    interactions: pl.DataFrame
    users: pl.DataFrame | None = None


def _checked(path: Path, check: Callable[[pl.DataFrame], CheckResult]) -> CheckResult:
    try:
        return check(read_table(path))
    except DataContractError as exc:
        return CheckResult(None, [Problem(str(path), None, str(exc).removeprefix(f"{path}: "))])


def _raw_item_ids(path: Path) -> pl.Series | None:
    """Item ids of a catalogue that failed its checks, so unknown items are still reported."""
    try:
        df = read_table(path, [C.ITEM_ID])
        return df[C.ITEM_ID].cast(pl.String).drop_nulls() if C.ITEM_ID in df.columns else None
    except (DataContractError, pl.exceptions.PolarsError):
        return None


def validate_dataset(paths: DatasetPaths, policy: ContractPolicy = ContractPolicy()
                     ) -> tuple[ValidationReport, Dataset | None]:
    """Check every table of a dataset and report every problem at once.

    Returns:
        The report, and the normalised :class:`Dataset` when there is no error (else ``None``).
    """
    logger.info("checking %s", paths.items)
    items = _checked(paths.items, lambda df: check_items(df, file=paths.items.name))
    ids = items.frame[C.ITEM_ID] if items.frame is not None else _raw_item_ids(paths.items)
    logger.info("checking %s", paths.interactions)
    inter = _checked(paths.interactions, lambda df: check_interactions(
        df, file=paths.interactions.name, item_ids=ids, policy=policy))
    users = (_checked(paths.users, lambda df: check_users(df, file=paths.users.name))
             if paths.users is not None else CheckResult(None))
    report = ValidationReport(items.problems + inter.problems + users.problems)
    if not report.ok or items.frame is None or inter.frame is None:
        return report, None
    return report, Dataset(items.frame, inter.frame, users.frame)


def load_dataset(paths: DatasetPaths, policy: ContractPolicy = ContractPolicy()) -> Dataset:
    """Load and validate a dataset; warnings are logged, errors raised all together.

    Raises:
        DataContractError: listing every problem found (see ``recsys data validate``).
    """
    report, dataset = validate_dataset(paths, policy)
    for warning in report.warnings:
        logger.warning(warning.render())
    if dataset is None:
        raise DataContractError(report.render())
    return dataset
