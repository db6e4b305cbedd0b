"""Reading and writing tables: the only place that touches data files.

Readers turn every file-level failure (missing file, unsupported extension, a file that is
not what its extension says) into a :class:`DataContractError` that names the file, and
``load_dataset`` checks the tables against the contract once, here, so inner code can trust
them. Writers go through a temporary file and an atomic rename, so a killed run never
leaves a half-written output behind.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
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
    "validate_dataset", "load_dataset", "write_dataset_folder", "recover_dataset_folder", "check_own_folder",
    "file_in_the_way",
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


_WRITING, _REPLACED = "writing", "replaced"


def _siblings(out: Path, kind: str) -> list[Path]:
    """Folders ``.OUT.<kind>-*`` beside ``out``: a dataset being written, or the one it replaced."""
    return sorted(p for p in out.parent.glob(f".{glob.escape(out.name)}.{kind}-*") if p.is_dir())


def recover_dataset_folder(out: str | os.PathLike[str]) -> None:
    """Finish or undo a dataset write that was killed, so ``out`` holds one whole dataset.

    * killed while writing the new tables: their folder is removed (``out`` was never touched);
    * killed between the two renames (``out`` moved aside, the new folder not yet in place):
      the previous dataset is renamed back;
    * killed after them: the other files the previous folder held are moved over, and it is removed.
    """
    out = Path(out)
    for writing in _siblings(out, _WRITING):
        shutil.rmtree(writing, ignore_errors=True)
    for replaced in _siblings(out, _REPLACED):
        if not out.exists():
            replaced.rename(out)
            logger.warning("%s: an interrupted import had moved the previous dataset aside; restored it", out)
            continue
        _keep_other_files(replaced, out)
        shutil.rmtree(replaced, ignore_errors=True)


def _keep_other_files(old: Path, new: Path) -> None:
    """Move what ``old`` held besides the dataset's tables (reports, splits) into ``new``, unless it has them."""
    tables = {C.ITEMS_FILE, C.INTERACTIONS_FILE, C.USERS_FILE, C.USER_TAGS_FILE}
    stems = {Path(name).stem for name in tables}
    for entry in old.iterdir():
        if Path(entry.name).stem in stems or (new / entry.name).exists():
            continue
        entry.rename(new / entry.name)


def file_in_the_way(path: str | os.PathLike[str]) -> Path | None:
    """The nearest existing folder-to-be above ``path`` when it is a file: nothing can be written under it."""
    blocker = next((p for p in Path(path).parents if os.path.lexists(p)), None)
    return blocker if blocker is not None and not blocker.is_dir() else None


def check_own_folder(out: str | os.PathLike[str], option: str = "--out") -> None:
    """A dataset replaces its folder as a whole: the current, home and root folders are refused."""
    where = Path(out).absolute()
    if where.resolve() in {Path.cwd().resolve(), Path.home().resolve(), Path(where.anchor)}:
        raise DataContractError(f"{option} {where}: give the dataset a folder of its own (it replaces the folder as "
                                "a whole), not the current, home or root folder")


def write_dataset_folder(tables: dict[str, pl.DataFrame | Callable[[Path], None]],
                         out: str | os.PathLike[str]) -> Path:
    """Write a dataset's tables (file name -> frame, or a function that writes the file at the path it is given,
    for tables written in parts) as one folder: a reader sees the old dataset or the new one.

    The tables are written into a hidden sibling folder; only when all are complete is the old
    ``out`` renamed aside and the new folder renamed into its place (files the old folder held
    besides its tables, such as reports, are moved over). Writing table by table into ``out``
    would leave a torn dataset (new items beside old interactions) after a kill, and that
    validates. A killed write is finished or undone by :func:`recover_dataset_folder`, which
    every write (and every read of a missing folder) runs first.
    """
    out = Path(out).absolute()
    check_own_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_dataset_folder(out)
    if out.exists() and not out.is_dir():
        raise DataContractError(f"--out {out} is a file; give a folder for the dataset")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.{_WRITING}-", dir=out.parent))
    try:
        for name, frame in tables.items():
            if isinstance(frame, pl.DataFrame):
                frame.write_parquet(staging / name)
            else:
                frame(staging / name)
        if not out.exists():
            staging.rename(out)
            return out
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.{_REPLACED}-", dir=out.parent))
        aside.rmdir()  # a unique name, free for the rename
        out.rename(aside)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _keep_other_files(aside, out)
    shutil.rmtree(aside, ignore_errors=True)
    return out


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
        if not folder.exists() and folder.parent.is_dir():
            recover_dataset_folder(folder)  # an import killed between its two renames moved it aside
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
    logger.debug("checking %s", paths.items)
    items = _checked(paths.items, lambda df: check_items(df, file=paths.items.name))
    ids = items.frame[C.ITEM_ID] if items.frame is not None else _raw_item_ids(paths.items)
    logger.debug("checking %s", paths.interactions)
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
