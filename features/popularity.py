"""Item popularity as of each row's cut: counts, recency and age of an item's events.

Every (user, item) row has its own cut, so the counts cannot be one global table: a row
with cut ``t`` may only see events with ``timestamp < t``. A cross join of pairs and events
would be exact but quadratic; instead each item's events are reduced to cumulative counts at
its distinct timestamps, and an as-of join (``by=item_idx``, strictly earlier) reads the
count at any instant in O(log n). A window ``[t - w, t)`` is the difference of two such
reads. The same trick with each (user, item) first event counts distinct users.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from features.catalogue import days_between
from recsys import contract as C
from recsys.contract import CUT, ITEM_IDX, USER_IDX

__all__ = ["add_item_popularity", "check_windows_days"]

_ROW = "_pop_row"
_AT = "_pop_at"


def _cumulative(stamps: pl.LazyFrame, name: str) -> pl.LazyFrame:
    """Per item and distinct timestamp, the number of rows of ``stamps`` at or before it.

    Sorted by time, which ``join_asof`` needs; ties in time are merged first so that the
    as-of match (the last earlier timestamp) carries the full count.
    """
    return (stamps.group_by(ITEM_IDX, C.TS).agg(pl.len().alias(name))
            .sort(C.TS, ITEM_IDX)
            .with_columns(pl.col(name).cum_sum().over(ITEM_IDX).cast(pl.Int32)))


def _count_before(left: pl.LazyFrame, counts: pl.LazyFrame, at: pl.Expr, name: str,
                  keep_ts: str | None = None) -> pl.LazyFrame:
    """Join ``counts[name]`` as of ``at`` (strictly before) per item; 0 when nothing is earlier."""
    right = counts.select(ITEM_IDX, C.TS, pl.col(name),
                          *([pl.col(C.TS).alias(keep_ts)] if keep_ts else []))
    joined = (left.with_columns(at.alias(_AT)).sort(_AT)
              .join_asof(right, left_on=_AT, right_on=C.TS, by=ITEM_IDX,
                         strategy="backward", allow_exact_matches=False, check_sortedness=False))
    return joined.with_columns(pl.col(name).fill_null(0)).drop(_AT, C.TS, strict=False)


def check_windows_days(windows_days: Sequence[int], *, name: str = "windows_days") -> tuple[int, ...]:
    """``windows_days`` as a tuple, or ValueError naming ``name`` unless distinct positive ints."""
    if isinstance(windows_days, (str, bytes)) or not isinstance(windows_days, Sequence):
        raise ValueError(f"{name} must be a sequence of whole days, got {windows_days!r}")
    windows = tuple(windows_days)
    if not windows or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in windows) \
            or len(set(windows)) != len(windows):
        raise ValueError(f"{name} must be distinct positive whole days, got {windows!r}")
    return windows


def add_item_popularity(pairs: pl.LazyFrame, events: pl.LazyFrame, *,
                        windows_days: Sequence[int] = (7, 30)) -> pl.LazyFrame:
    """Add item-side popularity features, each computed from the events before the row's cut.

    Args:
        pairs: rows with ``item_idx`` (Int64) and ``cut`` (Datetime("us")); other columns pass
            through and the row order is kept.
        events: positive events of all users, ``user_idx`` (Int64), ``item_idx`` (Int64),
            ``timestamp`` (Datetime("us")). Events at or after a row's cut are never read for
            that row, so the caller may pass the whole log.
        windows_days: lengths ``w`` of the trailing windows ``[cut - w days, cut)``.

    Returns:
        ``pairs`` plus (counts are Int32 and 0 for an item without earlier events, days are
        Float32, fractional, and null for such an item):

        * ``pop_all``: events on the item with ``timestamp < cut``, all users.
        * ``pop_{w}d``: events on the item in ``[cut - w days, cut)``, one column per window.
        * ``pop_users``: distinct users with an event on the item before the cut.
        * ``pop_trend`` (Float32): ``pop_{W}d / (pop_all + 1)`` with ``W`` the longest window:
          the share of the item's history that is recent (high for rising items).
        * ``pop_age_days``: ``cut`` minus the item's first event.
        * ``pop_last_days``: ``cut`` minus the item's last event before the cut.

    Raises:
        ValueError: ``windows_days`` is empty, repeats a value, or has a non-positive one.
    """
    windows = check_windows_days(windows_days)
    events = events.select(USER_IDX, ITEM_IDX, C.TS)
    counts = _cumulative(events, "pop_all")
    firsts = events.group_by(ITEM_IDX).agg(pl.col(C.TS).min().alias("_pop_first"))
    user_counts = _cumulative(events.group_by(USER_IDX, ITEM_IDX).agg(pl.col(C.TS).min()), "pop_users")

    out = _count_before(pairs.with_row_index(_ROW), counts, pl.col(CUT), "pop_all", keep_ts="_pop_last")
    for w in windows:
        out = (_count_before(out, counts.rename({"pop_all": "_pop_old"}),
                             pl.col(CUT) - timedelta(days=w), "_pop_old")
               .with_columns((pl.col("pop_all") - pl.col("_pop_old")).alias(f"pop_{w}d")).drop("_pop_old"))
    out = _count_before(out, user_counts, pl.col(CUT), "pop_users")

    has_past = pl.col("pop_all") > 0
    return (out.join(firsts, on=ITEM_IDX, how="left")
            .sort(_ROW)
            .with_columns(
                (pl.col(f"pop_{max(windows)}d") / (pl.col("pop_all") + 1)).cast(pl.Float32).alias("pop_trend"),
                pl.when(has_past).then(days_between(pl.col("_pop_first"), pl.col(CUT))).alias("pop_age_days"),
                days_between(pl.col("_pop_last"), pl.col(CUT)).alias("pop_last_days"))
            .drop(_ROW, "_pop_first", "_pop_last"))
