"""Compiled loops of a linear model's block (``user . item``): the screen's selection and the exact pair scores.

:class:`recsys.scorers.factor_scores.FactorScores` selects a user's top items from a bfloat16 product of the
block with the catalogue, a tile of items at a time (AMX on CPUs that have it), and rescores the few it kept
exactly in float32 (:func:`pair_dots`). :func:`screen_tile` keeps each row's best ``m`` of a tile's products
on a heap; it reads the bfloat16 bits as integers ordered like the numbers (:func:`order_key`), so no tile is
converted to float32.

Compiled as :mod:`recsys.scorers.compiled` says (once, cached on disk; without the GIL).
"""

from __future__ import annotations

import numpy as np

from recsys.scorers.compiled import jit, offer

__all__ = ["screen_tile", "pair_dots", "order_key"]


@jit
def order_key(bits):  # pragma: no cover - compiled
    """The int32 order key of a bfloat16 (its int16 bits): keys compare as the numbers do (-0 and +0 both 0)."""
    value = np.int32(bits)
    return value if value >= 0 else np.int32(-32768) - value


@jit
def screen_tile(tile, first, floor, keys, items, sizes, ex_ptr, ex_items, ex_next):  # pragma: no cover - compiled
    """Offer each row's products of one tile of items to that row's heap of its best ``m`` (``keys.shape[1]``).

    A product whose key is below the row's ``floor`` is never offered, nor one below the heap's lowest once it
    is full; a run of :data:`RUN` columns whose highest key is below both is passed over on that maximum alone
    (a vectorised pass): with a floor near the row's ``m``-th product nearly every run is.

    Args:
        tile: int16 [r, t]: the bfloat16 bits of the rows' products with items ``first .. first + t - 1``.
        floor: int32 [r]: each row's lowest key offered.
        keys, items: int32 / int64 [r, m]: each row's heap (:func:`recsys.scorers.compiled.offer`), kept
            between tiles with ``sizes`` int64 [r].
        ex_ptr, ex_items: the rows' excluded items (CSR pointers and sorted, distinct columns): never offered.
        ex_next: int64 [r]: each row's first excluded entry not yet passed (``ex_ptr[:-1]`` before the first tile).
    """
    m = keys.shape[1]
    width = tile.shape[1]
    for r in range(tile.shape[0]):
        size = sizes[r]
        at = ex_next[r]
        end = ex_ptr[r + 1]
        row_keys = keys[r]
        row_items = items[r]
        row = tile[r]
        lowest = max(floor[r], row_keys[0]) if size == m else floor[r]
        for start in range(0, width, RUN):
            stop = min(start + RUN, width)
            if stop - start == RUN:  # a whole run: a fixed trip count, vectorised
                highest = _run_max(row, start)
                if highest < lowest:
                    continue
            for c in range(start, stop):
                key = order_key(row[c])
                if key < lowest:
                    continue
                item = first + c
                while at < end and ex_items[at] < item:
                    at += 1
                if at < end and ex_items[at] == item:
                    continue
                size = offer(row_keys, row_items, size, m, key, item)
                if size == m:
                    lowest = max(floor[r], row_keys[0])
        sizes[r] = size
        ex_next[r] = at


RUN = 64
"""Columns a row's run-maximum test of :func:`screen_tile` passes over at once."""


@jit
def _run_max(row, start):  # pragma: no cover - compiled
    """The highest order key of ``row[start:start + RUN]``."""
    highest = np.int32(-32768)
    for c in range(start, start + RUN):
        highest = max(highest, order_key(row[c]))
    return highest


@jit(fastmath=True)
def pair_dots(user, items, rows, cols, out):  # pragma: no cover - compiled
    """``out[p] = user[rows[p]] . items[cols[p]]`` in float32 (one summation order for every pair)."""
    d = user.shape[1]
    for p in range(len(rows)):
        u = user[rows[p]]
        a = items[cols[p]]
        total = np.float32(0.0)
        for t in range(d):
            total += u[t] * a[t]
        out[p] = total
