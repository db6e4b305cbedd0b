"""Import Amazon product reviews (the 2014, 2018 and 2023 releases) into the data contract.

Each release is a reviews file plus a ``meta_`` file per category, JSON Lines, often gzipped:

=====  ==================================  ==========================  ============================
year   reviews                             meta                        notes
=====  ==================================  ==========================  ============================
2014   ``reviews_<Cat>[_5].json[.gz]``     ``meta_<Cat>.json[.gz]``    meta lines are Python dict
                                                                       literals (single quotes)
2018   ``<Cat>[_5].json[.gz]``             ``meta_<Cat>.json[.gz]``    strict JSON
2023   ``<Cat>.jsonl[.gz]``                ``meta_<Cat>.jsonl[.gz]``   times in milliseconds; items
                                                                       are ``parent_asin``
=====  ==================================  ==========================  ============================

A review is a ``purchase`` event with its star rating. Item text is cleaned of scraped HTML
(:mod:`recsys.importers.text_cleaning`); a title that is empty or only markup is taken from the
``brand`` (2023: ``store``), else from the description's first sentence, and the report counts
every such repair.

Files are read in blocks of whole lines (gunzipped on the fly) and every block is parsed by
``pl.read_ndjson`` with a schema of only the fields used, so a 10 GB category never needs its
text held as Python objects. Only the 2014 meta is parsed line by line, because Python literals
are not JSON.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
from tqdm.auto import tqdm

from recsys import contract as C
from recsys.console import bars
from recsys.errors import DataContractError
from recsys.importers.base import ImportedDataset, ImportReport, SourceCount
from recsys.importers.text_cleaning import clean_text, headline, markup_removed

__all__ = ["import_amazon"]

logger = logging.getLogger(__name__)

_BLOCK_BYTES = 8 << 20  # ~8 MiB of lines per read_ndjson call: tens of thousands of reviews

# Working columns of the meta table, whatever the release calls them.
_ID, _TITLE, _DESC, _PATH, _MAIN, _FEATURES, _REASON, _ORDER, _BRAND = (
    "__id", "__title", "__desc", "__path", "__main", "__features", "__reason", "__order", "__brand")

# Drop reasons, as they appear in the report.
NO_ID = "missing item id"
DUPLICATE_ITEM = "duplicate item id in meta (first titled copy kept)"
NO_TITLE = "item has no title"
MISSING_FIELD = "missing user id, item id or time"
NOT_IN_META = "item not in meta file"
DUPLICATE_REVIEW = "duplicate review (same user, item and time)"

# Repairs of kept items, as they appear in the report (the column of the meta frame flagging each).
TITLE_FROM_BRAND = "title from brand"
TITLE_FROM_DESCRIPTION = "title from description"
TITLE_MARKUP = "markup removed from title"
DESCRIPTION_MARKUP = "markup removed from description"
_REPAIRS = {TITLE_FROM_BRAND: "__from_brand", TITLE_FROM_DESCRIPTION: "__from_desc",
            TITLE_MARKUP: "__title_markup", DESCRIPTION_MARKUP: "__desc_markup"}


@dataclass(frozen=True)
class _Release:
    """How one release names its files and fields."""

    year: int
    reviews: re.Pattern[str]
    """Matches a reviews file name; group ``name`` is the category, with ``_5`` for 5-core files."""
    meta_ext: str
    review_fields: tuple[str, str, str, str]
    """Source fields holding the user, the item, the rating and the time."""
    time_unit: Literal["s", "ms"]
    meta_fields: dict[str, pl.DataType]
    """Source meta fields read, in the order ``_ID, _TITLE, _DESC, _PATH[, _MAIN[, _FEATURES]]``."""
    brand: str
    """Source meta field naming the maker or seller: a title when the item's own is missing or markup."""
    python_literals: bool = False

    @property
    def meta_schema(self) -> dict[str, pl.DataType]:
        return {**self.meta_fields, self.brand: pl.String()}


