"""Each row's rank by a score within its user's rows, in a compiled loop over the users' runs.

The ranking table turns every ``score_<x>`` column into ``rank_<x>``: 1 = the user's highest
score, ties to the lower ``item_idx``, null for a null or NaN score. A polars window
(``arg_sort().over(user)``) did this in about 0.05 s for five columns of a 154,000-row export
block (512 users x 300 candidates): a hash partition per column. The table is sorted by user and
item anyway, so each user's rows are one run, already in item order, and a stable sort of the
run's negated scores is the ranking, with the ties in item order.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.arrays import run_starts
from features.compiled import jit

__all__ = ["ranks_by_user"]


def ranks_by_user(users: np.ndarray, scores: pl.Series) -> np.ndarray:
    """int32 rank of each row's score among its user's rows (1 = highest); 0 where the score is null or NaN.

    Args:
        users: the rows' users, sorted: each user's rows are one run.
        scores: one score per row, float (integers are cast to float64, exact below 2**53); within a
            user's run the rows are in the order that breaks ties (the table's item order).
    """
    values = scores.cast(pl.Float64).fill_null(np.nan).to_numpy()
    starts = np.append(np.flatnonzero(run_starts(users)), len(users)).astype(np.int64)
    return _ranks_in_runs(values, starts)


@jit
def _ranks_in_runs(values, starts):  # pragma: no cover - compiled
    out = np.zeros(len(values), dtype=np.int32)
    for r in range(len(starts) - 1):
        low, high = starts[r], starts[r + 1]
        run = values[low:high]
        order = np.argsort(-run, kind="mergesort")  # stable: equal scores stay in item order
        for position in range(high - low):
            row = order[position]
            if not np.isnan(run[row]):  # NaN sorts last, so the numbers before it rank 1, 2, ...
                out[low + row] = position + 1
    return out
