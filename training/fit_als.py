"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through the ``implicit`` library, on CPU.

Confidence of an observed interaction is ``1 + alpha * weight`` (the paper's linear scheme);
unobserved pairs have confidence 1 and preference 0. Scores are the dot products of the
fitted user and item factors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import implicit.cpu.als
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.config import check_at_least
from recsys.indexing import FitInput
from recsys.scorers import FactorScorer

__all__ = ["ALSConfig", "ALSRecommender"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ALSConfig:
    """Settings of :class:`ALSRecommender`."""

    factors: int = 64
    """Latent dimension of user and item factors; >= 1."""
    regularization: float = 0.05
    """L2 penalty on the factors; >= 0."""
    alpha: float = 2.0
    """Confidence scaling: an observed weight ``w`` gets confidence ``1 + alpha * w``; >= 0."""
    iterations: int = 15
    """ALS sweeps (users then items); >= 1."""
    num_threads: int = 0
    """Worker threads of implicit's solver; 0 = all cores. Results are bit-reproducible only with 1."""

    def __post_init__(self) -> None:
        # num_threads 0 means all cores.
        check_at_least(self, factors=1, regularization=0, alpha=0, iterations=1, num_threads=0)


class ALSRecommender:
    """Weighted matrix factorisation fitted by alternating least squares (implicit, CPU).

    The fitted scorer uses the user factors learned in ``fit``; the ``history`` passed at scoring
    time is not folded in, so users must be the ones seen in ``fit``.
    """

    name = "als"

    def __init__(self, config: ALSConfig = ALSConfig()) -> None:
        self.config = config

    def fit(self, data: FitInput) -> FactorScorer:
        """Factorise the confidence-weighted user x item matrix.

        Args:
            data: ``interactions`` float32 [n_users, n_items] event weights; ``seed`` seeds
                the factor initialisation.

        Returns:
            The user and item factors (no biases) as a factor scorer.
        """
        confidence = sp.csr_matrix(data.interactions, dtype=np.float32, copy=True)
        confidence.sum_duplicates()
        confidence.eliminate_zeros()
        confidence.data = 1.0 + np.float32(self.config.alpha) * confidence.data
        # implicit parallelises over users itself; a multi-threaded BLAS underneath oversubscribes
        # the cores (implicit warns it can be 10x slower). Limiting BLAS to 1 thread while the
        # model is built and fitted fixes that and, as a consequence, silences the warning.
        with threadpool_limits(limits=1, user_api="blas"):
            model = implicit.cpu.als.AlternatingLeastSquares(
                factors=self.config.factors,
                regularization=self.config.regularization,
                alpha=1.0,  # confidence is already scaled above
                dtype=np.float32,
                iterations=self.config.iterations,
                num_threads=self.config.num_threads,
                random_state=data.seed,
            )
            # implicit >= 0.5 takes user x item
            model.fit(confidence, show_progress=False)
        return FactorScorer(self.name, np.ascontiguousarray(model.user_factors, dtype=np.float32),
                            np.ascontiguousarray(model.item_factors, dtype=np.float32))
