"""Full-catalogue ranking metrics over top-k lists and catalogue-level diversity metrics.

Conventions shared by every function here:

* ``topk`` is an integer array ``[n_users, K]`` of item indices, best first. ``-1`` is padding
  (a slot with no recommendation): it is never a hit and is skipped by the catalogue metrics.
  Items within a row are assumed distinct, as :func:`recsys.topk.top_k` returns them.
* ``truth`` is a sparse matrix ``[n_users, n_items]`` whose stored nonzero entries are the relevant
  items (binary relevance; the stored values are ignored apart from being nonzero).
* Per-user metrics come back as float64 arrays aligned with the rows; users without any relevant
  item get NaN so that the caller can drop them (``np.nanmean``) instead of counting them as 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from recsys.topk import check_positive as _check_k

__all__ = ["DEFAULT_KS", "ranking_metrics", "hit_matrix", "catalog_coverage", "novelty", "mean_popularity", "gini"]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50, 100)
"""Cut-offs reported by default (``recall@5`` ... ``map@100``)."""


def _check_topk(topk: np.ndarray, n_items: int | None = None) -> np.ndarray:
    topk = np.asarray(topk)
    if topk.ndim != 2 or not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"topk must be a 2-D integer array [n_users, k], got shape {topk.shape}, dtype {topk.dtype}")
    if n_items is not None and topk.size and (topk.min() < -1 or topk.max() >= n_items):
        raise ValueError(f"topk entries must be item indices in [0, {n_items}) or -1 for padding, "
                         f"got values in [{topk.min()}, {topk.max()}]")
    return topk


def _canonical_csr(truth: sp.spmatrix | sp.sparray, n_rows: int) -> sp.csr_array:
    """CSR with sorted, unique column indices and no stored zeros; the caller's matrix is never modified."""
    if not sp.issparse(truth) or truth.ndim != 2:
        raise ValueError(f"truth must be a 2-D scipy sparse matrix [n_users, n_items], got {type(truth).__name__}")
    if truth.shape[0] != n_rows:
        raise ValueError(f"truth has {truth.shape[0]} rows but topk has {n_rows}; rows must be aligned users")
    csr = sp.csr_array(truth, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    return csr


def _hits(topk: np.ndarray, truth: sp.csr_array) -> np.ndarray:
    """bool ``[n_users, K]``: whether ``topk[u, r]`` is a relevant item of user ``u``.

    One vectorised (row array, column array) lookup: on a canonical CSR scipy binary-searches each
    user's short sorted row in C++, about twice as fast as ``searchsorted`` of int64
    ``user * n_items + item`` keys against the whole matrix (cache misses over all nnz).
    """
    hits = np.zeros(topk.shape, dtype=bool)
    if truth.nnz == 0 or topk.size == 0:
        return hits
    rows = np.repeat(np.arange(topk.shape[0]), topk.shape[1])
    found = truth[rows, np.maximum(topk, 0).ravel()].reshape(topk.shape) != 0
    # Padding was looked up as item 0, so it is masked out here.
    np.logical_and(found, topk >= 0, out=hits)
    return hits


def hit_matrix(topk: np.ndarray, truth: sp.spmatrix | sp.sparray) -> np.ndarray:
    """bool ``[n_users, K]``: which list entries are relevant items of their row's user (-1 padding never)."""
    topk = _check_topk(topk)
    return _hits(topk, _canonical_csr(truth, topk.shape[0]))


def ranking_metrics(topk: np.ndarray, truth: sp.csr_matrix, ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-user recall, precision, NDCG, hit rate and MAP at each cut-off, plus MRR.

    With ``rel_r`` = 1 if the item at rank ``r`` (1-based) is relevant, ``hits@k = sum_{r<=k} rel_r``
    and ``R = |truth_u|``:

    * ``recall@k = hits@k / R``
    * ``precision@k = hits@k / k``
    * ``ndcg@k = DCG@k / IDCG@k`` with ``DCG@k = sum_{r<=k} rel_r / log2(r + 1)`` and IDCG@k the DCG of
      ``min(k, R)`` relevant items at ranks 1..min(k, R)
    * ``hitrate@k = 1[hits@k > 0]``
    * ``map@k = sum_{r<=k} precision@r * rel_r / min(k, R)``
    * ``mrr = 1 / rank`` of the first relevant item anywhere in the K-long list, 0 if there is none.

    Edge cases: padding (-1) is never a hit; when ``K < k`` the missing ranks count as misses
    (``precision@k`` still divides by ``k``); users with an empty truth row get NaN for every metric
    (drop them with ``np.nanmean``).

    Args:
        topk: int ``[n_users, K]`` item indices ranked best first; -1 = padding; distinct within a row.
        truth: sparse ``[n_users, n_items]``, nonzero = relevant; rows aligned with ``topk``.
        ks: cut-offs, each an integer >= 1.

    Returns:
        ``{"recall@k", "precision@k", "ndcg@k", "hitrate@k", "map@k" for k in ks, "mrr"}`` -> float64 ``[n_users]``.

    Raises:
        ValueError: ``topk`` is not a 2-D integer array, holds indices outside ``[-1, n_items)``, its
            rows do not match ``truth``, or a cut-off is not an integer >= 1.
    """
    ks = tuple(_check_k(k, "every cut-off in ks") for k in ks)
    if not ks:
        raise ValueError("ks must hold at least one cut-off, got an empty sequence")
    topk = _check_topk(topk)
    truth = _canonical_csr(truth, topk.shape[0])
    _check_topk(topk, truth.shape[1])
    hits = _hits(topk, truth)
    n_rel = np.diff(truth.indptr).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    width = max(ks)
    # Ranks past K are misses; pad or cut so every cut-off indexes a real column.
    cut = np.zeros((hits.shape[0], width))
    cut[:, : min(width, hits.shape[1])] = hits[:, :width]
    rank = np.arange(1, width + 1, dtype=np.float64)
    cum_hits = np.cumsum(cut, axis=1)
    # upto[r, j] = 1 if rank r+1 is within cut-off ks[j]: sums up to every cut-off in one matmul.
    upto = (rank[:, None] <= np.asarray(ks)[None, :]).astype(np.float64)
    dcg = cut @ (upto / np.log2(rank + 1.0)[:, None])
    ap = (cut * (cum_hits / rank)) @ upto
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(rank + 1.0))])  # ideal[m]: m hits at ranks 1..m
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, k in enumerate(ks):
            h = cum_hits[:, k - 1]
            m = np.minimum(n_rel, k)
            out[f"recall@{k}"] = h / n_rel
            out[f"precision@{k}"] = h / k
            out[f"ndcg@{k}"] = dcg[:, j] / ideal[m.astype(np.int64)]
            out[f"hitrate@{k}"] = (h > 0).astype(np.float64)
            out[f"map@{k}"] = ap[:, j] / m
    out["mrr"] = _mrr(hits)
    empty = n_rel == 0
    for values in out.values():
        values[empty] = np.nan
    return out


def _mrr(hits: np.ndarray) -> np.ndarray:
    if hits.shape[1] == 0:
        return np.zeros(hits.shape[0])
    first = hits.argmax(axis=1)
    return np.where(hits[np.arange(hits.shape[0]), first], 1.0 / (first + 1.0), 0.0)


def _slots(topk: np.ndarray, k: int, n_items: int | None = None) -> np.ndarray:
    """The non-padding item indices of every user's top-k, flattened."""
    k = _check_k(k)
    items = _check_topk(topk, n_items)[:, :k].ravel()
    return items[items >= 0]


def catalog_coverage(topk: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one user's top-k.

    ``coverage@k = |union_u topk_u[:k]| / n_items``; padding (-1) is ignored.

    Args:
        topk: int ``[n_users, K]`` item indices, -1 = padding.
        n_items: catalogue size (>= 1).
        k: cut-off (>= 1); ``K < k`` simply uses the K columns there are.

    Returns:
        Coverage in [0, 1]; 0.0 when no slot holds an item.
    """
    n_items = _check_k(n_items, "n_items")
    items = _slots(topk, k, n_items)
    return float(np.count_nonzero(np.bincount(items, minlength=n_items)) / n_items)


def _popularity(item_popularity: np.ndarray) -> np.ndarray:
    pop = np.asarray(item_popularity, dtype=np.float64)
    if pop.ndim != 1 or (pop.size and pop.min() < 0):
        raise ValueError(f"item_popularity must be a 1-D array of non-negative counts [n_items], got shape {pop.shape}")
    return pop


def novelty(topk: np.ndarray, item_popularity: np.ndarray, n_users_train: int, k: int) -> float:
    """Mean self-information of the recommended items, in bits.

    ``novelty@k = mean over all non-padding top-k slots of -log2(p_i)`` with
    ``p_i = max(pop_i, 1) / n_users_train``: the clip makes items unseen in training finite
    (as rare as an item seen by a single user) instead of infinite.

    Args:
        topk: int ``[n_users, K]`` item indices, -1 = padding.
        item_popularity: ``[n_items]`` number of training users who interacted with each item.
        n_users_train: number of training users (>= 1).
        k: cut-off (>= 1).

    Returns:
        Mean novelty in bits (>= 0); NaN when no slot holds an item.
    """
    n_users_train = _check_k(n_users_train, "n_users_train")
    pop = _popularity(item_popularity)
    items = _slots(topk, k, pop.size)
    if items.size == 0:
        return float("nan")
    p = np.maximum(pop[items], 1.0) / n_users_train
    return float(np.mean(-np.log2(p)))


def mean_popularity(topk: np.ndarray, item_popularity: np.ndarray, k: int) -> float:
    """Mean training popularity count of the recommended items.

    ``popularity@k = mean over all non-padding top-k slots of pop_i``.

    Args:
        topk: int ``[n_users, K]`` item indices, -1 = padding.
        item_popularity: ``[n_items]`` training interaction (or user) counts per item.
        k: cut-off (>= 1).

    Returns:
        The mean count; NaN when no slot holds an item.
    """
    pop = _popularity(item_popularity)
    items = _slots(topk, k, pop.size)
    return float(np.mean(pop[items])) if items.size else float("nan")


def gini(topk: np.ndarray, n_items: int, k: int) -> float:
    """Gini coefficient of how often each catalogue item is recommended in the top-k.

    With ``c_1 <= ... <= c_n`` the sorted recommendation counts of all ``n = n_items`` items
    (never-recommended items count 0): ``G = sum_i (2i - n - 1) c_i / (n * sum_i c_i)``.
    0 means every item is recommended equally often; the maximum, ``1 - 1/n``, means one item
    takes every slot. If all users get the same k items, ``G = 1 - k / n``.

    Args:
        topk: int ``[n_users, K]`` item indices, -1 = padding.
        n_items: catalogue size (>= 1).
        k: cut-off (>= 1).

    Returns:
        The Gini coefficient in [0, 1); NaN when no slot holds an item.
    """
    n_items = _check_k(n_items, "n_items")
    items = _slots(topk, k, n_items)
    if items.size == 0:
        return float("nan")
    counts = np.sort(np.bincount(items, minlength=n_items)).astype(np.float64)
    weights = 2.0 * np.arange(1, n_items + 1) - n_items - 1.0
    return float(weights @ counts / (n_items * counts.sum()))
