"""Fitting the reference models every learned recommender must beat: random, popularity, item-kNN, EASE.

Each is an estimator: settings in a frozen config, and ``fit(data)`` returns the fitted runtime
scorer (:mod:`recsys.scorers`: plain arrays that score a whole block of users at once). Seen
items are *not* masked by scorers; the one scoring path (:mod:`recsys.scoring`) does that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.linalg import lapack

from recsys.config import check_above, check_at_least
from recsys.indexing import FitInput
from recsys.scorers import ItemItemScorer, PopularityScorer, RandomScorer, binarize

__all__ = [
    "RandomConfig",
    "RandomRecommender",
    "PopularityConfig",
    "PopularityRecommender",
    "ItemKNNConfig",
    "ItemKNNRecommender",
    "EASEConfig",
    "EASERecommender",
]

logger = logging.getLogger(__name__)

# Row blocks span at most this many [rows x n_items] entries, so item-kNN's co-occurrence pass
# and EASE's symmetrisation stay memory-flat on large catalogues.
_BLOCK_ENTRIES = 1 << 23


@dataclass(frozen=True)
class RandomConfig:
    """The random baseline has no settings; the class exists so every model is built alike."""


class RandomRecommender:
    """Uniform random scores (:class:`recsys.scorers.RandomScorer`), a hash of ``(seed, user, item)``."""

    name = "random"

    def __init__(self, config: RandomConfig = RandomConfig()) -> None:
        self.config = config

    def fit(self, data: FitInput) -> RandomScorer:
        """Nothing is learned: the catalogue size and the seed make the scorer."""
        return RandomScorer(data.n_items, data.seed)


@dataclass(frozen=True)
class PopularityConfig:
    """Settings of :class:`PopularityRecommender`."""

    window: Literal["all", "recent"] = "all"
    """Count users over all of ``FitInput.interactions`` ("all") or only ``FitInput.recent``."""

    def __post_init__(self) -> None:
        if self.window not in ("all", "recent"):
            raise ValueError(f"PopularityConfig.window must be one of 'all', 'recent'; got {self.window!r}")


class PopularityRecommender:
    """Item score = number of distinct users with a positive interaction; same for every user.

    Named ``popularity`` (window "all") or ``popularity_recent`` (window "recent").
    """

    def __init__(self, config: PopularityConfig = PopularityConfig()) -> None:
        self.config = config
        self.name = "popularity" if config.window == "all" else "popularity_recent"

    def fit(self, data: FitInput) -> PopularityScorer:
        """Count distinct positive users per item.

        Args:
            data: ``interactions`` or ``recent`` (per ``config.window``), float32 [n_users, n_items].
        """
        matrix = data.interactions if self.config.window == "all" else data.recent
        return PopularityScorer(self.name, binarize(matrix).getnnz(axis=0).astype(np.float32))


@dataclass(frozen=True)
class ItemKNNConfig:
    """Settings of :class:`ItemKNNRecommender`."""

    neighbours: int = 100
    """Similar items kept per item (the rest of its similarity column is dropped); >= 1."""
    shrink: float = 10.0
    """Added to the norm product in the cosine denominator, damping rare-item similarities; >= 0."""

    def __post_init__(self) -> None:
        check_at_least(self, neighbours=1, shrink=0)


class ItemKNNRecommender:
    """Item-based kNN with shrunk cosine similarity on binarised co-occurrence.

    ``sim(i, j) = c_ij / (sqrt(c_ii) * sqrt(c_jj) + shrink)`` with ``C = X^T X`` and ``X`` the
    binarised train matrix; ``sim(i, i) = 0``. For each target item ``j`` only its
    ``neighbours`` most similar items are kept, and ``score(u, j) = sum_i h_ui * sim(i, j)``.
    """

    name = "itemknn"

    def __init__(self, config: ItemKNNConfig = ItemKNNConfig()) -> None:
        self.config = config

    def fit(self, data: FitInput) -> ItemItemScorer:
        """Compute the pruned item-item similarity matrix, a block of target items at a time.

        Args:
            data: ``interactions`` float32 [n_users, n_items] (binarised here).

        Returns:
            The pruned similarities as an item-item scorer.
        """
        x = binarize(data.interactions)
        xt = x.T.tocsr()
        n_items = x.shape[1]
        norms = np.sqrt(np.diff(xt.indptr).astype(np.float32))
        step = max(1, _BLOCK_ENTRIES // max(n_items, 1))
        rows, cols, vals = [np.empty(0, np.int64)], [np.empty(0, np.int32)], [np.empty(0, np.float32)]
        for start in range(0, n_items, step):
            r, c, v = self._top_neighbours(xt[start : start + step] @ x, start, norms)
            rows.append(r)
            cols.append(c)
            vals.append(v)
        # Rows of `targets` are target items; transposing puts them in columns so score = h @ S.
        targets = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_items, n_items),
            dtype=np.float32,
        )
        similarity = targets.T.tocsr()
        logger.debug("item-kNN: %d similarities kept for %d items", similarity.nnz, n_items)
        return ItemItemScorer(self.name, similarity)

    def _top_neighbours(
        self, co: sp.csr_matrix, start: int, norms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shrunk cosine of a block of co-occurrence rows, pruned to the top neighbours per row.

        Works on the stored co-occurrences only (no dense block, no argpartition over zeros).
        Ties keep the lower item index, so the result is deterministic.

        Args:
            co: float32 [blk, n_items] co-occurrence counts of items ``start .. start + blk``.
            start: index of the block's first item.
            norms: float32 [n_items] sqrt of each item's user count.

        Returns:
            (target item, neighbour item, similarity) triplets, each [m].
        """
        co = co.tocsr()
        co.sort_indices()
        row = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr)) + start
        col = co.indices
        sim = co.data / (norms[row] * norms[col] + np.float32(self.config.shrink))
        off_diag = col != row
        row, col, sim = row[off_diag], col[off_diag], sim[off_diag]
        order = np.lexsort((-sim, row))  # by target, then by descending similarity (stable)
        row, col, sim = row[order], col[order], sim[order]
        counts = np.bincount(row - start, minlength=co.shape[0])
        rank = np.arange(row.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
        keep = rank < self.config.neighbours
        return row[keep], col[keep], sim[keep].astype(np.float32)


@dataclass(frozen=True)
class EASEConfig:
    """Settings of :class:`EASERecommender`."""

    l2: float = 500.0
    """Ridge penalty added to the Gram diagonal; > 0 (it also makes the inverse exist)."""
    max_items: int = 30_000
    """Refuse catalogues larger than this: fitting holds a dense float32 [n_items, n_items]; >= 1."""

    def __post_init__(self) -> None:
        check_above(self, l2=0)
        check_at_least(self, max_items=1)


class EASERecommender:
    """EASE (Steck 2019): a closed-form item-item linear autoencoder with zero diagonal.

    ``G = X^T X + l2 * I``, ``P = G^-1``, ``B = -P / diag(P)`` (column-wise), ``diag(B) = 0``,
    and ``score = h @ B`` with ``X`` and ``h`` binarised.
    """

    name = "ease"

    def __init__(self, config: EASEConfig = EASEConfig()) -> None:
        self.config = config

    def fit(self, data: FitInput) -> ItemItemScorer:
        """Solve for ``B`` in float32, in place (Cholesky, or Woodbury when users < items).

        One dense [n_items, n_items] float32 matrix at peak (plus the small [n_users, n_users]
        Woodbury kernel, solved in float64): a third of a float64 solve and its float32 copy,
        with the same top-k lists (tests/training/test_baselines.py compares them).

        Args:
            data: ``interactions`` float32 [n_users, n_items] (binarised here).

        Raises:
            ValueError: the catalogue has more than ``config.max_items`` items.
        """
        n = data.n_items
        if n > self.config.max_items:
            gib = 4 * n * n / 2**30
            raise ValueError(
                f"EASE on {n} items needs a dense {n} x {n} float32 matrix (about {gib:.1f} GiB at peak), "
                f"above EASEConfig.max_items={self.config.max_items}; raise max_items if the machine has "
                "that memory, or use ItemKNNRecommender on large catalogues"
            )
        p = _ridge_gram_inverse(binarize(data.interactions).astype(np.float32), self.config.l2)
        p /= -np.diag(p).copy()
        p.flat[:: n + 1] = 0.0
        return ItemItemScorer(self.name, np.ascontiguousarray(p, dtype=np.float32))


def _ridge_gram_inverse(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """``(X^T X + l2 * I)^-1`` in the dtype of binary ``x`` [n_users, n_items].

    With fewer users than items (MovieLens-small: 610 x 9.7k) the Woodbury identity
    ``(l2 I + X^T X)^-1 = (I - X^T (l2 I + X X^T)^-1 X) / l2`` needs only a [n_users, n_users]
    solve: seconds instead of the ~n_items^3 flops of a direct inverse.
    """
    n_users, n_items = x.shape
    if n_users < n_items:
        kernel = (x @ x.T).toarray().astype(np.float64)  # small: solved in float64, then back to x's dtype
        kernel.flat[:: n_users + 1] += l2
        solved = scipy.linalg.cho_solve(scipy.linalg.cho_factor(kernel), x.toarray()).astype(x.dtype)
        # csr rows stream contiguous rows of `solved`; the default csc product is ~2x slower here.
        inv = np.asarray(x.T.tocsr() @ solved)
        inv *= -1.0 / l2
        inv.flat[:: n_items + 1] += 1.0 / l2
        return inv
    gram = (x.T @ x).toarray()
    gram.flat[:: n_items + 1] += l2
    return _spd_inverse(gram)


def _spd_inverse(gram: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix via LAPACK potrf/potri; overwrites ``gram``."""
    # gram is symmetric, so its transpose is the same matrix in the Fortran order LAPACK wants;
    # passing it lets overwrite_a work in place instead of copying the whole matrix.
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (gram,))  # spotrf for float32, dpotrf for float64
    chol, info = potrf(gram.T, lower=False, overwrite_a=True)
    if info != 0:
        raise ValueError(f"Gram matrix is not positive definite (LAPACK potrf info={info}); increase EASEConfig.l2")
    inv, info = potri(chol, lower=False, overwrite_c=True)
    if info != 0:
        raise ValueError(f"Gram matrix is singular (LAPACK potri info={info}); increase EASEConfig.l2")
    # potri fills only the upper triangle; mirror it a block of rows at a time to stay memory-flat.
    n = inv.shape[0]
    step = max(1, _BLOCK_ENTRIES // max(n, 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        inv[start:stop, :start] = inv[:start, start:stop].T
        diag_block = inv[start:stop, start:stop]
        inv[start:stop, start:stop] = np.triu(diag_block) + np.triu(diag_block, 1).T
    return inv
