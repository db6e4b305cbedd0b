"""Sorting-based set operations on large integer arrays: distinct values, their ranks, ordered searches.

NumPy 2's ``np.unique`` hashes (1.9 s for 2M distinct int64 timestamps, against 0.03 s for a
sort and a mask), and ``np.searchsorted`` with needles in random order misses the cache on
every probe (3.3 s for 2M needles into 20M values). At 20M events the two cost a registered
model's load over a minute; these do the same work by sorting.
"""

from __future__ import annotations

import numpy as np

__all__ = ["distinct", "distinct_ranks", "run_starts", "search"]


def run_starts(ordered: np.ndarray) -> np.ndarray:
    """bool per value of a sorted array: the first of its run of equal values."""
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


def distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` (sorted distinct values) by a sort and a mask."""
    ordered = np.sort(np.asarray(values).ravel())
    return ordered[run_starts(ordered)]


def distinct_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values and each value's rank among them (``np.searchsorted(distinct, values)``),
    from one stable sort."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = run_starts(ordered)
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    return ordered[new], ranks


def search(values: np.ndarray, queries: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted(values, queries, side)`` with the queries sorted first: in order, each probe hits
    memory the last one touched (about nine times faster on 300k queries into 2M values)."""
    queries = np.asarray(queries)
    order = np.argsort(queries, kind="stable")
    out = np.empty(len(queries), dtype=np.int64)
    out[order] = np.searchsorted(values, queries[order], side=side)
    return out
