"""Item-to-item scorers (EASE, item-kNN): ``binarised history @ W`` with an item x item matrix ``W``.

``W`` is dense (EASE's closed form) or sparse (a pruned neighbourhood); either is stored as
arrays and scored the same way. A sparse ``W`` also scores a block lazily (:class:`NeighbourScores`):
the ranked pipeline reads only each user's top items, the moments and the candidates' scores, which
compiled loops give without the dense ``[b, n_items]`` block (``recsys.scorers.neighbour_kernels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.scorers.base import StoredScorer, binarize, check_block, load_arrays, load_csr, save_arrays, save_csr

__all__ = ["ItemItemScorer", "NeighbourScores"]


@dataclass(frozen=True)
class ItemItemScorer(StoredScorer):
    """``score(u, j) = sum_i h_ui * W[i, j]`` over the user's binarised history ``h``."""

    KIND: ClassVar[str] = "item_item"
    name: str
    weights: np.ndarray | sp.csr_matrix
    """float32 [n_items, n_items]: ``[i, j]`` = weight of history item i towards item j."""

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items]."""
        check_block(users, history, self.weights.shape[0])
        if sp.issparse(self.weights):
            return NeighbourScores(binarize(history), self.weights).dense()
        return np.asarray(binarize(history) @ self.weights).astype(np.float32, copy=False)

    def block_scores(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray | NeighbourScores:
        """The block's scores as the ranked pipeline reads them: :class:`NeighbourScores` for a sparse ``W``
        (never made dense), else :meth:`score`."""
        if not sp.issparse(self.weights):
            return self.score(users, history)
        check_block(users, history, self.weights.shape[0])
        return NeighbourScores(binarize(history), self.weights)

    def save(self, folder: Path) -> dict[str, Any]:
        if sp.issparse(self.weights):
            save_arrays(folder, save_csr("weights", self.weights))
            return {"sparse": True}
        save_arrays(folder, {"weights": self.weights})
        return {"sparse": False}

    @classmethod
    def load(cls, folder: Path, settings: dict[str, Any]) -> ItemItemScorer:
        arrays = load_arrays(folder)
        weights = load_csr("weights", arrays) if settings.get("sparse") else np.ascontiguousarray(arrays["weights"])
        return cls(settings["name"], weights)


class NeighbourScores:
    """A block's ``binarised history @ W`` for a sparse ``W``, read without the dense ``[b, n_items]`` scores.

    The candidates ask three things of a model's block: each user's top items (a source), each row's mean
    and spread over the catalogue and the scores at the candidates (the z-score features). Each is one
    compiled pass over the entries the users' histories reach (:mod:`recsys.scorers.neighbour_kernels`);
    the selection's pass gives the moments too. Not for sharing between threads (it keeps the moments).
    """

    def __init__(self, history: sp.csr_matrix, weights: sp.csr_matrix) -> None:
        self.history = _canonical(history)
        self.weights = _canonical(weights)
        self._moments: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.history.shape[0], self.weights.shape[1]

    def dense(self, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 [b, n_items]: every score (``rows``: only those block rows)."""
        from recsys.scorers.neighbour_kernels import accumulate_dense

        history = self.history if rows is None else _canonical(self.history[np.asarray(rows)])
        out = np.zeros((history.shape[0], self.weights.shape[1]), np.float32)
        accumulate_dense(history.indptr, history.indices, self.weights.indptr, self.weights.indices,
                         self.weights.data, out)
        return out

    def top_k(self, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
        """int64 [b, k]: ``recsys.topk.top_k`` of the dense scores (the same lists, ties to the lower item)."""
        from recsys.scorers.neighbour_kernels import top_with_moments
        from recsys.topk import _checked  # top_k's own check of the exclusion, and its message

        ex = sp.csr_matrix(self.shape, dtype=np.float32) if exclude is None else _checked(exclude, self.shape)
        b = self.shape[0]
        top = np.empty((b, k), np.int64)
        mean, std = np.empty(b), np.empty(b)
        top_with_moments(self.history.indptr, self.history.indices, self.weights.indptr, self.weights.indices,
                         self.weights.data, self.shape[1], k, ex.indptr, ex.indices, ex.data, top, mean, std)
        self._moments = mean, std
        return top

    @property
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 mean and standard deviation of each row's scores over the whole catalogue."""
        if self._moments is None:
            self.top_k(0)
        return self._moments

    def at(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """float32 scores of the pairs ``(rows[m], items[m])``."""
        from recsys.scorers.neighbour_kernels import values_at

        rows, items = np.asarray(rows, dtype=np.int64), np.asarray(items, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        pointers = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=self.shape[0]))])
        found = np.empty(len(rows), np.float32)
        values_at(self.history.indptr, self.history.indices, self.weights.indptr, self.weights.indices,
                  self.weights.data, self.shape[1], pointers, items[order], found)
        out = np.empty_like(found)
        out[order] = found
        return out


def _canonical(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """``matrix`` as float32 csr, without a copy when it already is one (the stored ``W`` is read, not copied)."""
    return matrix if isinstance(matrix, sp.csr_matrix) and matrix.dtype == np.float32 else \
        sp.csr_matrix(matrix, dtype=np.float32)
