"""Popularity and random scorers: the same list for everyone, and the floor every model must beat."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.scorers.base import StoredScorer, check_block, load_arrays, save_arrays

__all__ = ["PopularityScorer", "RandomScorer", "splitmix64"]


@dataclass(frozen=True)
class PopularityScorer(StoredScorer):
    """Item score = its count (distinct positive users), the same for every user."""

    KIND: ClassVar[str] = "popularity"
    name: str
    item_counts: np.ndarray
    """float32 [n_items]."""

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items]: the counts, the same row for each user of the block.

        A read-only view (row stride 0), not a copy: at 100k items a block's copy is 400 MB, and
        :func:`recsys.topk.top_k` ranks such a matrix once for the whole block.
        """
        users = check_block(users, history, self.item_counts.shape[0])
        return np.broadcast_to(self.item_counts.astype(np.float32, copy=False), (users.shape[0], len(self.item_counts)))

    def save(self, folder: Path) -> dict[str, Any]:
        save_arrays(folder, {"item_counts": self.item_counts})
        return {}

    @classmethod
    def load(cls, folder: Path, settings: dict[str, Any]) -> PopularityScorer:
        return cls(settings["name"], load_arrays(folder)["item_counts"])


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wraps modulo 2**64 by design)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class RandomScorer:
    """Uniform random scores in ``[0, 1)``, a hash of ``(seed, user, item)``.

    A score depends only on the seed and the (user, item) pair, so the same user gets the same
    scores in any block composition and in every call.
    """

    n_items: int
    seed: int = 0
    name: str = "random"

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items] in ``[0, 1)``."""
        users = check_block(users, history, self.n_items)
        seed_hash = splitmix64(np.array([self.seed % 2**64], dtype=np.uint64))[0]
        user_keys = splitmix64(seed_hash ^ users.astype(np.uint64))
        keys = splitmix64(user_keys[:, None] ^ np.arange(self.n_items, dtype=np.uint64)[None, :])
        # The top 24 bits fill a float32 mantissa exactly, so the result is uniform on [0, 1).
        return (keys >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
