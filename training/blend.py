"""Blending a text model with a collaborative one, with the blend weight chosen on the valid window.

``score = w * z(text) + (1 - w) * z(cf)``, where ``z`` standardises each user's scores over the
catalogue so the two scales are comparable. Components are wrapped in :class:`FitOnce`, so a
grid of weights refits nothing: each component fits once per window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import numpy as np
import scipy.sparse as sp

from recsys.errors import NotFittedError
from recsys.recommender import FitInput, Recommender

__all__ = ["FitOnce", "BlendRecommender"]


class FitOnce:
    """One fitted model per window: ``fit`` on a ``FitInput`` already seen is free.

    Shared between a model's own spec and a blend grid, the expensive text tower then fits
    once on the valid window and once on the test window, however many weights are tried.
    """

    def __init__(self, factory: Callable[[], Recommender], name: str) -> None:
        self.factory, self.name = factory, name
        self._fitted: list[tuple[FitInput, Recommender]] = []
        self.model: Recommender | None = None

    def fit(self, data: FitInput) -> Self:
        found = next((m for d, m in self._fitted if d is data), None)
        if found is None:
            found = self.factory().fit(data)
            self._fitted.append((data, found))
        self.model = found
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        if self.model is None:
            raise NotFittedError(f"{self.name} is not fitted; call fit() first")
        return self.model.score(users, history)


def _standardise(scores: np.ndarray) -> np.ndarray:
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


class BlendRecommender:
    """Weighted sum of two models' per-user standardised scores."""

    def __init__(self, text: Recommender, cf: Recommender, weight: float, name: str | None = None) -> None:
        if not 0 <= weight <= 1:
            raise ValueError(f"blend weight must be in [0, 1], got {weight}")
        self.text, self.cf, self.weight = text, cf, weight
        self.name = name or f"{text.name}_{cf.name}_blend"
        self._fitted = False

    def fit(self, data: FitInput) -> Self:
        self.text.fit(data)
        self.cf.fit(data)
        self._fitted = True
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items]: ``w * z(text) + (1 - w) * z(cf)``."""
        if not self._fitted:
            raise NotFittedError("BlendRecommender is not fitted; call fit() first")
        text = _standardise(self.text.score(users, history).astype(np.float64))
        cf = _standardise(self.cf.score(users, history).astype(np.float64))
        return (self.weight * text + (1 - self.weight) * cf).astype(np.float32)
