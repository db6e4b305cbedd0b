"""The user's own history before the cut, and how the candidate's category sits in it.

Like ``features.popularity``, every row has its own cut and may only see events with
``timestamp < cut``. Each user's events are numbered in time order (ties broken by item, so
the numbering is deterministic); the number of events before the cut, ``K``, comes from a
strict as-of join on time. Category counts are cumulative along that numbering, so the count
of a category among the first ``K`` events, or among events ``K - n + 1 .. K`` (the last
``n``), is one or two as-of joins on the position: no cross join of pairs and events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.arrays import distinct
from features.catalogue import days_between
from recsys import contract as C
from recsys.contract import CUT, ITEM_IDX, USER_IDX

__all__ = ["add_user_history", "UserEvents"]

_ROW = "_hist_row"
_POS = "_hist_pos"
_CAT = "_hist_cat"
_K = "hist_n_events"


@dataclass(frozen=True)
class UserEvents:
    """The positive events sorted by user, with each user's row range: a block's users' events by slicing.

    A block's history features read only its users' events; filtering the whole log for them
    costs a pass over it per block (a fraction of a second at 20M events, minutes over a million
    users' export). Built once per scoring process, a block then costs its own events.
    """

    events: pl.DataFrame
    """``user_idx``, ``item_idx``, ``timestamp``, sorted by ``user_idx``."""
    starts: np.ndarray
    """int64 [max user_idx + 2]: user ``u``'s events are rows ``starts[u]:starts[u + 1]``."""

    @classmethod
    def from_events(cls, events: pl.DataFrame | pl.LazyFrame) -> UserEvents:
        frame = events.lazy().select(USER_IDX, ITEM_IDX, C.TS).sort(USER_IDX, maintain_order=True).collect()
        users = frame[USER_IDX].to_numpy()
        top = int(users[-1]) + 1 if len(users) else 0
        return cls(frame, np.searchsorted(users, np.arange(top + 1)).astype(np.int64))

    def of(self, users: np.ndarray) -> pl.DataFrame:
        """The events of ``users`` (each once; users without events or beyond the index have none)."""
        users = distinct(np.asarray(users, dtype=np.int64))
        users = users[(users >= 0) & (users < len(self.starts) - 1)]
        first, count = self.starts[users], self.starts[users + 1] - self.starts[users]
        rows = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        return self.events[rows]


def _numbered(events: pl.LazyFrame, items: pl.LazyFrame) -> pl.LazyFrame:
    """Each user's events with their 1-based position in time order and the item's category."""
    return (events.select(USER_IDX, ITEM_IDX, C.TS)
            .join(items, on=ITEM_IDX, how="left")
            .sort(USER_IDX, C.TS, ITEM_IDX)
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(USER_IDX).alias(_POS)))


def _category_count(left: pl.LazyFrame, by_cat: pl.LazyFrame, at: pl.Expr, name: str) -> pl.LazyFrame:
    """Events of the row's category among the user's first ``at`` events (0 when none)."""
    return (left.with_columns(at.alias("_hist_at")).sort("_hist_at")
            .join_asof(by_cat.rename({"_hist_catcum": name}), left_on="_hist_at", right_on=_POS,
                       by=[USER_IDX, _CAT], strategy="backward", check_sortedness=False)
            .with_columns(pl.col(name).fill_null(0))
            .drop("_hist_at", _POS, strict=False))


def add_user_history(pairs: pl.LazyFrame, events: pl.LazyFrame, items: pl.LazyFrame, *,
                     recent_n: int = 20) -> pl.LazyFrame:
    """Add the user's history features, each computed from the user's events before the cut.

    Args:
        pairs: rows with ``user_idx`` (Int64), ``item_idx`` (Int64) and ``cut``
            (Datetime("us")); other columns pass through and the row order is kept.
        events: positive events, ``user_idx`` (Int64), ``item_idx`` (Int64), ``timestamp``
            (Datetime("us")); events at or after a row's cut are never read for that row.
        items: the catalogue, ``item_idx`` (Int64, unique) and ``category`` (String, nullable).
        recent_n: how many of the user's latest events ``hist_cat_recent_share`` looks at.

    Returns:
        ``pairs`` plus:

        * ``hist_n_events`` (Int32): the user's events before the cut (0 when none).
        * ``hist_days_since_last`` (Float32): ``cut`` minus the user's last event before it.
        * ``hist_span_days`` (Float32): last minus first of those events (0 for one event).
        * ``hist_cat_share`` (Float32): share of those events whose item has the candidate's
          category.
        * ``hist_cat_recent_share`` (Float32): the same share over the last ``recent_n`` of them.

        Days and shares are null when the user has no event before the cut. The shares are
        also null when the candidate's category is null (or the item is not in the catalogue):
        "unknown" is kept apart from "the user never reads this category"; events on items
        with a null category count in the denominator only.

    Raises:
        ValueError: ``recent_n`` is not a positive integer.
    """
    if isinstance(recent_n, bool) or not isinstance(recent_n, int) or recent_n < 1:
        raise ValueError(f"recent_n must be a positive integer, got {recent_n!r}")
    cats = items.select(ITEM_IDX, pl.col(C.CATEGORY).alias(_CAT))
    numbered = _numbered(events, cats)
    # Ties in time share one row, holding the last position, so a strict as-of match on time
    # counts all of them.
    by_time = (numbered.group_by(USER_IDX, C.TS).agg(pl.col(_POS).max().cast(pl.Int32).alias(_K))
               .sort(C.TS).with_columns(pl.col(C.TS).alias("_hist_last")))
    firsts = numbered.group_by(USER_IDX).agg(pl.col(C.TS).min().alias("_hist_first"))
    by_cat = (numbered.filter(pl.col(_CAT).is_not_null()).select(USER_IDX, _CAT, _POS)
              .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(USER_IDX, _CAT).alias("_hist_catcum"))
              .sort(_POS))

    rows = (pairs.with_row_index(_ROW).join(cats, on=ITEM_IDX, how="left", maintain_order="left")
            .sort(CUT)
            .join_asof(by_time, left_on=CUT, right_on=C.TS, by=USER_IDX, strategy="backward",
                       allow_exact_matches=False, check_sortedness=False)
            .drop(C.TS)
            .with_columns(pl.col(_K).fill_null(0)))
    rows = _category_count(rows, by_cat, pl.col(_K).cast(pl.Int64), "_hist_in_all")
    rows = _category_count(rows, by_cat, pl.col(_K).cast(pl.Int64) - recent_n, "_hist_before_recent")

    k = pl.col(_K)
    known = (k > 0) & pl.col(_CAT).is_not_null()
    recent = pl.col("_hist_in_all") - pl.col("_hist_before_recent")
    return (rows.join(firsts, on=USER_IDX, how="left")
            .sort(_ROW)
            .with_columns(
                days_between(pl.col("_hist_last"), pl.col(CUT)).alias("hist_days_since_last"),
                pl.when(k > 0).then(days_between(pl.col("_hist_first"), pl.col("_hist_last"))).alias("hist_span_days"),
                pl.when(known).then(pl.col("_hist_in_all") / k).cast(pl.Float32).alias("hist_cat_share"),
                pl.when(known).then(recent / pl.min_horizontal(k, recent_n)).cast(pl.Float32)
                .alias("hist_cat_recent_share"))
            .drop(_ROW, _CAT, "_hist_last", "_hist_first", "_hist_in_all", "_hist_before_recent"))
