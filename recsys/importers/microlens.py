"""Import MicroLens (micro-video clicks with English titles) into the data contract.

MicroLens-50k (Ni et al., 2023) ships two files, read as they are:

- ``MicroLens-50k_pairs.tsv``: one line per user, ``user_id<TAB>item item item ...``, the
  user's videos separated by single spaces, **oldest first**; no header, no timestamps.
- ``MicroLens-50k_titles.csv``: header ``item,title``, RFC-4180 quoting, CRLF line ends, UTF-8.

Every (user, video) pair is a ``click``; a video's title (machine-translated, with its
``#hashtags``) is its item text. Videos without clicks stay in the catalogue.

How events are dated: the pairs carry only each user's order, so the importer gives the
``i``-th click of a user (0-based, in file order) the synthetic time ``SYNTHETIC_EPOCH + i`` seconds
(1970-01-01 00:00:00, 00:00:01, ...). Order within a user is exact, so the per-user temporal
split (each user's last fraction of clicks) is what it would be on real times. Time across
users means nothing: every user's first click is at the same instant, so a global time split
cuts by position in the history, and time-of-day, recency and time-window features carry no
signal on this set. Position, not file row, sets the time, so that features computed "as of" a
user's cut see every user's first clicks equally rather than only users earlier in the file.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

import polars as pl

from recsys import contract as C
from recsys.errors import DataContractError
from recsys.importers.base import ImportedDataset, ImportReport, SourceCount

__all__ = ["import_microlens", "SYNTHETIC_EPOCH"]

logger = logging.getLogger(__name__)

SYNTHETIC_EPOCH = datetime(1970, 1, 1)
"""Time of every user's first click; click ``i`` of a user is ``i`` seconds later."""

PAIRS_GLOB = "*_pairs.tsv"
TITLES_GLOB = "*_titles.csv"
_TITLE_COLUMNS = ("item", "title")

# Working columns (never written).
_LINE, _REASON, _POS = "__line", "__reason", "__position"

# Drop reasons, as they appear in the report.
BLANK_LINE = "blank line"
NO_ITEMS = "user has no items"
MISSING_ID = "missing item id"
EMPTY_TITLE = "empty title"
DUPLICATE_ITEM = "duplicate item id (first titled copy kept)"
UNKNOWN_ITEM = "item not in the titles file"

_LAYOUT = ("expected one *_pairs.tsv (user_id<TAB>space-separated item ids, oldest first) and one "
           "*_titles.csv (header item,title) in it, e.g. MicroLens-50k_pairs.tsv and MicroLens-50k_titles.csv")


def import_microlens(src: str | os.PathLike[str]) -> ImportedDataset:
    """Convert a MicroLens folder (``*_pairs.tsv`` + ``*_titles.csv``) to contract frames.

    Args:
        src: the folder holding ``MicroLens-50k_pairs.tsv`` and ``MicroLens-50k_titles.csv``
            (any ``<name>_pairs.tsv`` / ``<name>_titles.csv`` pair, one of each).

    Returns:
        Items (``item`` -> ``item_id``, ``title``; no description, category or tags) and one
        ``click`` per pair, dated by its position in the user's history (see the module
        docstring), with a report that accounts for every pairs line, pair and titles row.

    Raises:
        DataContractError: the folder or a file is missing, or a line or row is malformed
            (the message names the file, the line or row and the field).
    """
    pairs_path, titles_path = _locate(Path(src))
    report = ImportReport(dataset=f"microlens ({pairs_path.name.removesuffix('_pairs.tsv')})")
    logger.info("microlens: reading %s", titles_path)
    items = _read_titles(titles_path, report)
    logger.info("microlens: reading %s", pairs_path)
    interactions = _read_pairs(pairs_path, items, report)
    report.notes.append(f"every pair is a click, dated {SYNTHETIC_EPOCH:%Y-%m-%d %H:%M:%S} + i seconds for a "
                        "user's i-th click (0-based): order within a user is exact, time across users is not "
                        "meaningful")
    return ImportedDataset(items=items, interactions=interactions, report=report)


