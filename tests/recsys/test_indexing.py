"""``recsys.indexing.event_matrix``: weights summed per (user, item), non-positive sums dropped, canonical order."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl

from recsys import contract as C
from recsys.indexing import event_matrix

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
