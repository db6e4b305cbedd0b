"""Baselines on literal tiny matrices: hand-computed values and slow reference formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from cluster_data import CLUSTER_OF_ITEM, CLUSTER_OF_USER, TWO_CLUSTERS

from recsys.indexing import FitInput
from recsys.scorers import ItemItemScorer, PopularityScorer, RandomScorer, Scorer, binarize, check_block
from training import fit_baselines
from training.fit_baselines import (
    EASEConfig,
    EASERecommender,
    ItemKNNConfig,
    ItemKNNRecommender,
    PopularityConfig,
    PopularityRecommender,
    RandomRecommender,
)

# Recent window: users 0, 1 used item 1 lately, user 6 used item 9 twice.
RECENT = sp.csr_matrix(([1.0, 1.0, 2.0], ([0, 1, 6], [1, 1, 9])), shape=(12, 10), dtype=np.float32)
DATA = FitInput(interactions=TWO_CLUSTERS, recent=RECENT, seed=7)
USERS = np.arange(12)


def top_unseen(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    masked = np.where(seen.toarray() > 0, -np.inf, scores)
    return masked.argmax(axis=1)


ALL_MODELS = [
    RandomRecommender,
    PopularityRecommender,
    ItemKNNRecommender,
    lambda: EASERecommender(EASEConfig(l2=10.0)),
]


# The runtime scorer each estimator of ALL_MODELS fits.
SCORER_OF = [RandomScorer, PopularityScorer, ItemItemScorer, ItemItemScorer]


@pytest.mark.parametrize(("make", "kind"), list(zip(ALL_MODELS, SCORER_OF, strict=True)))
def test_fit_returns_a_scorer_with_the_estimators_name(make, kind):
    model = make()
    scorer = model.fit(DATA)
    assert isinstance(scorer, Scorer) and type(scorer) is kind
    assert scorer.name == model.name
    scores = scorer.score(USERS[:4], TWO_CLUSTERS[:4])
    assert scores.shape == (4, 10)
    assert scores.dtype == np.float32


@pytest.mark.parametrize("make", ALL_MODELS)
def test_an_unfitted_estimator_cannot_score(make):
    # Scoring before fit is ruled out by construction: only fit() hands out a scorer.
    model = make()
    assert not isinstance(model, Scorer) and not hasattr(model, "score")


@pytest.mark.parametrize("make", ALL_MODELS)
def test_fit_is_deterministic(make):
    first = make().fit(DATA).score(USERS, TWO_CLUSTERS)
    second = make().fit(DATA).score(USERS, TWO_CLUSTERS)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("make", ALL_MODELS)
def test_history_must_match_the_block(make):
    model = make().fit(DATA)
    with pytest.raises(ValueError, match=r"expected \(3, 10\)"):
        model.score(USERS[:3], TWO_CLUSTERS[:4])


@pytest.mark.parametrize(
    ("make_config", "match"),
    [
        (lambda: PopularityConfig(window="week"), r"window must be one of 'all', 'recent'; got 'week'"),
        (lambda: ItemKNNConfig(neighbours=0), r"neighbours must be >= 1; got 0"),
        (lambda: ItemKNNConfig(shrink=-1.0), r"shrink must be >= 0"),
        (lambda: EASEConfig(l2=0.0), r"l2 must be > 0"),
        (lambda: EASEConfig(max_items=0), r"max_items must be >= 1"),
    ],
)
def test_config_errors_name_the_field(make_config, match):
    with pytest.raises(ValueError, match=match):
        make_config()


def test_binarize_counts_each_positive_once_and_drops_zeros():
    m = sp.csr_matrix(([2.0, 3.0, 0.0, -1.0], ([0, 0, 1, 1], [0, 0, 1, 2])), shape=(2, 3))
    out = binarize(m)
    np.testing.assert_array_equal(out.toarray(), [[1, 0, 0], [0, 0, 0]])
    assert out.nnz == 1 and out.dtype == np.float32


def test_check_block_rejects_out_of_range_users():
    with pytest.raises(ValueError, match=r"must lie in \[0, 12\)"):
        check_block(np.array([0, 12]), TWO_CLUSTERS[:2], 10, n_users=12)


# -- random --------------------------------------------------------------------------------------


def test_random_scores_depend_only_on_seed_user_and_item():
    model = RandomRecommender().fit(DATA)
    assert (model.n_items, model.seed) == (10, 7)
    block = model.score(np.array([3, 1, 8]), TWO_CLUSTERS[[3, 1, 8]])
    alone = model.score(np.array([1]), TWO_CLUSTERS[[1]])
    np.testing.assert_array_equal(block[1], alone[0])
    assert ((block >= 0) & (block < 1)).all()
    assert len(np.unique(block)) == block.size
    other_seed = RandomRecommender().fit(FitInput(TWO_CLUSTERS, RECENT, seed=8))
    assert not np.array_equal(other_seed.score(np.array([1]), TWO_CLUSTERS[[1]]), alone)


# -- popularity ----------------------------------------------------------------------------------


def test_popularity_counts_distinct_users():
    model = PopularityRecommender().fit(DATA)
    assert model.name == "popularity"
    # Hand count of rows with a positive per column; user 0's weight 3 on item 0 counts once.
    expected = np.array([4, 3, 4, 3, 4, 4, 3, 4, 3, 4], dtype=np.float32)
    np.testing.assert_array_equal(model.item_counts, expected)
    scores = model.score(USERS[:2], TWO_CLUSTERS[:2])
    np.testing.assert_array_equal(scores, np.stack([expected, expected]))


def test_popularity_recent_window_uses_recent():
    model = PopularityRecommender(PopularityConfig(window="recent")).fit(DATA)
    assert model.name == "popularity_recent"
    np.testing.assert_array_equal(model.score(USERS[:1], TWO_CLUSTERS[:1])[0], [0, 2, 0, 0, 0, 0, 0, 0, 0, 1])


# -- item-kNN ------------------------------------------------------------------------------------

# 4 users x 3 items; co-occurrence c01=2, c02=1, c12=2 and item counts 2, 3, 3.
SMALL = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 2, 1], [0, 0, 1]], dtype=np.float32))
SMALL_DATA = FitInput(interactions=SMALL, recent=SMALL)


def test_itemknn_similarity_is_shrunk_cosine():
    model = ItemKNNRecommender(ItemKNNConfig(neighbours=5, shrink=1.0)).fit(SMALL_DATA)
    s01 = 2 / (np.sqrt(2) * np.sqrt(3) + 1)
    s02 = 1 / (np.sqrt(2) * np.sqrt(3) + 1)
    s12 = 2 / (np.sqrt(3) * np.sqrt(3) + 1)
    expected = np.array([[0, s01, s02], [s01, 0, s12], [s02, s12, 0]])
    assert sp.isspmatrix_csr(model.weights) and model.weights.dtype == np.float32
    np.testing.assert_allclose(model.weights.toarray(), expected, rtol=1e-6)
    np.testing.assert_allclose(model.score(np.array([3]), SMALL[3]), [[s02, s12, 0]], rtol=1e-6)


def test_itemknn_keeps_the_top_neighbours_of_each_target_item():
    model = ItemKNNRecommender(ItemKNNConfig(neighbours=1, shrink=1.0)).fit(SMALL_DATA)
    s01 = 2 / (np.sqrt(6) + 1)
    # Column j holds item j's single nearest neighbour: 0 -> 1, 1 -> 0, 2 -> 1.
    expected = np.array([[0, s01, 0], [s01, 0, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(model.weights.toarray(), expected, rtol=1e-6)


def test_itemknn_matches_a_dense_reference_across_blocks(monkeypatch):
    # Blocks of 3 target items, so the block bookkeeping is exercised; integer counts give many ties.
    monkeypatch.setattr(fit_baselines, "_BLOCK_ENTRIES", 3 * 40)
    rng = np.random.default_rng(0)
    x = (rng.random((30, 40)) < 0.2).astype(np.float32)
    train = sp.csr_matrix(x)
    model = ItemKNNRecommender(ItemKNNConfig(neighbours=5, shrink=2.0)).fit(FitInput(train, train))
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    sim = co / (norms[:, None] * norms[None, :] + 2.0)
    np.fill_diagonal(sim, 0.0)
    expected = np.zeros_like(sim)
    for j in range(40):  # slow reference: per target column, the 5 largest, ties to the lower index
        top = np.argsort(-sim[:, j], kind="stable")[:5]
        expected[top, j] = sim[top, j]
    np.testing.assert_allclose(model.weights.toarray(), expected, rtol=1e-6)


def test_itemknn_ranks_cluster_mates_first():
    scores = ItemKNNRecommender().fit(DATA).score(USERS, TWO_CLUSTERS)
    masked = np.where(TWO_CLUSTERS.toarray() > 0, -np.inf, scores)
    # Every user has exactly two unseen cluster-mates; both must outrank all other items.
    top2 = np.argsort(-masked, axis=1, kind="stable")[:, :2]
    assert (CLUSTER_OF_ITEM[top2] == CLUSTER_OF_USER[:, None]).all()


# -- EASE ----------------------------------------------------------------------------------------


# 12 users x 10 items inverts the Gram matrix directly; 6 x 10 takes the Woodbury (users < items) path.
@pytest.mark.parametrize("train", [TWO_CLUSTERS, TWO_CLUSTERS[[0, 1, 2, 6, 7, 8]]], ids=["direct", "woodbury"])
def test_ease_matches_the_closed_form_reference(train):
    l2 = 10.0
    model = EASERecommender(EASEConfig(l2=l2)).fit(FitInput(train, train))
    x = (train.toarray() > 0).astype(np.float64)
    p = np.linalg.inv(x.T @ x + l2 * np.eye(10))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    assert isinstance(model.weights, np.ndarray) and model.weights.dtype == np.float32
    np.testing.assert_allclose(model.weights, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.diag(model.weights), 0.0)
    users = np.arange(train.shape[0])
    np.testing.assert_allclose(model.score(users, train), x @ expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(400, 150), (120, 300)], ids=["direct", "woodbury"])
def test_ease_in_float32_ranks_as_the_float64_closed_form(shape):
    """The float32 in-place solve keeps the float64 reference's lists on a realistic sparse matrix."""
    rng = np.random.default_rng(3)
    popularity = rng.pareto(1.2, shape[1]) + 0.05
    x = (rng.random(shape) < 0.15 * popularity / popularity.max() + 0.01).astype(np.float64)
    train = sp.csr_matrix(x.astype(np.float32))
    model = EASERecommender(EASEConfig(l2=50.0)).fit(FitInput(train, train))
    p = np.linalg.inv(x.T @ x + 50.0 * np.eye(shape[1]))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.weights, expected, rtol=1e-3, atol=1e-5)
    users = np.arange(shape[0])
    got, want = model.score(users, train), x @ expected
    masked = [np.where(x > 0, -np.inf, s) for s in (got, want)]
    top = [np.argsort(-m, axis=1, kind="stable")[:, :10] for m in masked]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*top, strict=True)])
    assert overlap >= 0.99, overlap


def test_ease_top_unseen_item_is_in_the_users_cluster():
    scores = EASERecommender(EASEConfig(l2=10.0)).fit(DATA).score(USERS, TWO_CLUSTERS)
    assert (CLUSTER_OF_ITEM[top_unseen(scores, TWO_CLUSTERS)] == CLUSTER_OF_USER).all()


def test_ease_refuses_catalogues_above_max_items():
    with pytest.raises(ValueError, match=r"EASE on 10 items .* above EASEConfig.max_items=9"):
        EASERecommender(EASEConfig(max_items=9)).fit(DATA)
