"""Sorting-based distinct values, ranks and searches agree with NumPy's own, ties and empty inputs included."""

from __future__ import annotations

import numpy as np
import pytest

from features.arrays import distinct, distinct_ranks, search, search_in_runs


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_distinct_and_ranks_match_numpy(n):
    rng = np.random.default_rng(n)
    values = rng.integers(-50, 50, n) * 10**12  # heavy repeats, large magnitudes
    np.testing.assert_array_equal(distinct(values), np.unique(values))
    unique, ranks = distinct_ranks(values)
    np.testing.assert_array_equal(unique, np.unique(values))
    np.testing.assert_array_equal(ranks, np.searchsorted(np.unique(values), values))
    assert ranks.dtype == np.int64 and len(ranks) == n


@pytest.mark.parametrize("side", ["left", "right"])
def test_search_matches_searchsorted_for_queries_in_any_order(side):
    rng = np.random.default_rng(1)
    values = np.sort(rng.integers(0, 100, 300))
    queries = rng.integers(-5, 105, 1000)  # repeats, below and above every value
    np.testing.assert_array_equal(search(values, queries, side), np.searchsorted(values, queries, side=side))
    assert search(values, np.empty(0, np.int64)).shape == (0,)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_in_runs_matches_searchsorted_over_the_whole_array(seed):
    """Keys ``run * stride + offset``: a search of the query's own run is the search of every value, for runs that
    are empty, runs past the last one and queries before, inside and after a run."""
    rng = np.random.default_rng(seed)
    stride = 50
    runs_of_values = np.sort(rng.choice([0, 1, 3, 4, 7], 400))  # runs 2, 5 and 6 are empty
    values = np.sort(runs_of_values * stride + rng.integers(0, 40, 400))
    starts = np.searchsorted(values, np.arange(9) * stride)  # eight runs, then len(values)
    runs = rng.integers(0, 11, 2000)  # 8..10: past every run
    queries = runs * stride + rng.integers(0, stride, 2000)
    np.testing.assert_array_equal(search_in_runs(values, starts, runs, queries), np.searchsorted(values, queries))
    several = np.stack([queries, runs * stride, runs * stride + stride - 1])  # three queries a run, searched together
    np.testing.assert_array_equal(search_in_runs(values, starts, runs, several), np.searchsorted(values, several))
    assert search_in_runs(values, starts, np.empty(0, np.int64), np.empty(0, np.int64)).shape == (0,)
