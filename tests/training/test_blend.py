"""Blends: per-user standardised score mixing, and components that fit once per window."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from cluster_data import TWO_CLUSTERS

from recsys.errors import NotFittedError
from recsys.indexing import FitInput
from recsys.scorers import Scorer
from training.blend import BlendRecommender, FitOnce
from training.fit_baselines import EASERecommender, PopularityRecommender

DATA = FitInput(interactions=TWO_CLUSTERS, recent=TWO_CLUSTERS)
OTHER = FitInput(interactions=TWO_CLUSTERS, recent=TWO_CLUSTERS)
USERS = np.arange(12)


class Counting(PopularityRecommender):
    fits = 0

    def fit(self, data):
        Counting.fits += 1
        return super().fit(data)


def test_fit_once_per_window():
    Counting.fits = 0
    shared = FitOnce(Counting, "popularity")
    for weight in (0.1, 0.5, 0.9):
        BlendRecommender(shared, FitOnce(EASERecommender, "ease"), weight).fit(DATA)
    assert Counting.fits == 1
    first = shared.model
    assert isinstance(first, Scorer) and isinstance(shared.estimator, Counting)
    assert shared.fit(OTHER).model is not first
    assert shared.fit(DATA).model is first
    assert Counting.fits == 2  # one per window, never again


def test_blend_is_the_weighted_sum_of_standardised_scores():
    pop, ease = PopularityRecommender().fit(DATA), EASERecommender().fit(DATA)
    blend = BlendRecommender(FitOnce(PopularityRecommender, "p"), FitOnce(EASERecommender, "e"), 0.3).fit(DATA)
    history = sp.csr_matrix(TWO_CLUSTERS)

    def z(x):
        return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)

    expected = 0.3 * z(pop.score(USERS, history).astype(np.float64)) + 0.7 * z(ease.score(USERS, history))
    assert np.allclose(blend.score(USERS, history), expected, atol=1e-5)
    weight_one = BlendRecommender(FitOnce(PopularityRecommender, "p"), FitOnce(EASERecommender, "e"), 1.0).fit(DATA)
    assert np.array_equal(np.argsort(-weight_one.score(USERS, history)[0], kind="stable"),
                          np.argsort(-pop.score(USERS, history)[0], kind="stable"))


def test_blend_errors():
    with pytest.raises(ValueError, match=r"blend weight must be in \[0, 1\]"):
        BlendRecommender(FitOnce(PopularityRecommender, "p"), FitOnce(EASERecommender, "e"), 1.5)
    with pytest.raises(NotFittedError, match="call fit"):
        BlendRecommender(FitOnce(PopularityRecommender, "p"), FitOnce(EASERecommender, "e"), 0.5).score(
            USERS, sp.csr_matrix(TWO_CLUSTERS))


def test_top_n_standardisation_uses_each_users_highest_scores():
    """With ``top``, each model is standardised by the mean and std of the user's top-N scores."""
    pop, ease = PopularityRecommender().fit(DATA), EASERecommender().fit(DATA)
    blend = BlendRecommender(FitOnce(PopularityRecommender, "p"), FitOnce(EASERecommender, "e"), 0.4,
                             top=3).fit(DATA)
    history = sp.csr_matrix(TWO_CLUSTERS)

    def z_top(x, n=3):
        best = np.sort(x, axis=1)[:, ::-1][:, :n]
        std = best.std(1, keepdims=True)
        return (x - best.mean(1, keepdims=True)) / np.where(std > 0, std, 1.0)

    expected = 0.4 * z_top(pop.score(USERS, history).astype(np.float64)) + 0.6 * z_top(
        ease.score(USERS, history).astype(np.float64))
    assert np.allclose(blend.score(USERS, history), expected, atol=1e-5)
    assert not np.allclose(blend.score(USERS, history), BlendRecommender(
        FitOnce(PopularityRecommender, "p"), FitOnce(EASERecommender, "e"), 0.4).fit(DATA).score(USERS, history))
    with pytest.raises(ValueError, match="top"):
        BlendRecommender(pop, ease, 0.5, top=1)