_RELEASES = (
    _Release(2014, re.compile(r"^reviews_(?P<name>.+)\.json(\.gz)?$"), ".json",
             ("reviewerID", "asin", "overall", "unixReviewTime"), "s",
             {"asin": pl.String(), "title": pl.String(), "description": pl.String(),
              "categories": pl.List(pl.List(pl.String()))}, "brand", python_literals=True),
    _Release(2023, re.compile(r"^(?!meta_)(?P<name>.+)\.jsonl(\.gz)?$"), ".jsonl",
             ("user_id", "parent_asin", "rating", "timestamp"), "ms",
             {"parent_asin": pl.String(), "title": pl.String(), "description": pl.List(pl.String()),
              "categories": pl.List(pl.String()), "main_category": pl.String(),
              "features": pl.List(pl.String())}, "store"),
    _Release(2018, re.compile(r"^(?!meta_|reviews_)(?P<name>.+)\.json(\.gz)?$"), ".json",
             ("reviewerID", "asin", "overall", "unixReviewTime"), "s",
             {"asin": pl.String(), "title": pl.String(), "description": pl.List(pl.String()),
              "category": pl.List(pl.String()), "main_cat": pl.String()}, "brand"),
)
_LAYOUT = ("expected reviews_<Cat>[_5].json[.gz] + meta_<Cat>.json[.gz] (2014), <Cat>[_5].json[.gz] + "
           "meta_<Cat>.json[.gz] (2018) or <Cat>.jsonl[.gz] + meta_<Cat>.jsonl[.gz] (2023)")


def import_amazon(src: str | os.PathLike[str], *, category: str | None = None,
                  show_progress: bool = False) -> ImportedDataset:
    """Convert one category of Amazon reviews (2014, 2018 or 2023 release) to contract frames.

    Args:
        src: a folder holding a reviews file and its ``meta_`` file, or the reviews file itself
            (its meta file beside it). The release is recognised by the file names.
        category: which category to import when the folder holds several, as in the file name
            (``Books``, or ``Books_5`` for the 5-core file when both are there).
        show_progress: show a progress bar over the bytes read from each file.

    Returns:
        Items (``asin``, or ``parent_asin`` for 2023; HTML-free title and description, the title
        repaired from the brand or the description when it is missing or only markup; the top
        category and the de-duplicated category path as tags) and ``purchase`` interactions with
        the rating, plus a report accounting for every meta and review line and counting repairs.

    Raises:
        DataContractError: the folder, the reviews file or the meta file is missing, the
            category is ambiguous or unknown, or a line cannot be parsed.
    """
    reviews_path, meta_path, release = _locate(Path(src), category)
    logger.info("amazon %d: reading %s", release.year, meta_path)
    meta = _read_lines(meta_path, release.meta_schema, show_progress=show_progress,
                       python_literals=release.python_literals)
    meta = _clean_meta(_normalise_meta(meta, release))
    logger.info("amazon %d: reading %s", release.year, reviews_path)
    reviews = _review_reasons(_read_reviews(reviews_path, release, show_progress=show_progress), meta)
    items = meta.filter(pl.col(_REASON).is_null()).sort(_ORDER).select(
        pl.col(_ID).alias(C.ITEM_ID), pl.col(_TITLE).alias(C.TITLE), pl.col(_DESC).alias(C.DESCRIPTION),
        pl.col(_MAIN).alias(C.CATEGORY), pl.col(_PATH).alias(C.TAGS),
        pl.lit(None, C.ITEM_SCHEMA[C.PUBLISHED_AT]).alias(C.PUBLISHED_AT),
    ).cast(C.ITEM_SCHEMA)
    interactions = reviews.filter(pl.col(_REASON).is_null()).select(
        C.USER_ID, C.ITEM_ID, C.TS, pl.lit(C.PURCHASE).alias(C.EVENT),
        pl.lit(None, pl.String).alias(C.IMPRESSION_ID), C.RATING, pl.lit(False).alias(C.FROM_HISTORY),
    ).cast(C.INTERACTION_SCHEMA)
    report = ImportReport(dataset="amazon", sources=[
        _source(meta_path.name, meta), _source(reviews_path.name, reviews)])
    report.tables = {C.ITEMS_FILE: items.height, C.INTERACTIONS_FILE: interactions.height}
    report.notes.append(f"release {release.year}: {reviews_path.name} with {meta_path.name}")
    report.check()
    logger.info("amazon %d: %d items, %d purchases", release.year, items.height, interactions.height)
    return ImportedDataset(items=items, interactions=interactions, report=report)


