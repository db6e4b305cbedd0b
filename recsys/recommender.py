"""The one interface every scoring model follows, baselines and the full pipeline alike.

The evaluation protocol (``recsys.evaluation``) fits a model on an interaction matrix and
asks it for scores of a block of users against the whole catalogue; it never loops over
users in Python. Models are estimators in the lightfm/sklearn sense: settings in
``__init__``, ``fit`` returns ``self``, then ``score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

import numpy as np
import polars as pl
import scipy.sparse as sp

__all__ = ["FitInput", "Recommender"]


@dataclass(frozen=True)
class FitInput:
    """Everything a model may learn from, as aligned index spaces (users x items).

    Rows and columns are the evaluation's user and item indices (``EvalData.user_ids`` /
    ``item_ids``); the catalogue includes items with no interaction (cold items).
    """

    interactions: sp.csr_matrix
    """float32 [n_users, n_items]: event weight sums of positive events (clicks, purchases)."""
    recent: sp.csr_matrix
    """float32 [n_users, n_items]: the same, restricted to the last ``recent_days`` before the cut."""
    item_features: sp.csr_matrix | None = None
    """float32 [n_items, n_features]: one-hot category and tags (no identity columns), or None."""
    seed: int = 0
    """Seed for any randomness in fitting or scoring."""
    events: pl.DataFrame | None = None
    """The fit window's rows (all events, impressions included) with ``user_idx``, ``item_idx``,
    ``event``, ``impression_id``, ``timestamp``: for models that need order or impressions."""
    items: pl.DataFrame | None = None
    """The catalogue in item-index order (contract columns): for models that read item text."""

    @property
    def n_users(self) -> int:
        return self.interactions.shape[0]

    @property
    def n_items(self) -> int:
        return self.interactions.shape[1]


@runtime_checkable
class Recommender(Protocol):
    """A model that scores users against the whole catalogue."""

    name: str
    """Short lower-case name used in result tables (``popularity``, ``ease``, ``lightfm``...)."""

    def fit(self, data: FitInput) -> Self:
        """Learn from ``data``; returns self."""
        ...

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Scores of ``users`` for every item, higher is better.

        Args:
            users: int [b] user indices.
            history: float32 [b, n_items] the interactions the model may use for these users
                at scoring time (rows aligned with ``users``): train, or train + valid. The
                caller excludes exactly these items from the ranking afterwards.

        Returns:
            float32 [b, n_items].
        """
        ...
