"""The user's own history before the cut, and how the candidate's category sits in it.

Like ``features.popularity``, every row has its own cut and may only see events with
``timestamp < cut``. Each user's events are numbered in time order (ties broken by item, so
the numbering is deterministic); ``K``, the number of events before the cut, is a binary
search of the user's event times. The category counts among the first ``K`` events and among
the last ``n`` of them are one scan of those events into a table indexed by category: once per
(user, cut), in a compiled loop, then read by all of that user's candidate rows. A block costs
its events plus its rows, O(events + rows): a few milliseconds for 512 users by 300 candidates,
where the polars as-of joins this replaced regrouped and re-sorted the block's events and rows
at every call (0.08 s a block on one core, about 7% of an export block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from features.arrays import distinct, first_not_below
from features.compiled import jit
from recsys import contract as C
from recsys.contract import CUT, ITEM_IDX, USER_IDX

__all__ = ["add_user_history", "UserEvents"]

_NEVER = np.iinfo(np.int64).min
"""The cut of a row without a user or a cut (no event is before it: ``K = 0``), and a null item (below every
catalogue item: no category)."""
_DAY_PER_US = 1.0 / 86_400_000_000
"""``features.catalogue.days_between`` is polars' ``total_days(fractional=True)``: the microseconds (float64)
times this reciprocal, then Float32. Multiplying by it, not dividing by the day, keeps the values bit-identical."""
_DAYS = ("hist_days_since_last", "hist_span_days")
_SHARES = ("hist_cat_share", "hist_cat_recent_share")


@dataclass(frozen=True)
class UserEvents:
    """The positive events sorted by user, time and item, with each user's row range: a block's users' events by
    slicing, already in the order :func:`add_user_history` numbers them.

    A block's history features read only its users' events; filtering the whole log for them
    costs a pass over it per block (a fraction of a second at 20M events, minutes over a million
    users' export). Built once per scoring process, a block then costs its own events. Sorting by
    time and item here, once (0.45 s at 2M events on one core, against 0.13 s by user alone),
    spares every block a sort of its slice.
    """

    events: pl.DataFrame
    """``user_idx``, ``item_idx``, ``timestamp``, sorted by ``user_idx``, ``timestamp``, ``item_idx``."""
    starts: np.ndarray
    """int64 [max user_idx + 2]: user ``u``'s events are rows ``starts[u]:starts[u + 1]``."""

    @classmethod
    def from_events(cls, events: pl.DataFrame | pl.LazyFrame) -> UserEvents:
        frame = events.lazy().select(USER_IDX, ITEM_IDX, C.TS).sort(USER_IDX, C.TS, ITEM_IDX).collect()
        users = frame[USER_IDX].to_numpy()
        top = int(users[-1]) + 1 if len(users) else 0
        return cls(frame, np.searchsorted(users, np.arange(top + 1)).astype(np.int64))

    def of(self, users: np.ndarray) -> pl.DataFrame:
        """The events of ``users`` (each once; users without events or beyond the index have none), by user, time
        and item."""
        users = distinct(np.asarray(users, dtype=np.int64))
        users = users[(users >= 0) & (users < len(self.starts) - 1)]
        first, count = self.starts[users], self.starts[users + 1] - self.starts[users]
        rows = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        return self.events[rows]


def add_user_history(pairs: pl.LazyFrame, events: pl.LazyFrame, items: pl.LazyFrame, *,
                     recent_n: int = 20) -> pl.LazyFrame:
    """Add the user's history features, each computed from the user's events before the cut.

    Args:
        pairs: rows with ``user_idx`` (Int64), ``item_idx`` (Int64) and ``cut``
            (Datetime("us")); other columns pass through and the row order is kept.
        events: positive events, ``user_idx`` (Int64), ``item_idx`` (Int64), ``timestamp``
            (Datetime("us")); events at or after a row's cut are never read for that row.
            Events already sorted by user, time and item (:meth:`UserEvents.of`) are not sorted again.
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
        with a null category count in the denominator only. Computed when called (the frame
        comes back lazy, for the caller's pipeline).

    Raises:
        ValueError: ``recent_n`` is not a positive integer.
    """
    if isinstance(recent_n, bool) or not isinstance(recent_n, int) or recent_n < 1:
        raise ValueError(f"recent_n must be a positive integer, got {recent_n!r}")
    frame = pairs.lazy().collect()
    rows = frame.select(
        pl.col(USER_IDX).cast(pl.Int64).fill_null(-1),
        pl.when(pl.col(USER_IDX).is_not_null()).then(pl.col(CUT).cast(pl.Int64)).fill_null(_NEVER),
        pl.col(ITEM_IDX).cast(pl.Int64))
    ev_user, ev_ts, ev_item = _sorted_events(events)
    lookup, base, n_codes = _category_codes(items)
    row_user, row_cut = rows[USER_IDX].to_numpy(), rows[CUT].to_numpy()
    row_item = rows[ITEM_IDX].fill_null(_NEVER).to_numpy()  # below every catalogue item: no category

    n = frame.height
    count = np.zeros(n, dtype=np.int32)
    days = np.full((2, n), np.nan, dtype=np.float32)
    shares = np.full((2, n), np.nan, dtype=np.float32)
    runs = _runs(row_user, row_cut)
    run_user, run_cut = row_user[runs[:-1]], row_cut[runs[:-1]]
    # Runs of equal (user, cut) in key order: a key split over several runs (rows not grouped by user) is
    # still scanned once. A block's rows come user by user, so this sorts one key per user.
    order = np.lexsort((run_cut, run_user)).astype(np.int64)
    _history(ev_user, ev_ts, ev_item, row_user, row_cut, row_item, lookup, base, n_codes, runs, order, recent_n,
             count, days, shares)
    return frame.with_columns(
        pl.Series("hist_n_events", count, dtype=pl.Int32),
        *(pl.Series(name, days[j], dtype=pl.Float32, nan_to_null=True) for j, name in enumerate(_DAYS)),
        *(pl.Series(name, shares[j], dtype=pl.Float32, nan_to_null=True) for j, name in enumerate(_SHARES))).lazy()


def _sorted_events(events: pl.LazyFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int64 user, time (µs) and item of the events, sorted by user, time and item (a null item first among its
    ties, as polars sorts it); events without a user or a time belong to no row and are dropped."""
    frame = (events.lazy().select(USER_IDX, ITEM_IDX, C.TS).drop_nulls([USER_IDX, C.TS])
             .select(pl.col(USER_IDX).cast(pl.Int64), pl.col(C.TS).cast(pl.Int64),
                     pl.col(ITEM_IDX).cast(pl.Int64).fill_null(_NEVER)).collect())
    user, ts, item = (frame[name].to_numpy() for name in (USER_IDX, C.TS, ITEM_IDX))
    if not _is_sorted(user, ts, item):
        order = np.lexsort((item, ts, user))
        user, ts, item = user[order], ts[order], item[order]
    return user, ts, item


def _category_codes(items: pl.LazyFrame) -> tuple[np.ndarray, int, int]:
    """Each catalogue item's category as a small integer: ``lookup[item - base]`` (-1: null category), and the
    number of codes.

    The loop counts categories in a table indexed by code, so equal strings need equal codes and the codes
    need to be dense. A categorical over categories of its own gives both (1.3 ms for 100k items); the
    global categories would number every string the process has ever cast.
    """
    frame = (items.lazy().select(ITEM_IDX, C.CATEGORY).drop_nulls(ITEM_IDX)
             .select(pl.col(ITEM_IDX).cast(pl.Int64),
                     pl.col(C.CATEGORY).cast(pl.String).cast(pl.Categorical(pl.Categories.random()))
                     .to_physical().cast(pl.Int32).fill_null(-1))
             .collect())
    if not frame.height:
        return np.full(0, -1, dtype=np.int32), 0, 1
    ids, codes = frame[ITEM_IDX].to_numpy(), frame[C.CATEGORY].to_numpy()
    base = int(ids.min())
    lookup = np.full(int(ids.max()) - base + 1, -1, dtype=np.int32)
    lookup[ids - base] = codes
    return lookup, base, max(int(codes.max()) + 1, 1)


@jit
def _is_sorted(user, ts, item):  # pragma: no cover - compiled
    """Whether the events are in (user, time, item) order already (a block sliced from :class:`UserEvents`)."""
    for j in range(1, len(user)):
        if user[j] != user[j - 1]:
            if user[j] < user[j - 1]:
                return False
        elif ts[j] != ts[j - 1]:
            if ts[j] < ts[j - 1]:
                return False
        elif item[j] < item[j - 1]:
            return False
    return True


@jit
def _runs(user, cut):  # pragma: no cover - compiled
    """int64: the first row of each run of rows with one (user, cut), then the number of rows."""
    starts = np.empty(len(user) + 1, dtype=np.int64)
    n = 0
    for i in range(len(user)):
        if i == 0 or user[i] != user[i - 1] or cut[i] != cut[i - 1]:
            starts[n] = i
            n += 1
    starts[n] = len(user)
    return starts[:n + 1].copy()


@jit
def _code(lookup, base, item):  # pragma: no cover - compiled
    """The item's category code, -1 for a null category or an item the catalogue lacks (a null item is read as
    ``_NEVER``, below every catalogue item)."""
    if item < base or item - base >= len(lookup):
        return -1
    return lookup[item - base]


@jit
def _history(ev_user, ev_ts, ev_item, row_user, row_cut, row_item, lookup, base, n_codes, runs, order, recent_n,
             count, days, shares):  # pragma: no cover - compiled
    """Fill each row's count, days and shares; ``order`` visits the runs of rows by (user, cut).

    For each (user, cut): ``K`` by binary search, then the category counts of its first ``K`` events and of
    the last ``recent_n`` of them into two tables indexed by code, read by every row of that key, and
    cleared by a second pass over the same events (not the whole table: a user reads a few categories).
    """
    in_all = np.zeros(n_codes, dtype=np.int64)
    in_recent = np.zeros(n_codes, dtype=np.int64)
    g = 0
    while g < len(order):
        user, cut = row_user[runs[order[g]]], row_cut[runs[order[g]]]
        h = g + 1
        while h < len(order) and row_user[runs[order[h]]] == user and row_cut[runs[order[h]]] == cut:
            h += 1
        low = first_not_below(ev_user, 0, len(ev_user), user)
        high = first_not_below(ev_user, low, len(ev_user), user + 1)
        end = first_not_below(ev_ts, low, high, cut)  # events low .. end - 1 are before the cut
        k = end - low
        recent_low = max(low, end - recent_n)
        for j in range(low, end):
            c = _code(lookup, base, ev_item[j])
            if c >= 0:
                in_all[c] += 1
                if j >= recent_low:
                    in_recent[c] += 1
        for r in range(g, h):
            for i in range(runs[order[r]], runs[order[r] + 1]):
                count[i] = k
                if k == 0:
                    continue
                days[0, i] = np.float32((cut - ev_ts[end - 1]) * _DAY_PER_US)
                days[1, i] = np.float32((ev_ts[end - 1] - ev_ts[low]) * _DAY_PER_US)
                c = _code(lookup, base, row_item[i])
                if c >= 0:  # int / int in float64, then Float32: polars' division and cast
                    shares[0, i] = np.float32(in_all[c] / k)
                    shares[1, i] = np.float32(in_recent[c] / min(k, recent_n))
        for j in range(low, end):
            c = _code(lookup, base, ev_item[j])
            if c >= 0:
                in_all[c] = 0
                in_recent[c] = 0
        g = h