def _locate(src: Path, category: str | None) -> tuple[Path, Path, _Release]:
    """The reviews file, its meta file and the release, from a folder or a reviews file."""
    if not src.exists():
        raise DataContractError(f"{src}: Amazon reviews folder or file not found; pass the folder holding "
                                f"the downloaded files ({_LAYOUT})")
    if src.is_file() and src.name.startswith("meta_"):
        raise DataContractError(f"{src}: is a meta file; pass the reviews file or the folder ({_LAYOUT})")
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.is_file())
    found: dict[str, tuple[Path, _Release]] = {}
    for path in files:  # sorted, so Books.json (uncompressed) wins over Books.json.gz
        release = next((r for r in _RELEASES if r.reviews.match(path.name)), None)
        if release is not None:
            found.setdefault(release.reviews.match(path.name)["name"], (path, release))
    if not found:
        raise DataContractError(f"{src}: no Amazon reviews file found; {_LAYOUT}")
    name = _pick_category(src, found, category)
    reviews, release = found[name]
    base = name.removesuffix("_5")
    expected = [f"meta_{base}{release.meta_ext}", f"meta_{base}{release.meta_ext}.gz"]
    meta = next((reviews.parent / m for m in expected if (reviews.parent / m).is_file()), None)
    if meta is None:
        raise DataContractError(f"{reviews.parent}: missing the meta file of {reviews.name}; expected "
                                f"{' or '.join(expected)} beside it (download it with the reviews)")
    return reviews, meta, release


def _pick_category(src: Path, found: dict[str, tuple[Path, _Release]], category: str | None) -> str:
    names = sorted(found)
    if category is None:
        if len(names) == 1:
            return names[0]
        raise DataContractError(f"{src}: holds reviews of several categories ({', '.join(names)}); "
                                "pick one with category= (--category)")
    if category in found:
        return category
    matches = [n for n in names if n.removesuffix("_5") == category]
    if len(matches) == 1:
        return matches[0]
    raise DataContractError(f"{src}: no reviews file for category {category!r}; found: {', '.join(names)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _blocks(path: Path, *, show_progress: bool) -> Iterator[tuple[int, bytes]]:
    """Whole lines of ``path`` (gunzipped on the fly) in ~8 MiB blocks, with the first line's number."""
    with path.open("rb") as raw, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name,
                                      disable=bars(show_progress)) as bar:
        stream = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
        line, rest = 1, b""
        while True:
            try:
                block = stream.read(_BLOCK_BYTES)
            except (OSError, EOFError, zlib.error) as exc:  # not gzip, or cut short
                raise DataContractError(f"{path}: cannot be decompressed after line {line} ({exc}); the "
                                        "download is incomplete or corrupt: download it again") from exc
            bar.update(raw.tell() - bar.n)  # compressed bytes: the bar ends at the file size
            if not block:
                break
            block, rest = rest + block, b""
            cut = block.rfind(b"\n") + 1
            block, rest = block[:cut], block[cut:]
            if block:
                yield line, block
                line += block.count(b"\n")
        if rest.strip():
            yield line, rest


def _read_lines(path: Path, schema: dict[str, pl.DataType], *, show_progress: bool,
                python_literals: bool = False) -> pl.DataFrame:
    """Parse a JSON Lines file (``.gz`` or not) into a frame holding only the ``schema`` fields."""
    frames = []
    for first, block in _blocks(path, show_progress=show_progress):
        if python_literals:
            block = _literals_as_json(block, first, path, list(schema))
        try:
            frames.append(pl.read_ndjson(block, schema=schema))
        except pl.exceptions.PolarsError as exc:
            raise _parse_error(path, block, first, exc) from exc
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    if frame.height == 0:
        raise DataContractError(f"{path}: the file has no records; {_LAYOUT}")
    return frame


