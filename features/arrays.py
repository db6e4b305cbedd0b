"""Sorting-based set operations on large integer arrays: distinct values, their ranks, ordered searches.

NumPy 2's ``np.unique`` hashes (1.9 s for 2M distinct int64 timestamps, against 0.03 s for a
sort and a mask), and ``np.searchsorted`` with needles in random order misses the cache on
every probe (3.3 s for 2M needles into 20M values). At 20M events the two cost a registered
model's load over a minute; these do the same work by sorting.
"""

from __future__ import annotations

import numpy as np

from features.compiled import jit

__all__ = ["distinct", "distinct_ranks", "first_not_below", "run_starts", "search", "search_in_runs"]


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


def search_in_runs(values: np.ndarray, starts: np.ndarray, runs: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.searchsorted(values, queries)`` where each query is known to fall in its run ``values[starts[r]:
    starts[r + 1]]`` (``runs[q]``; a run past the end of ``starts``: after every value): a binary search of that
    run alone, in a compiled loop (four times quicker than :func:`search` over 20M values).

    Args:
        values: sorted int64 values made of consecutive runs.
        starts: int64 [n_runs + 1] first position of each run, and ``len(values)``.
        runs: int64 [n] each query's run.
        queries: int64 [n], or [m, n]: ``m`` queries in each run (searched together, while the run is in cache).
    """
    queries = np.asarray(queries, dtype=np.int64)
    many = np.atleast_2d(queries)
    out = np.empty(many.shape, dtype=np.int64)
    _search_in_runs(values, starts, np.asarray(runs, dtype=np.int64), many, out)
    return out.reshape(queries.shape)


@jit
def _search_in_runs(values, starts, runs, queries, out):  # pragma: no cover - compiled
    for q in range(queries.shape[1]):
        run = runs[q]
        if run + 1 >= len(starts):
            for k in range(queries.shape[0]):
                out[k, q] = len(values)
            continue
        for k in range(queries.shape[0]):
            out[k, q] = first_not_below(values, starts[run], starts[run + 1], queries[k, q])


@jit
def first_not_below(values, low, high, target):  # pragma: no cover - compiled
    """The first position in ``values[low:high]`` (sorted) whose value is not below ``target`` (``high`` if none):
    ``np.searchsorted`` of one value in a slice, for compiled loops."""
    while low < high:
        middle = (low + high) >> 1
        if values[middle] < target:
            low = middle + 1
        else:
            high = middle
    return low


def search(values: np.ndarray, queries: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted(values, queries, side)`` with the queries sorted first: in order, each probe hits
    memory the last one touched (about nine times faster on 300k queries into 2M values)."""
    queries = np.asarray(queries)
    order = np.argsort(queries, kind="stable")
    out = np.empty(len(queries), dtype=np.int64)
    out[order] = np.searchsorted(values, queries[order], side=side)
    return out
