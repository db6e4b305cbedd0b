"""Item popularity as of each row's cut: counts, recency and age of an item's events.

Every (user, item) row has its own cut, so the counts cannot be one global table: a row
with cut ``t`` may only see events with ``timestamp < t``. A cross join of pairs and events
would be exact but quadratic. Instead the events are indexed once, by item and then time
(:class:`ItemTimeline`: one sorted array of keys), and the count before any instant is a binary
search: O(log n) a row, with no pass over the log. A scoring process builds the timeline once
and reuses it for every block of users, so a block costs what its candidate rows cost, whatever
the size of the log (a polars as-of join re-reads and regroups the whole log at each call: 3.7 s
a block of 1,024 users at 2M events). A window ``[t - w, t)`` is the difference of two such
counts; distinct users are counted the same way over each (user, item) pair's first event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from features.arrays import distinct_ranks, run_starts, search, search_in_runs
from recsys import contract as C
from recsys.contract import CUT, ITEM_IDX, USER_IDX

__all__ = ["ItemTimeline", "add_item_popularity", "check_windows_days"]

_DAY_US = 86_400_000_000


def _first_keys(users: np.ndarray, items: np.ndarray, ranks: np.ndarray, stride: int) -> np.ndarray:
    """Sorted ``item * stride + rank`` of each (user, item) pair's first event (``ranks``: time ranks).

    By sorting, not grouping: a polars ``group_by(user, item).min()`` over 20M events held 3.5 GB of
    hash tables at once (the export's peak); a sort of one int64 key per event holds three arrays of
    the log's length. The pair and its rank share one key when they fit an int64, else a lexsort.
    """
    if not len(users):
        return np.empty(0, dtype=np.int64)
    n_items = int(items.max()) + 1
    pairs = users * n_items + items
    if int(pairs.max()) < np.iinfo(np.int64).max // stride:
        ordered = np.sort(pairs * stride + ranks)
        del pairs
        first = ordered[run_starts(ordered // stride)]  # the lowest rank of each pair comes first
        pair, rank = np.divmod(first, stride)
    else:
        order = np.lexsort((ranks, pairs))
        pair = pairs[order]
        head = order[run_starts(pair)]
        pair, rank = pairs[head], ranks[head]
    return np.sort(pair % n_items * stride + rank)


@dataclass(frozen=True)
class ItemTimeline:
    """Each item's event times, sorted: what popularity as of any instant reads, by binary search.

    Times are ranked among the log's distinct timestamps (``stamps``, int64 microseconds since
    the epoch), and each event is the key ``item_idx * stride + rank``: one sorted int64 array in
    which item ``i``'s events are a contiguous run in time order. The events strictly before
    instant ``t`` are then the keys from ``i * stride`` up to ``i * stride + (distinct timestamps
    before t)``: binary searches, exact to the microsecond. ``user_keys`` holds each (user, item)
    pair's first event the same way, for distinct users. Items the log never names (encoded
    after the timeline was built) have no keys and count 0.
    """

    stamps: np.ndarray
    keys: np.ndarray
    user_keys: np.ndarray

    @classmethod
    def from_events(cls, events: pl.DataFrame | pl.LazyFrame) -> ItemTimeline:
        """The timeline of positive events ``user_idx``, ``item_idx``, ``timestamp`` (Datetime("us"))."""
        frame = events.lazy().select(USER_IDX, ITEM_IDX, pl.col(C.TS).cast(pl.Int64)).collect()
        stamps, ranks = distinct_ranks(frame[C.TS].to_numpy())
        stride = len(stamps) + 1
        if int(frame[ITEM_IDX].max() or 0) + 1 > np.iinfo(np.int64).max // stride:
            raise ValueError(f"{frame.height:,} events over {len(stamps):,} instants overflow int64 timeline keys")

        items = frame[ITEM_IDX].to_numpy().astype(np.int64, copy=False)
        keys = np.sort(items * stride + ranks)
        return cls(stamps, keys, _first_keys(frame[USER_IDX].to_numpy().astype(np.int64, copy=False), items, ranks,
                                             stride))

    @property
    def stride(self) -> int:
        return len(self.stamps) + 1

    def instants(self, at: np.ndarray) -> np.ndarray:
        """int64 per row: how many of the log's distinct timestamps are strictly before ``at`` (µs)."""
        at = np.asarray(at)
        heads = np.flatnonzero(run_starts(at))  # a block's rows come user by user, each user's one cut repeated
        return np.repeat(search(self.stamps, at[heads]), np.diff(np.append(heads, len(at))))

    def position(self, items: np.ndarray, instants: np.ndarray, user_level: bool = False) -> np.ndarray:
        """Position just past each item's last key before the instant (:meth:`instants`; 0: the item's first key):
        a binary search of the item's own run of keys. ``instants`` [m, n]: ``m`` instants an item, [m, n] out."""
        keys, starts = self._runs(user_level)
        items = items.astype(np.int64, copy=False)
        return search_in_runs(keys, starts, items, items * self.stride + instants)

    def first(self, items: np.ndarray, user_level: bool = False) -> np.ndarray:
        """Each item's first key's position: :meth:`position` at instant 0, read from the runs' starts."""
        keys, starts = self._runs(user_level)
        items = items.astype(np.int64, copy=False)
        return np.where(items + 1 < len(starts), starts[np.minimum(items, len(starts) - 1)], len(keys))

    def _runs(self, user_level: bool) -> tuple[np.ndarray, np.ndarray]:
        """The keys searched (each (user, item) pair's first event, or every event) and their items' run starts."""
        return (self.user_keys, self._user_starts) if user_level else (self.keys, self._starts)

    @cached_property
    def _starts(self) -> np.ndarray:
        """int64 [n_items + 1]: where each item's run of :attr:`keys` starts (built at the first block)."""
        return _run_starts(self.keys, self.stride)

    @cached_property
    def _user_starts(self) -> np.ndarray:
        return _run_starts(self.user_keys, self.stride)

    def time_at(self, positions: np.ndarray) -> np.ndarray:
        """int64 µs of the events at ``positions`` of ``keys`` (clipped into range)."""
        if not len(self.keys):
            return np.zeros(len(positions), dtype=np.int64)
        return self.stamps[self.keys[np.clip(positions, 0, len(self.keys) - 1)] % self.stride]


