"""Sorting-based distinct values, ranks and searches agree with NumPy's own, ties and empty inputs included."""

from __future__ import annotations

import numpy as np
import pytest

from features.arrays import distinct, distinct_ranks, search


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
