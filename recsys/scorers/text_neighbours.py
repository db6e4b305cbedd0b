"""The text tower's neighbour term: how much of a user's history an item's text resembles.

An item nobody has chosen yet has no co-occurrence, so item-item collaborative filtering cannot
place it; but its text does have neighbours among the items people did choose. This term stands in
for that co-occurrence: each item keeps its ``k`` nearest chosen items in the tower's own space
(cosine of the fine-tuned item vectors, negatives cut to 0, never itself), and a user's term is the
mean, over their whole history, of those cosines (an item outside the ``k`` counts 0). So an item
scores by how many of the things this user chose sit close to it, not only by how close it is to
the user's one pooled vector: a user with two tastes is not averaged into neither, and an item near
many widely chosen items gathers more of every user's history (the popularity co-occurrence would
have shown).

Every item has the term, new or not, so a new item's score is on the same scale as a known item's
and it competes with them on merit. A first version gave the term to the unseen items alone: ranked
among themselves they gained, but in the whole catalogue the term became a bonus for being new,
and on ML-1M the tower's NDCG@10 on the ranker's label window fell from 0.086 to 0.015.

The weight is chosen on items the tower never trained on (``training.text_item_terms``) from a grid
that starts at 0. Stored as arrays (the neighbour rows in CSR form, the items that may be
neighbours and the weight), so serving needs nothing from training; items added later
(``with_items``) find their neighbours among the same chosen items.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["NeighbourIndex", "NEIGHBOURS", "ARRAY_PREFIX"]

ARRAY_PREFIX = "neighbours."
"""Prefix of the neighbour term's arrays among the text scorer's stored arrays."""
NEIGHBOURS = 50
"""Chosen items kept per item. On the new-item protocol 50 was best on ML-1M (0.220 Recall@20 against 0.215 for
20 and 0.207 for 200) and level with 200 on MovieLens and MicroLens-50k: few enough that a match must be close,
enough that a long history finds some."""
_CHUNK = 1024
"""Items whose similarities to every chosen item are held at once (1024 x 100k float32: 400 MB)."""


@dataclass(frozen=True)
class NeighbourIndex:
    """Each item's nearest chosen items and their cosines, and the weight of the term in the logits."""

    anchors: np.ndarray
    """int64 [m] ascending: the items that may be neighbours (a positive in the fit window)."""
    rows: sp.csr_matrix
    """float32 [n_items, n_items]: row ``j`` holds item ``j``'s cosines with its nearest anchors (itself never)."""
    weight: float = 0.0
    """Logits per unit of the term (a mean of cosines); 0: off."""

    @classmethod
    def fit(cls, vectors: np.ndarray | torch.Tensor, anchors: np.ndarray, items: np.ndarray | None = None,
            k: int = NEIGHBOURS) -> NeighbourIndex:
        """The ``k`` nearest ``anchors`` of each of ``items`` (None: every item) among ``vectors`` [n_items, d];
        weight 0. The judge gives rows to its held-out items alone, which are never anchors."""
        vectors = _unit(vectors)
        anchors = np.unique(np.asarray(anchors, dtype=np.int64))
        items = np.arange(len(vectors)) if items is None else np.unique(np.asarray(items, dtype=np.int64))
        return cls(anchors, _nearest(vectors, anchors, items, len(vectors), k))

    @property
    def active(self) -> bool:
        return self.weight > 0 and self.rows.nnz > 0

    @property
    def k(self) -> int:
        """Neighbours per row (the most any row holds)."""
        return int(np.diff(self.rows.indptr).max(initial=0))

    def with_weight(self, weight: float) -> NeighbourIndex:
        return replace(self, weight=float(weight))

    def with_items(self, vectors: np.ndarray | torch.Tensor) -> NeighbourIndex:
        """The catalogue extended to ``vectors`` [n_items + added, d] (the added items last): each added item gets
        its nearest anchors; anchors stay as fitted."""
        vectors = _unit(vectors)
        n_old, n_new = self.rows.shape[0], len(vectors)
        if n_new <= n_old:
            return self
        added = _nearest(vectors, self.anchors, np.arange(n_old, n_new), n_new, max(self.k, 1))
        old = sp.csr_matrix((self.rows.data, self.rows.indices, self.rows.indptr), shape=(n_old, n_new))
        return replace(self, rows=sp.vstack([old, added[n_old:]], format="csr"))

    def terms(self, history: sp.csr_matrix) -> sp.csr_matrix:
        """float32 [b, n_items] sparse: each user's mean cosine of their history's items (``history`` > 0) with each
        item's neighbours (0 where none of them is in the history)."""
        seen = sp.csr_matrix(history, dtype=np.float32, copy=True)
        seen.data = (seen.data > 0).astype(np.float32)
        seen.eliminate_zeros()
        counts = np.maximum(np.diff(seen.indptr), 1).astype(np.float32)
        return (sp.diags(1.0 / counts) @ (seen @ self._by_anchor)).tocsr()

    def columns(self, history: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
        """float64 [b, len(items)]: :meth:`terms` at ``items`` (the judge's candidates)."""
        return self.terms(history)[:, np.asarray(items)].toarray().astype(np.float64)

    def add_logits(self, out: np.ndarray, history: sp.csr_matrix, terms: sp.csr_matrix | None = None) -> np.ndarray:
        """``out += weight x`` :meth:`terms` (``terms``: those of ``history``, already computed); ``out`` float32
        [b, n_items], returned."""
        if not self.active:
            return out
        terms = (self.terms(history) if terms is None else terms).tocoo()
        out[terms.row, terms.col] += np.float32(self.weight) * terms.data
        return out

    @cached_property
    def _by_anchor(self) -> sp.csr_matrix:
        """The rows transposed: anchor -> the items it neighbours (what a history multiplies)."""
        return self.rows.T.tocsr()

    # ---- storage ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {f"{ARRAY_PREFIX}anchors": self.anchors, f"{ARRAY_PREFIX}indptr": self.rows.indptr.astype(np.int64),
                f"{ARRAY_PREFIX}indices": self.rows.indices.astype(np.int32),
                f"{ARRAY_PREFIX}data": self.rows.data.astype(np.float32),
                f"{ARRAY_PREFIX}weight": np.array([self.weight], np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> NeighbourIndex | None:
        """The stored term, or None when the arrays hold none (models registered before it existed)."""
        if f"{ARRAY_PREFIX}anchors" not in arrays:
            return None
        indptr = arrays[f"{ARRAY_PREFIX}indptr"]
        n = len(indptr) - 1
        rows = sp.csr_matrix((arrays[f"{ARRAY_PREFIX}data"], arrays[f"{ARRAY_PREFIX}indices"], indptr), shape=(n, n))
        return cls(arrays[f"{ARRAY_PREFIX}anchors"].astype(np.int64), rows, float(arrays[f"{ARRAY_PREFIX}weight"][0]))


def _unit(vectors: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 unit-length rows (a zero row stays zero)."""
    tensor = torch.as_tensor(np.asarray(vectors, dtype=np.float32) if not torch.is_tensor(vectors) else vectors)
    return torch.nn.functional.normalize(tensor.float(), dim=-1)


def _nearest(vectors: torch.Tensor, anchors: np.ndarray, items: np.ndarray, n: int, k: int) -> sp.csr_matrix:
    """float32 [n, n]: each of ``items``' ``k`` most similar ``anchors`` other than itself, with their cosines cut to
    >= 0; other rows empty."""
    keep = min(k, len(anchors))
    if keep == 0 or len(items) == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    pool = vectors[torch.from_numpy(anchors)]
    cols, vals, owners = [], [], []
    with torch.inference_mode():
        for start in range(0, len(items), _CHUNK):
            chunk = items[start:start + _CHUNK]
            sims = vectors[torch.from_numpy(chunk)] @ pool.T  # [c, m]
            at = np.minimum(np.searchsorted(anchors, chunk), len(anchors) - 1)
            own = np.flatnonzero(anchors[at] == chunk)  # rows whose item is an anchor: never its own neighbour
            sims[torch.from_numpy(own), torch.from_numpy(at[own])] = -torch.inf
            top = torch.topk(sims, keep, dim=1, sorted=False)
            cols.append(anchors[top.indices.numpy()].ravel())
            vals.append(top.values.clamp(min=0).numpy().ravel())
            owners.append(np.repeat(chunk, top.indices.shape[1]))
    matrix = sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(owners), np.concatenate(cols))),
                           shape=(n, n))
    matrix.eliminate_zeros()  # cosines cut to 0 (and the own slot, where every anchor was kept)
    return matrix
