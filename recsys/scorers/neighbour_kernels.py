"""Compiled loops of a sparse item-item model's block: ``binarised history @ W`` without a sparse product.

scipy multiplies two sparse matrices into a third (two passes: its size, then its entries) and that result
is made dense for the selection: at 100k items a user's 18 history items reach 32,000 items, so a block
of 512 users wrote 16M sparse entries, then a 200 MB dense block, then passed over it for the moments and
the top 100 (0.5-1.1 s a block). Here each user's sums go into one reused catalogue-sized buffer (it stays
in the CPU's cache), read once for the moments and the selection, and cleared where they were written
(0.2 s a block, the same lists). The sums are float32 and added in scipy's order (the history's items
ascending, each item's row as stored), so every score is the same number, bit for bit.

Compiled as :mod:`recsys.scorers.compiled` says (once, cached on disk; without the GIL).
"""

from __future__ import annotations

import numpy as np

from recsys.scorers.compiled import better, jit, offer

__all__ = ["accumulate_dense", "top_with_moments", "values_at"]


@jit
def accumulate_dense(h_ptr, h_items, w_ptr, w_items, w_values, out):  # pragma: no cover - compiled
    """``out[u] += sum of W's rows of user u's history items`` (``out`` float32 [b, n_items], zeroed by the caller)."""
    for u in range(len(h_ptr) - 1):
        row = out[u]
        for p in range(h_ptr[u], h_ptr[u + 1]):
            i = h_items[p]
            for q in range(w_ptr[i], w_ptr[i + 1]):
                row[w_items[q]] += w_values[q]


@jit
def top_with_moments(h_ptr, h_items, w_ptr, w_items, w_values, n_items, k, ex_ptr, ex_items, ex_values,
                     top, mean, std):  # pragma: no cover - compiled
    """Each user's ``k`` best items (``top`` int64 [b, k], -1 padded) and the mean and standard deviation of
    their scores over the whole catalogue (float64 [b] each), with ``recsys.topk.top_k``'s rules.

    An item no history item reaches scores 0, so those compete too, lowest index first. The moments read
    every item's score, the excluded ones included; an excluded item (a stored nonzero of the exclusion rows)
    and a score that is NaN or -inf are never selected.
    """
    total = np.zeros(n_items, np.float32)
    seen = np.zeros(n_items, np.bool_)
    touched = np.empty(n_items, np.int64)
    best_values = np.empty(max(k, 1), np.float32)
    best_items = np.empty(max(k, 1), np.int64)
    for u in range(len(h_ptr) - 1):
        n_touched = 0
        for p in range(h_ptr[u], h_ptr[u + 1]):
            i = h_items[p]
            for q in range(w_ptr[i], w_ptr[i + 1]):
                j = w_items[q]
                if not seen[j]:
                    seen[j] = True
                    touched[n_touched] = j
                    n_touched += 1
                total[j] += w_values[q]
        first = 0.0
        second = 0.0
        for t in range(n_touched):
            value = np.float64(total[touched[t]])
            first += value
            second += value * value
        mean[u] = first / n_items
        std[u] = np.sqrt(max(second / n_items - mean[u] * mean[u], 0.0))
        for p in range(ex_ptr[u], ex_ptr[u + 1]):
            if ex_values[p] != 0:
                j = ex_items[p]
                if not seen[j]:
                    seen[j] = True
                    touched[n_touched] = j
                    n_touched += 1
                total[j] = -np.inf
        size = 0
        if k > 0:
            for t in range(n_touched):
                j = touched[t]
                value = total[j]
                if value > -np.inf:  # False for NaN too
                    size = offer(best_values, best_items, size, k, value, j)
            zero = np.float32(0.0)
            for j in range(n_items):  # items nothing reached score 0: lowest index first, while they still rank
                if size == k and not better(zero, j, best_values[0], best_items[0]):
                    break
                if not seen[j]:
                    size = offer(best_values, best_items, size, k, zero, j)
        order = np.argsort(best_items[:size], kind="mergesort")  # by item, then stably by descending score
        values = best_values[:size][order]
        items = best_items[:size][order]
        ranked = np.argsort(-values, kind="mergesort")
        for t in range(k):
            top[u, t] = items[ranked[t]] if t < size else -1
        for t in range(n_touched):
            j = touched[t]
            total[j] = 0.0
            seen[j] = False


@jit
def values_at(h_ptr, h_items, w_ptr, w_items, w_values, n_items, pair_ptr, pair_items, out):  # pragma: no cover
    """``out[m]`` = the score of ``pair_items[m]`` for block row ``u``, for ``m`` in ``pair_ptr[u]:pair_ptr[u + 1]``."""
    total = np.zeros(n_items, np.float32)
    for u in range(len(pair_ptr) - 1):
        if pair_ptr[u] == pair_ptr[u + 1]:
            continue
        for p in range(h_ptr[u], h_ptr[u + 1]):
            i = h_items[p]
            for q in range(w_ptr[i], w_ptr[i + 1]):
                total[w_items[q]] += w_values[q]
        for m in range(pair_ptr[u], pair_ptr[u + 1]):
            out[m] = total[pair_items[m]]
        for p in range(h_ptr[u], h_ptr[u + 1]):
            i = h_items[p]
            for q in range(w_ptr[i], w_ptr[i + 1]):
                total[w_items[q]] = 0.0