def _parse_error(path: Path, block: bytes, first: int, exc: Exception) -> DataContractError:
    """Name the first line of a block that is not JSON (the slow search runs only on failure)."""
    for offset, line in enumerate(block.split(b"\n")):
        try:
            if line.strip():
                json.loads(line)
        except ValueError as bad:
            return DataContractError(f"{path}: line {first + offset} is not valid JSON ({bad}); the file "
                                     "is damaged or not in the Amazon reviews format: download it again")
    last = first + block.count(b"\n")
    return DataContractError(f"{path}: lines {first}-{last} cannot be read ({_first_line(exc)}); a field "
                             f"has an unexpected type for this release ({_LAYOUT})")


def _literals_as_json(block: bytes, first: int, path: Path, fields: list[str]) -> bytes:
    """2014 meta lines are Python dict literals: parse each, keep ``fields``, re-encode as JSON."""
    out = []
    for offset, line in enumerate(block.split(b"\n")):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            try:
                record = ast.literal_eval(line.decode("utf-8"))
            except (ValueError, TypeError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
                raise DataContractError(
                    f"{path}: line {first + offset} is neither JSON nor a Python dict literal "
                    f"({_first_line(exc)}); the file is damaged: download it again") from exc
        if not isinstance(record, dict):
            raise DataContractError(f"{path}: line {first + offset} is not a record ({type(record).__name__})")
        out.append(json.dumps({f: record.get(f) for f in fields}, default=str))
    return "\n".join(out).encode()


def _normalise_meta(meta: pl.DataFrame, release: _Release) -> pl.DataFrame:
    """Rename a release's meta fields to the working columns, with lists for text and categories."""
    names = list(release.meta_fields)
    meta = meta.rename({**dict(zip(names, (_ID, _TITLE, _DESC, _PATH, _MAIN, _FEATURES)[:len(names)], strict=True)),
                        release.brand: _BRAND})
    if release.python_literals:  # 2014: one description string (its lines, as 2018 lists paragraphs), category paths
        meta = meta.with_columns(pl.col(_DESC).str.split("\n"), pl.col(_PATH).list.eval(pl.element().explode()))
    for name, dtype in ((_MAIN, pl.String()), (_FEATURES, pl.List(pl.String()))):
        if name not in meta.columns:
            meta = meta.with_columns(pl.lit(None, dtype).alias(name))
    return meta.with_row_index(_ORDER)


def _clean_meta(meta: pl.DataFrame) -> pl.DataFrame:
    """Item text and categories, the repairs made to it, and why a meta line is not an item (null: it is one).

    A title that is empty or only markup (most 2018 Magazine Subscriptions titles are a cut
    ``<span class=...`` tag) is taken from the brand, else from the first sentence of the first
    description line, so that the item keeps its reviews; flag columns (``_REPAIRS``) say which.
    """
    tags = (pl.col(_PATH).list.eval(clean_text(pl.element())).list.drop_nulls()
            .list.unique(maintain_order=True).fill_null([]))
    # 2018 main_cat is sometimes an <img ... alt="Digital Music"/> logo: its alt text is the name.
    main = pl.coalesce(clean_text(pl.col(_MAIN).str.extract(r'alt="([^"]*)"')), clean_text(pl.col(_MAIN)))
    own, lines, features = "__own_title", "__lines", "__clean_features"
    # Each text cleaned once (entities go through Python); what derives from it comes in a second step.
    cleaned = meta.with_columns(
        _non_empty(pl.col(_ID)).alias(_ID),
        clean_text(pl.col(_TITLE)).alias(own),
        clean_text(pl.col(_BRAND)).alias(_BRAND),
        pl.col(_DESC).list.eval(clean_text(pl.element())).list.drop_nulls().alias(lines),
        clean_text(pl.col(_FEATURES).list.join(" ")).alias(features),
        tags.alias(_PATH),
    )
    description = pl.col(lines).list.join(" ").replace("", None)
    from_description = headline(pl.col(lines).list.first())
    untitled = pl.col(own).is_null()
    cleaned = cleaned.with_columns(
        pl.coalesce(own, _BRAND, from_description).alias(_TITLE),
        # 2023 items often have only bullet-point features: better text than none.
        pl.coalesce(description, features).alias(_DESC),
        pl.coalesce(main, pl.col(_PATH).list.first()).alias(_MAIN),
        (untitled & pl.col(_BRAND).is_not_null()).alias(_REPAIRS[TITLE_FROM_BRAND]),
        (untitled & pl.col(_BRAND).is_null() & from_description.is_not_null()).alias(_REPAIRS[TITLE_FROM_DESCRIPTION]),
        (~untitled & markup_removed(pl.col(_TITLE), pl.col(own))).alias(_REPAIRS[TITLE_MARKUP]),
        (markup_removed(pl.col(_DESC).list.join(" "), description)
         | (description.is_null() & markup_removed(pl.col(_FEATURES).list.join(" "), pl.col(features)))
         ).alias(_REPAIRS[DESCRIPTION_MARKUP]),
    ).drop(lines, features, _BRAND, _FEATURES)
    # Titled copies first (their own title before a repaired one), so an id is only "untitled"
    # when none of its lines has a title.
    return cleaned.sort(pl.col(_TITLE).is_null(), pl.col(own).is_null(), _ORDER).drop(own).with_columns(
        pl.when(pl.col(_ID).is_null()).then(pl.lit(NO_ID))
        .when(~pl.col(_ID).is_first_distinct()).then(pl.lit(DUPLICATE_ITEM))
        .when(pl.col(_TITLE).is_null()).then(pl.lit(NO_TITLE)).alias(_REASON))


def _non_empty(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.str.strip_chars() != "").then(expr)


def _read_reviews(path: Path, release: _Release, *, show_progress: bool) -> pl.DataFrame:
    """The reviews file as ``user_id, item_id, timestamp, rating`` (empty ids become null)."""
    user, item, rating, time = release.review_fields
    raw = _read_lines(path, {user: pl.String(), item: pl.String(), rating: pl.Float64(), time: pl.Int64()},
                      show_progress=show_progress)
    return raw.select(
        _non_empty(pl.col(user)).alias(C.USER_ID),
        _non_empty(pl.col(item)).alias(C.ITEM_ID),
        pl.from_epoch(pl.col(time), time_unit=release.time_unit).cast(C.INTERACTION_SCHEMA[C.TS]).alias(C.TS),
        pl.col(rating).alias(C.RATING),
    )


def _review_reasons(reviews: pl.DataFrame, meta: pl.DataFrame) -> pl.DataFrame:
    """Reviews with why each is dropped (null: kept): missing field, item untitled or absent, repeat."""
    items = meta.filter(pl.col(_REASON).is_null())[_ID].implode()
    untitled = meta.filter(pl.col(_REASON) == NO_TITLE)[_ID].implode()
    item, key = pl.col(C.ITEM_ID), pl.struct(C.USER_ID, C.ITEM_ID, C.TS)
    # Repeats of a key share its item, so they all pass the item checks: the first one is kept.
    return reviews.with_columns(
        pl.when(pl.any_horizontal(pl.col(C.USER_ID, C.ITEM_ID, C.TS).is_null())).then(pl.lit(MISSING_FIELD))
        .when(item.is_in(untitled)).then(pl.lit(NO_TITLE))
        .when(~item.is_in(items)).then(pl.lit(NOT_IN_META))
        .when(~key.is_first_distinct()).then(pl.lit(DUPLICATE_REVIEW)).alias(_REASON))


def _source(file: str, frame: pl.DataFrame) -> SourceCount:
    """Every parsed line of ``file`` (a row of ``frame``): used when ``__reason`` is null.

    Repairs are counted among the used lines only, from the flag columns ``frame`` has.
    """
    dropped = dict(frame.filter(pl.col(_REASON).is_not_null()).group_by(_REASON).len().sort(_REASON).iter_rows())
    flags = {reason: column for reason, column in _REPAIRS.items() if column in frame.columns}
    repaired = {}
    if flags:
        sums = frame.filter(pl.col(_REASON).is_null()).select(pl.col(c).sum().alias(r) for r, c in flags.items())
        repaired = {reason: n for reason, n in sums.row(0, named=True).items() if n}
    return SourceCount(file=file, rows_in=frame.height, rows_out=frame[_REASON].null_count(), dropped=dropped,
                       repaired=repaired)
