"""``recsys.indexing``: ``event_matrix`` sums weights per (user, item); ``IdIndex`` finds ids as ``index_of``."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from recsys import contract as C
from recsys.indexing import IdIndex, event_matrix, index_of

WEIGHTS = {C.CLICK: 1.0, C.PURCHASE: 3.0, C.IMPRESSION: 0.0, "dislike": -2.0}


def test_event_matrix_sums_each_pairs_weights_and_drops_what_is_not_positive():
    rng = np.random.default_rng(4)
    n = 5_000
    rows = pl.DataFrame({C.USER_IDX: rng.integers(0, 40, n), C.ITEM_IDX: rng.integers(0, 25, n),
                         C.EVENT: rng.choice(list(WEIGHTS), n)})
    weight = pl.col(C.EVENT).replace_strict(WEIGHTS, default=0.0, return_dtype=pl.Float32)
    matrix = event_matrix(rows, (50, 30), weight)
    sums: dict[tuple[int, int], float] = defaultdict(float)
    for user, item, event in rows.iter_rows():
        sums[(user, item)] += WEIGHTS[event]
    expected = {pair: total for pair, total in sums.items() if total > 0}
    coo = matrix.tocoo()
    assert dict(zip(zip(coo.row.tolist(), coo.col.tolist(), strict=True), coo.data.tolist(), strict=True)) == expected
    assert any(total <= 0 for total in sums.values())  # the data has pairs to drop
    assert matrix.shape == (50, 30) and matrix.dtype == np.float32
    assert matrix.has_canonical_format  # sorted within rows, one entry per pair: SGD visits them in this order
    assert event_matrix(rows.head(0), (3, 4), weight).nnz == 0


def test_an_id_index_finds_every_id_as_the_join_does_and_misses_with_minus_one():
    rng = np.random.default_rng(7)
    known = np.array([f"u{i}" for i in rng.permutation(2_000)] + ["7", "x y"], dtype=object)
    asked = np.concatenate([known[rng.integers(0, len(known), 300)], ["absent", "u99999", ""], [7]]).astype(object)
    index = IdIndex(known)
    found = index.of(asked)
    np.testing.assert_array_equal(found, index_of(asked, known))
    assert found.dtype == np.int64 and len(index) == len(known)
    assert (found[-4:-1] == -1).all() and found[-1] == len(known) - 2  # an int id is compared as its string
    assert (known[found[:300]] == asked[:300]).all()
    assert index.of([]).shape == (0,)
    with pytest.raises(ValueError, match="1 are repeated"):
        IdIndex(["a", "b", "a"])
