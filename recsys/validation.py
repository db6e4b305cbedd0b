"""Checks raw item and interaction frames against the data contract and normalises them.

Every problem is collected (never raise on the first one) so that ``recsys data validate``
can list them all at once, each with the file, the column, up to five example row numbers
and a count. Row numbers are 1-based data rows: the header line of a CSV is not counted.
The same functions return the normalised frames that the rest of the project trusts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl

from recsys import contract as C

__all__ = [
    "ContractPolicy", "Problem", "CheckResult", "ValidationReport",
    "check_items", "check_interactions", "check_users", "ROW",
]

ROW = "__row"
"""Column holding each row's 1-based position in its file; added by ``recsys.io.scan_table``."""

MAX_EXAMPLES = 5
_ID_TYPES = (pl.String, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
EARLIEST = datetime(1900, 1, 1)
"""Interaction times before this are refused: no click log is that old; a wrong unit or a broken value is."""
_TS_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%.fZ",
               "%Y/%m/%d %H:%M:%S", "%Y/%m/%d", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y")
_TS_ZONED_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")


@dataclass(frozen=True)
class ContractPolicy:
    """What counts as valid, and the explicit switches that repair data instead of rejecting it."""

    events: tuple[str, ...] = tuple(C.DEFAULT_EVENT_WEIGHTS)
    """Allowed values of the ``event`` column (extend through configuration)."""
    drop_unknown_items: bool = False
    """Drop interactions whose item is not in the catalogue (reported), instead of failing."""
    dedupe: bool = False
    """Drop exact duplicate interaction rows (reported), instead of warning about them."""
    drop_impression_only_users: bool = False
    """Drop users who were shown items but never clicked or bought one, instead of failing."""

    def __post_init__(self) -> None:
        if not self.events or any(not e or e != e.strip() for e in self.events):
            raise ValueError(f"events must be non-empty names without spaces, got {self.events!r}")


@dataclass(frozen=True)
class Problem:
    """One contract violation (or warning) with where it is and how often it happens."""

    file: str
    column: str | None
    message: str
    rows: tuple[int, ...] = ()
    count: int = 0
    severity: Literal["error", "warning"] = "error"
    values: tuple[str | None, ...] = ()
    """The offending value of each example row (truncated; None where the cell is empty): what to search for."""

    def render(self) -> str:
        where = f"{self.file}" + (f", column '{self.column}'" if self.column else "")
        text = f"{where}: {self.message}"
        if self.count:
            text += f" ({self.count:,} row{'s' if self.count != 1 else ''}"
            if self.rows:
                shown = [f"{r}" + (f" {v!r}" if v is not None else "")
                         for r, v in zip(self.rows, self.values or (None,) * len(self.rows), strict=True)]
                text += ", e.g. row " + ", ".join(shown)
            text += ")"
        return text


@dataclass
class CheckResult:
    """A normalised frame (``None`` when the table could not be normalised) and its problems."""

    frame: pl.DataFrame | None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class ValidationReport:
    """All problems of one dataset; ``ok`` when none of them is an error."""

    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        lines: list[str] = []
        if self.errors:
            lines.append(f"{len(self.errors)} error(s) (row numbers are 1-based data rows, header not counted):")
            lines += [f"  - {p.render()}" for p in self.errors]
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  - {p.render()}" for p in self.warnings]
        return "\n".join(lines)


class _Collector:
    """Accumulates problems for one file; ``flag`` records rows where a mask is true."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, column: str | None, message: str, *, severity: Literal["error", "warning"] = "error",
            rows: Iterable[int] = (), count: int = 0, values: Iterable[str | None] = ()) -> None:
        self.problems.append(Problem(self.file, column, message, tuple(rows), count, severity, tuple(values)))

    def flag(self, df: pl.DataFrame, mask: pl.Expr, column: str, message: str,
             severity: Literal["error", "warning"] = "error") -> int:
        """Record the rows of ``df`` where ``mask`` holds, with their values of ``column`` (what to search for)."""
        hits = df.filter(mask)
        if hits.height:
            examples = hits.head(MAX_EXAMPLES)
            self.add(column, message, severity=severity, rows=examples[ROW].to_list(), count=hits.height,
                     values=_shown(examples[column]) if column in examples.columns else ())
        return hits.height

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)


SHOWN_CHARS = 40
"""Longest value an error shows (longer ones end in an ellipsis)."""


def _shown(values: pl.Series) -> list[str | None]:
    """Values as an error shows them: text, at most :data:`SHOWN_CHARS` characters; None where empty."""
    text = values.cast(pl.String, strict=False).to_list()
    return [None if v is None else v if len(v) <= SHOWN_CHARS else v[:SHOWN_CHARS - 1] + "…" for v in text]


def _id_column(df: pl.DataFrame, name: str, out: _Collector) -> pl.Expr | None:
    dtype = df.schema[name]
    if isinstance(dtype, pl.Null):
        return pl.lit(None, pl.String).alias(name)
    if not isinstance(dtype, _ID_TYPES):
        out.add(name, f"wrong type {dtype}: expected string (or integer) ids; cast the column to string")
        return None
    col = pl.col(name).cast(pl.String)
    return pl.when(col.str.strip_chars() == "").then(None).otherwise(col).alias(name)


def _text_column(df: pl.DataFrame, name: str, out: _Collector) -> pl.Expr | None:
    dtype = df.schema[name]
    if isinstance(dtype, pl.Null):
        return pl.lit(None, pl.String).alias(name)
    if not isinstance(dtype, pl.String):
        out.add(name, f"wrong type {dtype}: expected text (string)")
        return None
    return pl.col(name)


def _epoch_seconds(expr: pl.Expr) -> pl.Expr:
    return pl.from_epoch((expr.cast(pl.Float64) * 1_000_000).round().cast(pl.Int64, strict=False), time_unit="us")


def _datetime_expr(df: pl.DataFrame, name: str, out: _Collector) -> pl.Expr | None:
    """Datetime, date, epoch seconds (number or digits) or a date string -> naive UTC datetime[us]."""
    dtype = df.schema[name]
    col = pl.col(name)
    if isinstance(dtype, pl.Null):
        return pl.lit(None, C.DATETIME).alias(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(C.DATETIME).alias(name)
    if isinstance(dtype, pl.Date):
        return col.cast(C.DATETIME).alias(name)
    if dtype.is_numeric():
        return _epoch_seconds(col).alias(name)
    if isinstance(dtype, pl.String):
        text = col.str.strip_chars()
        numeric = text.str.contains(r"^-?\d+(\.\d+)?$")
        zoned = [text.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC").dt.replace_time_zone(None)
                 for f in _TS_ZONED_FORMATS]
        parsed = pl.coalesce([text.str.to_datetime(f, strict=False, time_unit="us") for f in _TS_FORMATS] + zoned)
        return pl.when(numeric).then(_epoch_seconds(text)).otherwise(parsed).alias(name)
    out.add(name, f"wrong type {dtype}: expected a datetime, epoch seconds or a date string")
    return None


def _tags_expr(df: pl.DataFrame, out: _Collector) -> pl.Expr | None:
    dtype = df.schema[C.TAGS]
    col = pl.col(C.TAGS)
    if isinstance(dtype, pl.Null):
        return pl.lit([], pl.List(pl.String)).alias(C.TAGS)
    if isinstance(dtype, pl.String):
        split = col.str.split("|").list.eval(pl.element().str.strip_chars()).list.eval(
            pl.element().filter(pl.element() != ""))
        return split.fill_null([]).alias(C.TAGS)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, (pl.String, pl.Null)):
        return col.cast(pl.List(pl.String)).fill_null([]).alias(C.TAGS)
    out.add(C.TAGS, f"wrong type {dtype}: expected a list of strings or a '|'-separated string")
    return None


def _flag_unparsed(df: pl.DataFrame, normal: pl.DataFrame, name: str, out: _Collector, *,
                   required: bool) -> None:
    """Rows whose raw value was present but did not parse (and, if required, absent ones too)."""
    raw_present = df[name].is_not_null()
    failed = normal[name].is_null() & (raw_present | required)
    hits = normal.filter(failed)
    if hits.height:
        bad = df.filter(failed)[name].cast(pl.String).drop_nulls().unique(maintain_order=True).head(3).to_list()
        shown = f"; e.g. {', '.join(repr(v) for v in bad)}" if bad else ""
        out.add(name, f"missing or unparseable value{shown}; use ISO dates (2024-01-31 12:00:00) "
                      "or epoch seconds", rows=hits[ROW].head(MAX_EXAMPLES).to_list(), count=hits.height)


def _check_columns(df: pl.DataFrame, required: tuple[str, ...], optional: tuple[str, ...],
                   out: _Collector, *, extra_ok: tuple[str, ...] = ()) -> bool:
    present = [c for c in df.columns if c != ROW]
    # polars renames a repeated header to NAME_duplicated_N: which one is meant?
    repeats = {c: base for c in present if (base := re.sub(r"_duplicated_\d+$", "", c)) != c and base in present}
    for base in dict.fromkeys(repeats.values()):
        out.add(base, f"the header names column '{base}' more than once; keep one")
    present = [c for c in present if c not in repeats]
    missing = [c for c in required if c not in present]
    for name in missing:
        out.add(name, f"missing required column '{name}'; found columns: {', '.join(present) or 'none'}; "
                      f"expected {', '.join(required)} (optional: {', '.join(optional)})")
    for name in present:
        if name not in required and name not in optional and name not in extra_ok:
            out.add(name, f"extra column '{name}' is not part of the contract and is ignored",
                    severity="warning")
    if df.height == 0:
        out.add(None, "the table has no rows")
        return False
    return not missing


def check_items(df: pl.DataFrame, *, file: str) -> CheckResult:
    """Check a raw item table and normalise it to ``contract.ITEM_SCHEMA``.

    Args:
        df: raw frame with a ``__row`` column; needs ``item_id`` and ``title``.
        file: name used in messages.

    Returns:
        The normalised items (``None`` if a column could not be converted) and the problems:
        missing columns, wrong types, null or duplicate ids, empty titles, bad dates.
    """
    out = _Collector(file)
    if not _check_columns(df, C.ITEM_REQUIRED, C.ITEM_OPTIONAL, out):
        return CheckResult(None, out.problems)
    exprs = [_id_column(df, C.ITEM_ID, out), _text_column(df, C.TITLE, out)]
    for name, fill in ((C.DESCRIPTION, _text_column), (C.CATEGORY, _text_column)):
        exprs.append(fill(df, name, out) if name in df.columns else pl.lit(None, pl.String).alias(name))
    exprs.append(_tags_expr(df, out) if C.TAGS in df.columns
                 else pl.lit([], pl.List(pl.String)).alias(C.TAGS))
    exprs.append(_datetime_expr(df, C.PUBLISHED_AT, out) if C.PUBLISHED_AT in df.columns
                 else pl.lit(None, C.DATETIME).alias(C.PUBLISHED_AT))
    if any(e is None for e in exprs):
        return CheckResult(None, out.problems)
    normal = df.select(pl.col(ROW), *exprs)
    out.flag(normal, pl.col(C.ITEM_ID).is_null(), C.ITEM_ID, "null or empty item id")
    dup = pl.col(C.ITEM_ID).is_not_null() & pl.col(C.ITEM_ID).is_duplicated()
    out.flag(normal, dup, C.ITEM_ID, "duplicate item id (ids must be unique; dedupe the catalogue)")
    out.flag(normal, pl.col(C.TITLE).is_null() | (pl.col(C.TITLE).str.strip_chars() == ""), C.TITLE,
             "empty title (every item needs a non-empty title: the text tower reads it)")
    if C.PUBLISHED_AT in df.columns:
        _flag_unparsed(df, normal, C.PUBLISHED_AT, out, required=False)
    return CheckResult(None if out.has_errors else normal.select(list(C.ITEM_SCHEMA)), out.problems)


def _event_checks(normal: pl.DataFrame, policy: ContractPolicy, out: _Collector) -> None:
    unknown = ~pl.col(C.EVENT).is_in(list(policy.events)) & pl.col(C.EVENT).is_not_null()
    bad = normal.filter(unknown)[C.EVENT].unique(maintain_order=True).head(5).to_list()
    out.flag(normal, unknown, C.EVENT,
             f"unknown event name(s) {', '.join(map(repr, bad))}; must be one of "
             f"{', '.join(policy.events)} (add new ones with their weights in the config)")
    out.flag(normal, pl.col(C.EVENT).is_null(), C.EVENT, "missing event name")


def _user_checks(normal: pl.DataFrame, policy: ContractPolicy, out: _Collector) -> pl.DataFrame:
    positive = pl.col(C.EVENT).is_in(list(policy.events)) & (pl.col(C.EVENT) != C.IMPRESSION)
    only_shown = ~positive.any().over(C.USER_ID) & pl.col(C.USER_ID).is_not_null()
    if policy.drop_impression_only_users:
        users = normal.filter(only_shown)[C.USER_ID].n_unique()
        dropped = out.flag(normal, only_shown, C.USER_ID,
                           f"dropped {users:,} user(s) with only impressions (--drop-impression-only-users)",
                           severity="warning")
        return normal.filter(~only_shown) if dropped else normal
    users = normal.filter(only_shown)[C.USER_ID].unique(maintain_order=True)
    if users.len():
        out.flag(normal, only_shown, C.USER_ID,
                 f"{users.len():,} user(s) have only impressions and no click or purchase "
                 f"(e.g. {', '.join(map(repr, users.head(3).to_list()))}); nothing to learn from them: "
                 "drop them with --drop-impression-only-users")
    return normal


def _duplicate_checks(normal: pl.DataFrame, policy: ContractPolicy, out: _Collector) -> pl.DataFrame:
    """Flag (or with ``--dedupe`` drop) every repeat of an earlier row's key, exactly.

    Each row's key is hashed to 8 bytes first (the xor of each column's seeded hash); only rows
    whose hash repeats are compared by their key. Comparing every row's key (a row-encoded struct
    of five columns) cost 15x the table's size: 0.8 GB at 2M events.
    """
    key = [C.USER_ID, C.ITEM_ID, C.TS, C.EVENT, C.IMPRESSION_ID]
    hashed = pl.col(key[0]).hash(seed=0)
    for seed, column in enumerate(key[1:], 1):  # one seed per column, so swapped values hash apart
        hashed = hashed ^ pl.col(column).hash(seed=seed)  # a struct's hash took 16x more memory at 2M rows
    suspect = normal.select(hashed.is_duplicated()).to_series()
    repeated = pl.Series(np.zeros(normal.height, dtype=bool))
    if suspect.any():
        within = normal.filter(suspect).select(~pl.struct(key).is_first_distinct()).to_series()
        repeated = repeated.scatter(np.flatnonzero(suspect.to_numpy()), within)
    dup = pl.lit(repeated)
    action = "dropped (--dedupe)" if policy.dedupe else "kept; drop them with --dedupe"
    n = out.flag(normal, dup, C.USER_ID, f"exact duplicate interaction rows, {action}", severity="warning")
    return normal.filter(~dup) if (n and policy.dedupe) else normal


def check_interactions(df: pl.DataFrame, *, file: str, item_ids: pl.Series | None,
                       policy: ContractPolicy = ContractPolicy()) -> CheckResult:
    """Check a raw interaction table and normalise it to ``contract.INTERACTION_SCHEMA``.

    Args:
        df: raw frame with a ``__row`` column; needs ``user_id, item_id, timestamp, event``.
        file: name used in messages.
        item_ids: the catalogue's item ids (``None`` when the item table itself is broken:
            then unknown items cannot be checked).
        policy: allowed events and the explicit repair switches.

    Returns:
        The normalised interactions, sorted by time, and the problems found.
    """
    out = _Collector(file)
    if not _check_columns(df, C.INTERACTION_REQUIRED, C.INTERACTION_OPTIONAL, out):
        return CheckResult(None, out.problems)
    exprs = [_id_column(df, C.USER_ID, out), _id_column(df, C.ITEM_ID, out),
             _datetime_expr(df, C.TS, out), _text_column(df, C.EVENT, out)]
    exprs.append(_id_column(df, C.IMPRESSION_ID, out) if C.IMPRESSION_ID in df.columns
                 else pl.lit(None, pl.String).alias(C.IMPRESSION_ID))
    if C.RATING in df.columns:
        rating_ok = df.schema[C.RATING].is_numeric() or isinstance(df.schema[C.RATING], (pl.String, pl.Null))
        if not rating_ok:
            out.add(C.RATING, f"wrong type {df.schema[C.RATING]}: expected a number")
        exprs.append(pl.col(C.RATING).cast(pl.Float64, strict=False) if rating_ok else None)
    else:
        exprs.append(pl.lit(None, pl.Float64).alias(C.RATING))
    if C.FROM_HISTORY in df.columns:
        raw = pl.col(C.FROM_HISTORY)
        exprs.append((raw.cast(pl.String).str.to_lowercase().is_in(["true", "1"]) if
                      not isinstance(df.schema[C.FROM_HISTORY], pl.Boolean) else raw.fill_null(False))
                     .alias(C.FROM_HISTORY))
    else:
        exprs.append(pl.lit(False).alias(C.FROM_HISTORY))
    if any(e is None for e in exprs):
        return CheckResult(None, out.problems)
    normal = df.select(pl.col(ROW), *exprs)
    out.flag(normal, pl.col(C.USER_ID).is_null(), C.USER_ID, "null or empty user id")
    out.flag(normal, pl.col(C.ITEM_ID).is_null(), C.ITEM_ID, "null or empty item id")
    _flag_unparsed(df, normal, C.TS, out, required=True)
    _flag_implausible_times(normal, out)
    if C.RATING in df.columns:
        _flag_unparsed_number(df, normal, out)
    _event_checks(normal, policy, out)
    if item_ids is not None:
        unknown = ~pl.col(C.ITEM_ID).is_in(item_ids.implode()) & pl.col(C.ITEM_ID).is_not_null()
        if policy.drop_unknown_items:
            if out.flag(normal, unknown, C.ITEM_ID, "dropped rows whose item is not in the catalogue "
                                                    "(--drop-unknown-items)", severity="warning"):
                normal = normal.filter(~unknown)
        else:
            out.flag(normal, unknown, C.ITEM_ID, "item id not in the item table; fix the catalogue or "
                                                 "pass --drop-unknown-items")
    if normal.height == 0 and not out.has_errors:
        out.add(C.ITEM_ID, "no interaction is left after dropping those on unknown items; check that the item "
                           "ids of the two tables match")
    normal = _user_checks(normal, policy, out)
    normal = _duplicate_checks(normal, policy, out)
    if out.has_errors:
        return CheckResult(None, out.problems)
    normal = normal.sort([C.TS, ROW]).select(list(C.INTERACTION_SCHEMA))
    return CheckResult(normal, out.problems)


def _flag_unparsed_number(df: pl.DataFrame, normal: pl.DataFrame, out: _Collector) -> None:
    failed = normal[C.RATING].is_null() & df[C.RATING].is_not_null()
    hits = normal.filter(failed)
    if hits.height:
        out.add(C.RATING, "not a number", rows=hits[ROW].head(MAX_EXAMPLES).to_list(), count=hits.height,
                values=_shown(df.filter(failed)[C.RATING].head(MAX_EXAMPLES)))
    out.flag(normal, pl.col(C.RATING).is_not_null() & ~pl.col(C.RATING).is_finite(), C.RATING,
             "NaN or infinite rating; a rating is a finite number")


def _flag_implausible_times(normal: pl.DataFrame, out: _Collector) -> None:
    """Times before 1900 or more than a year ahead: a wrong unit (milliseconds read as seconds) or a broken value."""
    latest = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=366)
    hits = normal.filter(pl.col(C.TS).is_not_null() & ((pl.col(C.TS) < EARLIEST) | (pl.col(C.TS) > latest)))
    if hits.height:
        shown = ", ".join(hits[C.TS].head(3).cast(pl.String).to_list())  # polars text: Python dates end at year 1
        out.add(C.TS, f"time before {EARLIEST.year} or more than a year ahead (e.g. {shown}); epoch values are "
                      "read as seconds: milliseconds or nanoseconds need converting", rows=hits[ROW].head(
                          MAX_EXAMPLES).to_list(), count=hits.height)


def check_users(df: pl.DataFrame, *, file: str) -> CheckResult:
    """Check an optional user side table: a unique, non-null ``user_id`` plus feature columns."""
    out = _Collector(file)
    extra = tuple(c for c in df.columns if c not in (ROW, C.USER_ID))
    if not _check_columns(df, (C.USER_ID,), (), out, extra_ok=extra):
        return CheckResult(None, out.problems)
    expr = _id_column(df, C.USER_ID, out)
    if expr is None:
        return CheckResult(None, out.problems)
    normal = df.with_columns(expr)
    out.flag(normal, pl.col(C.USER_ID).is_null(), C.USER_ID, "null or empty user id")
    out.flag(normal, pl.col(C.USER_ID).is_duplicated() & pl.col(C.USER_ID).is_not_null(), C.USER_ID,
             "duplicate user id")
    return CheckResult(None if out.has_errors else normal.drop(ROW), out.problems)
