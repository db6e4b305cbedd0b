"""Import MIND (Microsoft News Dataset) into the data contract.

MIND ships per split (``MINDsmall_train/``, ``MINDsmall_dev/``...) two headerless TSV files:

- ``behaviors.tsv``: ``impression_id, user_id, time, history, impressions``; ``time`` looks like
  ``11/15/2019 10:22:32 AM``, ``history`` is space-separated news ids (may be empty) and
  ``impressions`` is space-separated ``N1234-1`` / ``N5678-0`` (label 1 = clicked).
- ``news.tsv``: ``news_id, category, subcategory, title, abstract, url, title_entities,
  abstract_entities``.

Every shown item becomes an ``impression`` row and every clicked one also a ``click`` row, both
with the impression's time and id. MIND has no time for history clicks, so each (user, item)
of the history becomes one ``click`` with ``from_history=True``, dated one second before the
user's first impression that lists it: early enough to be history for that impression, and
no earlier than the data shows.

Titles and abstracts are cleaned of HTML tags and entities (:mod:`recsys.importers.text_cleaning`);
the report counts the news whose text that changed.

Everything runs on lazy polars frames (MIND-large's ``behaviors.tsv`` is about 1 GB); the only
eager tables are ``news.tsv`` (small) and the output.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys import contract as C
from recsys.errors import DataContractError
from recsys.importers.base import ImportedDataset, ImportReport, SourceCount
from recsys.importers.text_cleaning import clean_text, markup_removed

__all__ = ["import_mind"]

logger = logging.getLogger(__name__)

BEHAVIORS_FILE = "behaviors.tsv"
NEWS_FILE = "news.tsv"
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
_WORD = r"[^ ]+"  # a news id in ``history``, an ``N1234-1`` in ``impressions``

# Field names of the published (headerless) files.
_IMP_ID, _USER, _TIME, _HISTORY, _IMPRESSIONS = "impression_id", "user_id", "time", "history", "impressions"
_BEHAVIORS_SCHEMA = {name: pl.String() for name in (_IMP_ID, _USER, _TIME, _HISTORY, _IMPRESSIONS)}
_NEWS_ID, _CATEGORY, _SUBCATEGORY, _TITLE, _ABSTRACT = "news_id", "category", "subcategory", "title", "abstract"
_NEWS_SCHEMA = {name: pl.String() for name in (_NEWS_ID, _CATEGORY, _SUBCATEGORY, _TITLE, _ABSTRACT, "url",
                                               "title_entities", "abstract_entities")}

# Working columns (never written); _LABEL is "clicked", null for an unlabelled (test split) item.
_FILE, _LINE, _TOKEN, _LABEL, _REASON, _USED, _UNLABELLED = (
    "__file", "__line", "__token", "__label", "__reason", "__used", "__unlabelled")

# Drop reasons, as they appear in the report.
UNKNOWN_NEWS = "news id not in news.tsv"
UNTITLED_NEWS = "news has no title"
NO_LABEL = "shown item has no click label (MIND test split)"
REPEATED_HISTORY = "history entry repeated (one click kept per user and item)"
DUPLICATE_NEWS = "news id already read (duplicate)"
BLANK_LINE = "blank line"

# Repairs of kept news, as they appear in the report (the flag column of each).
TITLE_MARKUP = "markup removed from title"
ABSTRACT_MARKUP = "markup removed from abstract"
_REPAIRS = {TITLE_MARKUP: "__title_markup", ABSTRACT_MARKUP: "__abstract_markup"}

_BEHAVIORS_HELP = ("expected 5 tab-separated fields per line: impression id, user id, time like "
                   "'11/15/2019 10:22:32 AM', history (space-separated news ids, may be empty), impressions "
                   "('N1234-1 N5678-0'); re-extract the file from the MIND zip")
_NEWS_HELP = ("expected 8 tab-separated fields per line: news id, category, subcategory, title, abstract, "
              "url, title entities, abstract entities; re-extract the file from the MIND zip")


@dataclass(frozen=True)
class _Split:
    """One folder holding ``behaviors.tsv`` and ``news.tsv``; ``name`` prefixes its impression ids."""

    folder: Path
    name: str | None

    def label(self, file: str) -> str:
        return f"{self.name}/{file}" if self.name else file


def import_mind(src: str | os.PathLike[str]) -> ImportedDataset:
    """Convert a MIND folder (one split, or one subfolder per split) to contract frames.

    Args:
        src: a folder holding ``behaviors.tsv`` and ``news.tsv``, or a folder whose subfolders
            (e.g. ``MINDsmall_train/``, ``MINDsmall_dev/``) each hold both. Splits are then
            concatenated in name order, news deduplicated by id (first titled copy kept), and
            impression ids prefixed with the subfolder name (``MINDsmall_dev/1``) because they
            restart at 1 in every split.

    Returns:
        Items (``news_id`` -> ``item_id``, abstract -> ``description``, subcategory -> ``tags``)
        and interactions (``impression``, ``click``, history ``click`` rows), with a report that
        accounts for every news line, behaviors line, shown item and history entry.

    Raises:
        DataContractError: the folder or a file is missing, or a file cannot be parsed.
    """
    splits = _find_splits(Path(src))
    report = ImportReport(dataset="mind")
    items, untitled = _read_news(splits, report)
    scans = {split.label(BEHAVIORS_FILE): _scan_behaviors(split) for split in splits}
    behaviors = pl.concat([lf for lf, _ in scans.values()], how="vertical")
    reason = _item_reason(items, untitled)
    shown = _shown_items(behaviors, reason)
    history = _history_entries(behaviors, reason)
    kept_history = _first_history_clicks(history)
    logger.info("mind: exploding impressions and history of %d split(s)", len(splits))
    try:
        interactions, *counts = pl.collect_all([
            _interactions(shown, kept_history),
            _token_totals(behaviors),
            shown.group_by(_FILE, _REASON).len(),
            history.group_by(_FILE, _REASON).len(),
            kept_history.group_by(_FILE).len(),
            _line_outcomes(shown, history).group_by(_FILE, _REASON).len(),
        ], engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataContractError(f"{src}: cannot read the MIND behaviors files ({_first_line(exc)}); "
                                f"{_BEHAVIORS_HELP}") from exc
    for label, (_, lines) in scans.items():
        report.sources += _behaviors_sources(label, lines, *counts)
    report.tables = {C.ITEMS_FILE: items.height, C.INTERACTIONS_FILE: interactions.height}
    report.notes.append(_event_note(interactions))
    report.notes.append("history clicks are dated 1 second before the user's first impression listing them")
    report.check()
    logger.info("mind: %d items, %d interactions", items.height, interactions.height)
    return ImportedDataset(items=items, interactions=interactions, report=report)


def _find_splits(src: Path) -> list[_Split]:
    """The split folders under ``src``; raise with the expected layout when files are missing."""
    layout = (f"expected {BEHAVIORS_FILE} and {NEWS_FILE} in it, or in each of its subfolders "
              "(e.g. MINDsmall_train/, MINDsmall_dev/)")
    if not src.exists():
        raise DataContractError(f"{src}: MIND folder not found; pass the unzipped MIND folder ({layout})")
    if not src.is_dir():
        raise DataContractError(f"{src}: is a file; pass the MIND folder instead ({layout})")
    if (src / BEHAVIORS_FILE).exists() or (src / NEWS_FILE).exists():
        splits = [_Split(src, None)]
    else:
        splits = [_Split(d, d.name) for d in sorted(src.iterdir())
                  if d.is_dir() and ((d / BEHAVIORS_FILE).exists() or (d / NEWS_FILE).exists())]
    if not splits:
        raise DataContractError(f"{src}: no MIND files found; {layout}")
    for split in splits:
        missing = [f for f in (BEHAVIORS_FILE, NEWS_FILE) if not (split.folder / f).is_file()]
        if missing:
            raise DataContractError(f"{split.folder}: missing {', '.join(missing)}; every MIND split folder "
                                    f"needs both {BEHAVIORS_FILE} and {NEWS_FILE}")
    return splits


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _scan(path: Path, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    # quote_char=None: titles and entity JSON hold quotes that are not CSV quoting.
    return pl.scan_csv(path, separator="\t", has_header=False, quote_char=None, schema=schema
                       ).with_row_index(_LINE, offset=1)


@dataclass(frozen=True)
class _Lines:
    """Line counts of one file, from the checking pass (independent of the conversion)."""

    total: int
    blank: int


def _checked_lines(lf: pl.LazyFrame, bad: pl.Expr, path: Path, help_text: str) -> _Lines:
    """One pass over a file: count its lines and blank lines; raise naming malformed lines."""
    blank = pl.all_horizontal([pl.col(c).is_null() for c in lf.collect_schema().names() if c != _LINE])
    bad = ~blank & bad
    try:
        n, n_blank, n_bad, examples = lf.select(
            pl.len(), blank.sum(), bad.sum().alias("n_bad"),
            pl.col(_LINE).filter(bad).head(5).implode().alias("examples")).collect().row(0)
    except (pl.exceptions.PolarsError, OSError) as exc:  # OSError: polars sniffs gzip magic bytes
        raise DataContractError(f"{path}: cannot be parsed ({_first_line(exc)}); {help_text}") from exc
    if n == n_blank:
        raise DataContractError(f"{path}: the file is empty; {help_text}")
    if n_bad:
        raise DataContractError(f"{path}: {n_bad:,} malformed line(s), e.g. line "
                                f"{', '.join(map(str, examples))}; {help_text}")
    return _Lines(n, n_blank)


def _read_news(splits: list[_Split], report: ImportReport) -> tuple[pl.DataFrame, pl.Series]:
    """Items from every ``news.tsv``, plus the ids of news that only exist without a title."""
    frames, lines = [], {}
    for split in splits:
        path, label = split.folder / NEWS_FILE, split.label(NEWS_FILE)
        logger.info("mind: reading %s", path)
        lf = _scan(path, _NEWS_SCHEMA)
        lines[label] = _checked_lines(lf, pl.col(_NEWS_ID).is_null() | pl.col(_CATEGORY).is_null(), path,
                                      _NEWS_HELP)
        frames.append(lf.with_columns(pl.lit(label).alias(_FILE)).collect())
    raw = pl.concat(frames).with_row_index("__order")
    news = raw.with_columns(clean_text(pl.col(_TITLE)), clean_text(pl.col(_ABSTRACT)))
    news = news.with_columns(
        (pl.col(_TITLE).is_not_null() & markup_removed(raw[_TITLE], pl.col(_TITLE))).alias(_REPAIRS[TITLE_MARKUP]),
        markup_removed(raw[_ABSTRACT], pl.col(_ABSTRACT)).alias(_REPAIRS[ABSTRACT_MARKUP]))
    # Titled copies first, so an id is only "untitled" when no split has a title for it.
    ranked = news.sort(pl.col(_TITLE).is_null(), "__order").with_columns(
        pl.when(pl.col(_NEWS_ID).is_null()).then(pl.lit(BLANK_LINE))
        .when(~pl.col(_NEWS_ID).is_first_distinct()).then(pl.lit(DUPLICATE_NEWS))
        .when(pl.col(_TITLE).is_null()).then(pl.lit(UNTITLED_NEWS)).alias(_REASON))
    counts = ranked.group_by(_FILE, _REASON).len()
    repairs = ranked.filter(pl.col(_REASON).is_null()).group_by(_FILE).agg(
        pl.col(c).sum().alias(r) for r, c in _REPAIRS.items())
    report.sources += [_source(label, n.total, counts.filter(pl.col(_FILE) == label),
                               repairs.filter(pl.col(_FILE) == label).drop(_FILE))
                       for label, n in lines.items()]
    items = ranked.filter(pl.col(_REASON).is_null()).sort("__order").select(
        pl.col(_NEWS_ID).alias(C.ITEM_ID),
        pl.col(_TITLE).alias(C.TITLE),
        pl.col(_ABSTRACT).alias(C.DESCRIPTION),
        pl.col(_CATEGORY).alias(C.CATEGORY),
        pl.concat_list(pl.col(_SUBCATEGORY)).list.drop_nulls().alias(C.TAGS),
        pl.lit(None, C.ITEM_SCHEMA[C.PUBLISHED_AT]).alias(C.PUBLISHED_AT),
    ).cast(C.ITEM_SCHEMA)
    return items, ranked.filter(pl.col(_REASON) == UNTITLED_NEWS)[_NEWS_ID]


def _source(file: str, rows_in: int, counts: pl.DataFrame, repairs: pl.DataFrame | None = None) -> SourceCount:
    """A SourceCount from an independently counted ``rows_in`` and ``(__reason, len)`` counts.

    A null reason means used; ``report.check`` then proves the two counts agree. ``repairs``
    is one row (or none) of used rows repaired, one column per repair.
    """
    per_reason = dict(counts.select(_REASON, "len").iter_rows())
    used = per_reason.pop(None, 0)
    repaired = ({r: n for r, n in repairs.row(0, named=True).items() if n}
                if repairs is not None and repairs.height else {})
    return SourceCount(file=file, rows_in=rows_in, rows_out=used, dropped=dict(sorted(per_reason.items())),
                       repaired=repaired)


def _scan_behaviors(split: _Split) -> tuple[pl.LazyFrame, _Lines]:
    """Check one ``behaviors.tsv`` (one pass); return it lazily with parsed times, and its line counts."""
    path = split.folder / BEHAVIORS_FILE
    logger.info("mind: checking %s", path)
    lf = _scan(path, _BEHAVIORS_SCHEMA)
    time = pl.col(_TIME).str.to_datetime(TIME_FORMAT, strict=False, time_unit="us")
    bad = (pl.col(_IMP_ID).is_null() | pl.col(_USER).is_null() | time.is_null()
           | ~pl.col(_IMPRESSIONS).str.contains(r"\S").fill_null(False))
    lines = _checked_lines(lf, bad, path, _BEHAVIORS_HELP)
    prefix = f"{split.name}/" if split.name else ""
    return lf.filter(pl.col(_USER).is_not_null()).select(
        pl.lit(split.label(BEHAVIORS_FILE)).alias(_FILE),
        pl.col(_LINE),
        pl.col(_USER).alias(C.USER_ID),
        time.alias(C.TS),
        (pl.lit(prefix) + pl.col(_IMP_ID)).alias(C.IMPRESSION_ID),
        pl.col(_HISTORY),
        pl.col(_IMPRESSIONS),
    ), lines


def _item_reason(items: pl.DataFrame, untitled: pl.Series) -> pl.Expr:
    """Why an interaction with ``item_id`` cannot be kept (null when its item is in the catalogue)."""
    item = pl.col(C.ITEM_ID)
    return (pl.when(item.is_in(untitled.implode())).then(pl.lit(UNTITLED_NEWS))
            .when(~item.is_in(items[C.ITEM_ID].implode())).then(pl.lit(UNKNOWN_NEWS)))


def _words(column: str) -> pl.Expr:
    # Split on single spaces and drop the empty pieces (faster than extract_all); _WORD counts the same.
    return pl.col(column).str.split(" ").list.filter(pl.element() != "")


def _token_totals(behaviors: pl.LazyFrame) -> pl.LazyFrame:
    """Shown items and history entries per file, counted without exploding (for the count check)."""
    return behaviors.group_by(_FILE).agg(
        pl.col(_IMPRESSIONS).str.count_matches(_WORD).sum().alias(_IMPRESSIONS),
        pl.col(_HISTORY).str.count_matches(_WORD).sum().alias(_HISTORY))


def _shown_items(behaviors: pl.LazyFrame, item_reason: pl.Expr) -> pl.LazyFrame:
    """One row per shown item (``N1234-1``), with its click label and why it is dropped, if it is."""
    suffix = pl.col(_TOKEN).str.slice(-2)  # string slicing: ~3x faster than a regex on 80M tokens
    labelled = suffix.is_in(["-0", "-1"])
    return (
        behaviors.select(_FILE, _LINE, C.USER_ID, C.TS, C.IMPRESSION_ID, _words(_IMPRESSIONS).alias(_TOKEN))
        .explode(_TOKEN)
        .with_columns(pl.when(labelled).then(suffix == "-1").alias(_LABEL),
                      pl.when(labelled).then(pl.col(_TOKEN).str.head(-2)).otherwise(_TOKEN).alias(C.ITEM_ID))
        .with_columns(pl.when(pl.col(_LABEL).is_null()).then(pl.lit(NO_LABEL)).otherwise(item_reason)
                      .alias(_REASON))
    )


def _history_entries(behaviors: pl.LazyFrame, item_reason: pl.Expr) -> pl.LazyFrame:
    """One row per history entry of every behaviors line (repeats across lines included)."""
    return (
        behaviors.select(_FILE, _LINE, C.USER_ID, C.TS, _words(_HISTORY).alias(C.ITEM_ID))
        .explode(C.ITEM_ID)
        .filter(pl.col(C.ITEM_ID).is_not_null())
        .with_columns(item_reason.alias(_REASON))
    )


def _first_history_clicks(history: pl.LazyFrame) -> pl.LazyFrame:
    """One history click per (user, item), at its first impression; ``__file`` is where it came from."""
    return (
        history.filter(pl.col(_REASON).is_null())
        .group_by(C.USER_ID, C.ITEM_ID)
        .agg((pl.col(C.TS).min() - pl.duration(seconds=1)).alias(C.TS),
             pl.col(_FILE).sort_by(C.TS, _FILE, _LINE).first().alias(_FILE))
    )


def _as_interactions(lf: pl.LazyFrame, event: str, *, from_history: bool) -> pl.LazyFrame:
    impression = pl.lit(None, pl.String) if from_history else pl.col(C.IMPRESSION_ID)
    return lf.select(
        pl.col(C.USER_ID), pl.col(C.ITEM_ID), pl.col(C.TS), pl.lit(event).alias(C.EVENT),
        impression.alias(C.IMPRESSION_ID), pl.lit(None, pl.Float64).alias(C.RATING),
        pl.lit(from_history).alias(C.FROM_HISTORY),
    ).cast(C.INTERACTION_SCHEMA)


def _interactions(shown: pl.LazyFrame, kept_history: pl.LazyFrame) -> pl.LazyFrame:
    kept = shown.filter(pl.col(_REASON).is_null())
    return pl.concat([
        _as_interactions(kept, C.IMPRESSION, from_history=False),
        _as_interactions(kept.filter(pl.col(_LABEL)), C.CLICK, from_history=False),
        _as_interactions(kept_history, C.CLICK, from_history=True),
    ])


def _line_outcomes(shown: pl.LazyFrame, history: pl.LazyFrame) -> pl.LazyFrame:
    """One row per non-blank behaviors line: null reason when it yielded a row, else why not.

    A line counts as used when one of its shown items is kept or one of its history items is
    in the catalogue (its history click may be credited to an earlier line of the same user).
    """
    used = pl.col(_REASON).is_null().alias(_USED)
    return (
        pl.concat([
            shown.select(_FILE, _LINE, used, (pl.col(_REASON) == NO_LABEL).fill_null(False).alias(_UNLABELLED)),
            history.select(_FILE, _LINE, used, pl.lit(False).alias(_UNLABELLED)),
        ])
        .group_by(_FILE, _LINE)
        .agg(pl.col(_USED).any(), pl.col(_UNLABELLED).any())
        .select(_FILE, pl.when(pl.col(_USED)).then(pl.lit(None, pl.String))
                .when(pl.col(_UNLABELLED)).then(pl.lit(NO_LABEL))
                .otherwise(pl.lit(UNKNOWN_NEWS)).alias(_REASON))
    )


def _behaviors_sources(label: str, lines: _Lines, totals: pl.DataFrame, shown_n: pl.DataFrame,
                       history_n: pl.DataFrame, kept_n: pl.DataFrame, lines_n: pl.DataFrame
                       ) -> list[SourceCount]:
    """The count checks of one behaviors file: its lines, its shown items, its history entries.

    Args:
        label: the file as named in the report (``MINDsmall_dev/behaviors.tsv``).
        lines: line counts from the checking pass.
        totals: ``(__file, impressions, history)``: words per column, counted without exploding.
        shown_n, history_n, lines_n: ``(__file, __reason, len)``; a null reason means used.
        kept_n: ``(__file, len)``: history clicks written, credited to the file of their first line.
    """
    mine = pl.col(_FILE) == label
    n_shown, n_history = totals.filter(mine).select(_IMPRESSIONS, _HISTORY).row(0)
    line_count = _source(label, lines.total, lines_n.filter(mine))
    if lines.blank:
        line_count.dropped[BLANK_LINE] = lines.blank
    shown = _source(f"{label} (shown items)", n_shown, shown_n.filter(mine))
    history = _source(f"{label} (history entries)", n_history or 0, history_n.filter(mine))
    kept = kept_n.filter(mine)["len"].sum()
    if history.rows_out > kept:  # in the catalogue, but the click was already taken from an earlier line
        history.dropped[REPEATED_HISTORY] = history.rows_out - kept
    history.rows_out = kept
    return [line_count, shown, history]


def _event_note(interactions: pl.DataFrame) -> str:
    counts = interactions.group_by(C.EVENT, C.FROM_HISTORY).len().sort(C.EVENT, C.FROM_HISTORY)
    parts = [f"{event}{' (from history)' if hist else ''} {n:,}" for event, hist, n in counts.iter_rows()]
    return "interactions by event: " + ", ".join(parts)