def _locate(src: Path) -> tuple[Path, Path]:
    if not src.is_dir():
        raise DataContractError(f"{src}: MicroLens folder not found; {_LAYOUT}")
    found = []
    for pattern in (PAIRS_GLOB, TITLES_GLOB):
        paths = sorted(p for p in src.glob(pattern) if p.is_file())
        if not paths:
            raise DataContractError(f"{src}: no {pattern} file found; {_LAYOUT}")
        if len(paths) > 1:
            raise DataContractError(f"{src}: several {pattern} files ({', '.join(p.name for p in paths)}); "
                                    "keep one of each per folder")
        found.append(paths[0])
    return found[0], found[1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataContractError(f"{path}: cannot be read ({exc})") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataContractError(f"{path}: line {line} is not UTF-8 ({exc.reason} at byte {exc.start}); "
                                "the MicroLens files are UTF-8: re-download the file") from exc


def _read_titles(path: Path, report: ImportReport) -> pl.DataFrame:
    """The catalogue: one item per titled row (first copy of a repeated id kept)."""
    try:
        df = pl.read_csv(path, infer_schema=False)  # every column a string: ids keep their zeros
    except Exception as exc:  # polars raises several types for malformed CSV
        raise DataContractError(f"{path}: cannot be read as CSV with columns item,title "
                                f"({_first_line(exc)}); {_LAYOUT}") from exc
    if df.columns != list(_TITLE_COLUMNS):
        raise DataContractError(f"{path}: header is {','.join(df.columns)!r}; expected 'item,title'")
    item, title = pl.col("item").str.strip_chars(), pl.col("title").str.strip_chars()
    rows = df.select(item.alias(C.ITEM_ID), title.alias(C.TITLE)).with_columns(
        pl.when(pl.col(C.ITEM_ID).fill_null("") == "").then(pl.lit(MISSING_ID))
        .when(pl.col(C.TITLE).fill_null("") == "").then(pl.lit(EMPTY_TITLE)).alias(_REASON))
    # Among copies of one id, a titled copy wins; only then is a later copy a duplicate.
    rows = rows.with_row_index("__order").sort(pl.col(_REASON).is_not_null(), "__order").with_columns(
        pl.when(pl.col(_REASON).is_null() & ~pl.col(C.ITEM_ID).is_first_distinct())
        .then(pl.lit(DUPLICATE_ITEM)).otherwise(_REASON).alias(_REASON)).sort("__order")
    report.sources.append(_source(path.name, rows))
    return rows.filter(pl.col(_REASON).is_null()).select(
        C.ITEM_ID, C.TITLE,
        pl.lit(None, pl.String).alias(C.DESCRIPTION),
        pl.lit(None, pl.String).alias(C.CATEGORY),
        pl.lit([], pl.List(pl.String)).alias(C.TAGS),
        pl.lit(None, C.DATETIME).alias(C.PUBLISHED_AT),
    )


def _split_lines(path: Path) -> pl.DataFrame:
    """``(__line, user, items)`` per non-blank line of the pairs file; raise on a malformed line."""
    lines = pl.DataFrame({"line": _read_text(path).split("\n")}).with_row_index(_LINE, offset=1).with_columns(
        pl.col("line").str.strip_suffix("\r"))
    if lines.height and lines["line"][-1] == "":  # the final newline ends a line, it does not start one
        lines = lines.head(-1)
    fields = pl.col("line").str.split("\t")
    lines = lines.with_columns(fields.list.len().alias("__n"), fields.list.first().str.strip_chars().alias("user"),
                               fields.list.get(1, null_on_oob=True).alias("items"))
    blank = pl.col("line").str.strip_chars() == ""
    if lines.filter(~blank).is_empty():
        raise DataContractError(f"{path}: the file has no user lines; {_LAYOUT}")
    for bad, what in ((pl.col("__n") != 2, "does not have 2 tab-separated fields (user_id, items)"),
                      (pl.col("user") == "", "field user_id is empty")):
        hits = lines.filter(~blank & bad)
        if hits.height:
            raise DataContractError(f"{path}: line {hits[_LINE][0]} {what}; {hits.height:,} such line(s); "
                                    f"expected 'user_id<TAB>item item ...'")
    return lines.with_columns(pl.when(blank).then(pl.lit(BLANK_LINE)).alias(_REASON))


def _read_pairs(path: Path, items: pl.DataFrame, report: ImportReport) -> pl.DataFrame:
    """One click per (user, item) pair, dated by its position in the user's history."""
    lines = _split_lines(path)
    pairs = (
        lines.filter(pl.col(_REASON).is_null())
        .select(_LINE, "user", pl.col("items").str.split(" ").list.filter(pl.element() != "").alias(C.ITEM_ID))
        .explode(C.ITEM_ID)
        .filter(pl.col(C.ITEM_ID).is_not_null())
        .with_columns(pl.when(~pl.col(C.ITEM_ID).is_in(items[C.ITEM_ID].implode())).then(pl.lit(UNKNOWN_ITEM))
                      .alias(_REASON))
    )
    line_used = pairs.group_by(_LINE).agg(pl.col(_REASON).is_null().any().alias("__used"))
    line_reasons = lines.join(line_used, on=_LINE, how="left").with_columns(
        pl.when(pl.col(_REASON).is_not_null()).then(_REASON)
        .when(pl.col("__used").is_null()).then(pl.lit(NO_ITEMS))
        .when(~pl.col("__used")).then(pl.lit(UNKNOWN_ITEM)).alias(_REASON))
    report.sources.append(_source(f"{path.name} (lines)", line_reasons))
    report.sources.append(_source(f"{path.name} (pairs)", pairs))
    # The position counts every pair of the user, kept or not, so a dropped click leaves its gap.
    dated = pairs.with_columns(pl.int_range(pl.len()).over("user").alias(_POS)).filter(pl.col(_REASON).is_null())
    return dated.select(
        pl.col("user").alias(C.USER_ID),
        pl.col(C.ITEM_ID),
        (pl.lit(SYNTHETIC_EPOCH, C.DATETIME) + pl.duration(seconds=pl.col(_POS))).alias(C.TS),
        pl.lit(C.CLICK).alias(C.EVENT),
        pl.lit(None, pl.String).alias(C.IMPRESSION_ID),
        pl.lit(None, pl.Float64).alias(C.RATING),
        pl.lit(False).alias(C.FROM_HISTORY),
    )


def _source(file: str, rows: pl.DataFrame) -> SourceCount:
    """A SourceCount from rows with a ``__reason`` column (null: used)."""
    dropped = rows.filter(pl.col(_REASON).is_not_null())[_REASON].value_counts(sort=True)
    return SourceCount(file, rows.height, rows[_REASON].null_count(), dict(dropped.iter_rows()))
