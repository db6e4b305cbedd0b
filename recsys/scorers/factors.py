"""Latent-factor scorers (LightFM, ALS): ``<user_factor, item_factor> + user_bias + item_bias``.

LightFM's item representation (``item_features @ item_embeddings``) is computed once at fit
time, so scoring a block is one matrix product with no LightFM code at all. ``state`` keeps the
raw training arrays a warm-started update continues from (embeddings, adagrad accumulators):
plain arrays the runtime never reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.scorers.base import StoredScorer, check_block, load_arrays, save_arrays
from recsys.scorers.factor_scores import FactorScores, ItemSide

__all__ = ["FactorScorer"]


@dataclass(frozen=True)
class FactorScorer(StoredScorer):
    """Dot products of the block's user factors with every item factor, plus the biases."""

    KIND: ClassVar[str] = "factors"
    name: str
    user_factors: np.ndarray
    """float32 [n_users, d]."""
    item_factors: np.ndarray
    """float32 [n_items, d]."""
    user_bias: np.ndarray | None = None
    """float32 [n_users], or None."""
    item_bias: np.ndarray | None = None
    """float32 [n_items], or None."""
    state: dict[str, np.ndarray] = field(default_factory=dict)
    """Training arrays an update continues from (LightFM's parameters and accumulators); not used to score."""

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items] for users seen in fit (``history``: shape only)."""
        users = check_block(users, history, self.item_factors.shape[0], self.user_factors.shape[0])
        scores = self.user_factors[users] @ self.item_factors.T
        if self.user_bias is not None:
            scores += self.user_bias[users][:, None]
        if self.item_bias is not None:
            scores += self.item_bias[None, :]
        return scores.astype(np.float32, copy=False)

    def block_scores(self, users: np.ndarray, history: sp.csr_matrix) -> FactorScores:
        """The block's scores as the ranked pipeline reads them (:class:`~recsys.scorers.factor_scores.FactorScores`:
        ranked through the screen, read at the candidates, never the dense ``[b, n_items]`` product)."""
        users = check_block(users, history, self.item_factors.shape[0], self.user_factors.shape[0])
        offset = None if self.user_bias is None else self.user_bias[users]
        return FactorScores(self.user_factors[users], self._item_side, offset)

    @cached_property
    def _item_side(self) -> ItemSide:
        """``[v, 1, item_bias]`` against ``[u, user_bias, 1]``, with its moments and screen (built once)."""
        return ItemSide(self.item_factors, self.item_bias, user_offset=self.user_bias is not None)

    def save(self, folder: Path) -> dict[str, Any]:
        arrays = {"user_factors": self.user_factors, "item_factors": self.item_factors}
        arrays |= {k: v for k, v in (("user_bias", self.user_bias), ("item_bias", self.item_bias)) if v is not None}
        arrays |= {f"state.{k}": v for k, v in self.state.items()}
        save_arrays(folder, arrays)
        return {}

    @classmethod
    def load(cls, folder: Path, settings: dict[str, Any]) -> FactorScorer:
        arrays = load_arrays(folder)
        state = {k.removeprefix("state."): v for k, v in arrays.items() if k.startswith("state.")}
        return cls(settings["name"], arrays["user_factors"], arrays["item_factors"], arrays.get("user_bias"),
                   arrays.get("item_bias"), state)