def _run_starts(keys: np.ndarray, stride: int) -> np.ndarray:
    """int64 [n_items + 1]: the first position of each item's keys ``item * stride + rank``, then ``len(keys)``."""
    n_items = int(keys[-1]) // stride + 1 if len(keys) else 0
    return np.searchsorted(keys, np.arange(n_items + 1, dtype=np.int64) * stride).astype(np.int64)


def check_windows_days(windows_days: Sequence[int], *, name: str = "windows_days") -> tuple[int, ...]:
    """``windows_days`` as a tuple, or ValueError naming ``name`` unless distinct positive ints."""
    if isinstance(windows_days, (str, bytes)) or not isinstance(windows_days, Sequence):
        raise ValueError(f"{name} must be a sequence of whole days, got {windows_days!r}")
    windows = tuple(windows_days)
    if not windows or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in windows) \
            or len(set(windows)) != len(windows):
        raise ValueError(f"{name} must be distinct positive whole days, got {windows!r}")
    return windows


def add_item_popularity(pairs: pl.LazyFrame | pl.DataFrame, events: pl.LazyFrame | pl.DataFrame | ItemTimeline, *,
                        windows_days: Sequence[int] = (7, 30)) -> pl.LazyFrame:
    """Add item-side popularity features, each computed from the events before the row's cut.

    Args:
        pairs: rows with ``item_idx`` (Int64) and ``cut`` (Datetime("us")); other columns pass
            through and the row order is kept.
        events: positive events of all users, ``user_idx`` (Int64), ``item_idx`` (Int64),
            ``timestamp`` (Datetime("us")), or their :class:`ItemTimeline` (built once, reused by
            every call). Events at or after a row's cut are never read for that row, so the caller
            may pass the whole log.
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
    timeline = events if isinstance(events, ItemTimeline) else ItemTimeline.from_events(events)
    frame = pairs.lazy().collect()
    items = frame[ITEM_IDX].to_numpy()
    cut = frame[CUT].cast(pl.Int64).to_numpy()
    now = timeline.instants(cut)
    starts = [timeline.instants(cut - w * _DAY_US) for w in windows]
    first = timeline.first(items)
    end, *window_starts = timeline.position(items, np.stack([now, *starts]))  # one item's searches together
    before = end - first
    columns = {"pop_all": before}
    for w, start in zip(windows, window_starts, strict=True):
        columns[f"pop_{w}d"] = end - start
    columns["pop_users"] = timeline.position(items, now, user_level=True) - timeline.first(items, user_level=True)
    seen = before > 0
    days = {"pop_age_days": timeline.time_at(first), "pop_last_days": timeline.time_at(end - 1)}
    out = frame.with_columns(
        *(pl.Series(name, value, dtype=pl.Int32) for name, value in columns.items()),
        pl.Series("pop_trend", columns[f"pop_{max(windows)}d"] / (before + 1.0), dtype=pl.Float32),
        *(pl.Series(name, np.where(seen, (cut - stamp) / _DAY_US, np.nan), dtype=pl.Float32, nan_to_null=True)
          for name, stamp in days.items()))
    return out.lazy()
