"""Item-to-item scorers (EASE, item-kNN): ``binarised history @ W`` with an item x item matrix ``W``.

``W`` is dense (EASE's closed form) or sparse (a pruned neighbourhood); either is stored as
arrays and scored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.scorers.base import StoredScorer, binarize, check_block, load_arrays, load_csr, save_arrays, save_csr

__all__ = ["ItemItemScorer"]


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
        out = binarize(history) @ self.weights
        return (out.toarray() if sp.issparse(out) else np.asarray(out)).astype(np.float32, copy=False)

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
