"""ALS and LightFM on a literal two-cluster matrix; LightFM's fast path against its predict loop."""

from __future__ import annotations

import implicit.utils
import numpy as np
import pytest
import scipy.sparse as sp
from cluster_data import CLUSTER_OF_ITEM, CLUSTER_OF_USER, TWO_CLUSTERS

from recsys.errors import NotFittedError
from recsys.indexing import FitInput
from recsys.scorers import FactorScorer, Scorer
from training.fit_als import ALSConfig, ALSRecommender
from training.fit_lightfm import LightFMConfig, LightFMRecommender

# One-hot cluster feature per item: [A, B].
CLUSTER_FEATURES = sp.csr_matrix(np.repeat(np.eye(2, dtype=np.float32), 5, axis=0))
DATA = FitInput(interactions=TWO_CLUSTERS, recent=TWO_CLUSTERS, item_features=CLUSTER_FEATURES, seed=3)
USERS = np.arange(12)

# Small enough to be fast, constrained enough not to memorise 12 users (1 thread: reproducible).
ALS_SMALL = ALSConfig(factors=4, regularization=1.0, iterations=15, num_threads=1)
LFM_SMALL = LightFMConfig(no_components=4, epochs=30, num_threads=1)


def share_top_unseen_in_cluster(scores: np.ndarray) -> float:
    masked = np.where(TWO_CLUSTERS.toarray() > 0, -np.inf, scores)
    return float((CLUSTER_OF_ITEM[masked.argmax(axis=1)] == CLUSTER_OF_USER).mean())


MODELS = [lambda: ALSRecommender(ALS_SMALL), lambda: LightFMRecommender(LFM_SMALL)]


@pytest.mark.parametrize("make", MODELS, ids=["als", "lightfm"])
def test_fit_score_shape_dtype_and_protocol(make):
    model = make()
    scorer = model.fit(DATA)
    assert isinstance(scorer, Scorer) and type(scorer) is FactorScorer and scorer.name == model.name
    assert scorer.user_factors.shape == (12, 4) and scorer.item_factors.shape == (10, 4)
    scores = scorer.score(USERS[[2, 9, 4]], TWO_CLUSTERS[[2, 9, 4]])
    assert scores.shape == (3, 10)
    assert scores.dtype == np.float32


@pytest.mark.parametrize("make", MODELS, ids=["als", "lightfm"])
def test_an_unfitted_estimator_cannot_score(make):
    # Only fit() hands out a scorer; the estimators themselves do not score.
    assert not isinstance(make(), Scorer) and not hasattr(make(), "score")


def test_lightfm_scorer_before_fit_raises():
    with pytest.raises(NotFittedError, match=r"LightFMRecommender is not fitted; call fit\(\) first"):
        LightFMRecommender(LFM_SMALL).scorer()


def test_als_scorer_has_no_biases_and_lightfm_carries_its_training_state():
    als = ALSRecommender(ALS_SMALL).fit(DATA)
    assert als.user_bias is None and als.item_bias is None and als.state == {}
    lightfm = LightFMRecommender(LFM_SMALL).fit(DATA)
    assert lightfm.user_bias.shape == (12,) and lightfm.item_bias.shape == (10,)
    # the raw arrays a warm start continues from: 10 identity + 2 cluster feature rows for items
    assert lightfm.state["item_embeddings"].shape == (12, 4) and lightfm.state["user_embeddings"].shape == (12, 4)
    assert {"item_embedding_gradients", "user_bias_momentum"} <= set(lightfm.state)


@pytest.mark.parametrize("make", MODELS, ids=["als", "lightfm"])
def test_same_seed_gives_identical_scores(make):
    first = make().fit(DATA).score(USERS, TWO_CLUSTERS)
    second = make().fit(DATA).score(USERS, TWO_CLUSTERS)
    np.testing.assert_array_equal(first, second)
    other_seed = FitInput(TWO_CLUSTERS, TWO_CLUSTERS, CLUSTER_FEATURES, seed=4)
    assert not np.array_equal(first, make().fit(other_seed).score(USERS, TWO_CLUSTERS))


@pytest.mark.parametrize("make", MODELS, ids=["als", "lightfm"])
def test_top_unseen_item_is_in_the_users_cluster(make):
    assert share_top_unseen_in_cluster(make().fit(DATA).score(USERS, TWO_CLUSTERS)) >= 0.8


@pytest.mark.parametrize("make", MODELS, ids=["als", "lightfm"])
def test_unknown_users_are_rejected(make):
    with pytest.raises(ValueError, match=r"must lie in \[0, 12\)"):
        make().fit(DATA).score(np.array([12]), TWO_CLUSTERS[:1])


@pytest.mark.parametrize(
    ("make_config", "match"),
    [
        (lambda: ALSConfig(factors=0), r"ALSConfig.factors must be >= 1; got 0"),
        (lambda: ALSConfig(regularization=-0.1), r"ALSConfig.regularization must be >= 0"),
        (lambda: ALSConfig(alpha=-1.0), r"ALSConfig.alpha must be >= 0"),
        (lambda: ALSConfig(iterations=0), r"ALSConfig.iterations must be >= 1"),
        (lambda: ALSConfig(num_threads=-1), r"ALSConfig.num_threads must be >= 0"),
        (lambda: LightFMConfig(loss="hinge"), r"loss 'hinge' is invalid; must be one of warp, bpr, logistic, warp-kos"),
        (lambda: LightFMConfig(no_components=0), r"LightFMConfig.no_components must be >= 1"),
        (lambda: LightFMConfig(learning_rate=0.0), r"LightFMConfig.learning_rate must be > 0"),
        (lambda: LightFMConfig(item_alpha=-1.0), r"LightFMConfig.item_alpha must be >= 0"),
        (lambda: LightFMConfig(user_alpha=-1.0), r"LightFMConfig.user_alpha must be >= 0"),
        (lambda: LightFMConfig(epochs=0), r"LightFMConfig.epochs must be >= 1"),
        (lambda: LightFMConfig(num_threads=0), r"LightFMConfig.num_threads must be >= 1"),
    ],
)
def test_config_errors_name_the_field(make_config, match):
    with pytest.raises(ValueError, match=match):
        make_config()


def test_als_fit_emits_no_blas_warning(recwarn, monkeypatch):
    # implicit checks the BLAS thread count once per process; re-arm the check for this test.
    monkeypatch.setattr(implicit.utils, "_checked_blas_config", False)
    ALSRecommender(ALS_SMALL).fit(DATA)
    assert not [w for w in recwarn if "threads" in str(w.message)]


# -- LightFM specifics ---------------------------------------------------------------------------


@pytest.mark.parametrize("use_item_features", [True, False])
def test_lightfm_block_scores_equal_the_predict_loop(use_item_features):
    model = LightFMRecommender(LightFMConfig(no_components=4, epochs=5, use_item_features=use_item_features))
    fast = model.fit(DATA).score(USERS, TWO_CLUSTERS)
    slow = model.predict_loop(USERS)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-fast, axis=1), np.argsort(-slow, axis=1))


def test_lightfm_predict_loop_before_fit_raises():
    with pytest.raises(NotFittedError, match=r"LightFMRecommender is not fitted; call fit\(\) first"):
        LightFMRecommender().predict_loop(USERS)


def test_lightfm_item_features_change_the_scores():
    with_features = LightFMRecommender(LFM_SMALL)
    without = LightFMRecommender(LightFMConfig(no_components=4, epochs=30, use_item_features=False))
    scores_with, scores_without = (m.fit(DATA).score(USERS, TWO_CLUSTERS) for m in (with_features, without))
    # identity + 2 cluster columns, each row summing to 1
    assert with_features.item_features_.shape == (10, 12)
    np.testing.assert_allclose(with_features.item_features_.sum(axis=1), 1.0)
    assert without.item_features_ is None
    assert not np.allclose(scores_with, scores_without)


def test_lightfm_cold_item_ranks_high_for_its_feature_cluster():
    # Item 10 has no interactions, only the cluster-A feature.
    interactions = sp.hstack([TWO_CLUSTERS, sp.csr_matrix((12, 1), dtype=np.float32)], format="csr")
    features = sp.vstack([CLUSTER_FEATURES, sp.csr_matrix([[1.0, 0.0]], dtype=np.float32)], format="csr")
    model = LightFMRecommender(LFM_SMALL).fit(FitInput(interactions, interactions, features, seed=3))
    scores = model.score(USERS, interactions)
    items_above_cold = (scores > scores[:, [10]]).sum(axis=1)
    cluster_a = CLUSTER_OF_USER == 0
    # For cluster-A users at most the 5 cluster-A items rank above it, i.e. it beats every B item.
    assert (items_above_cold[cluster_a] <= 5).all()
    assert items_above_cold[cluster_a].mean() < items_above_cold[~cluster_a].mean()


def test_lightfm_partial_training_equals_one_fit():
    config = LightFMConfig(no_components=4, epochs=5)
    full = LightFMRecommender(config).fit(DATA).score(USERS, TWO_CLUSTERS)
    stepwise = LightFMRecommender(config).partial_fit(DATA, epochs=2).partial_fit(DATA, epochs=3)
    assert stepwise.epochs_trained_ == 5
    np.testing.assert_array_equal(stepwise.scorer().score(USERS, TWO_CLUSTERS), full)


def test_lightfm_scorer_is_a_snapshot_later_training_does_not_move():
    model = LightFMRecommender(LightFMConfig(no_components=4, epochs=5)).partial_fit(DATA, epochs=2)
    snapshot = model.scorer()
    before = snapshot.score(USERS, TWO_CLUSTERS).copy()
    state_before = {k: v.copy() for k, v in snapshot.state.items()}
    model.partial_fit(DATA, epochs=3)
    np.testing.assert_array_equal(snapshot.score(USERS, TWO_CLUSTERS), before)
    assert all(np.array_equal(snapshot.state[k], v) for k, v in state_before.items())
    assert not np.array_equal(model.scorer().score(USERS, TWO_CLUSTERS), before)


def test_lightfm_fit_epochs_calls_back_at_each_checkpoint():
    config = LightFMConfig(no_components=4, epochs=5)
    seen: dict[int, np.ndarray] = {}
    model = LightFMRecommender(config)
    returned = model.fit_epochs(DATA, [2, 5], lambda n, m: seen.setdefault(n, m.score(USERS, TWO_CLUSTERS)))
    assert returned is model and list(seen) == [2, 5] and model.epochs_trained_ == 5
    two_epochs = LightFMRecommender(LightFMConfig(no_components=4, epochs=2)).fit(DATA)
    np.testing.assert_array_equal(seen[2], two_epochs.score(USERS, TWO_CLUSTERS))
    np.testing.assert_array_equal(seen[5], LightFMRecommender(config).fit(DATA).score(USERS, TWO_CLUSTERS))


@pytest.mark.parametrize("checkpoints", [[], [0, 2], [3, 3], [4, 2]])
def test_lightfm_fit_epochs_rejects_bad_checkpoints(checkpoints):
    with pytest.raises(ValueError, match=r"strictly increasing sequence of counts >= 1"):
        LightFMRecommender(LFM_SMALL).fit_epochs(DATA, checkpoints, lambda n, m: None)


def test_lightfm_partial_fit_rejects_a_changed_feature_layout():
    model = LightFMRecommender(LFM_SMALL).partial_fit(DATA, epochs=1)
    no_features = FitInput(TWO_CLUSTERS, TWO_CLUSTERS, None, seed=3)
    with pytest.raises(ValueError, match=r"pass the same FitInput to every partial_fit call"):
        model.partial_fit(no_features, epochs=1)


def test_lightfm_event_weights_go_in_as_sample_weights():
    """``use_weights``: LightFM sees the event-weight sums (repeat and purchase events count more)."""
    from dataclasses import replace

    weighted = LightFMRecommender(replace(LFM_SMALL, use_weights=True))
    weights = weighted._sample_weight(DATA)
    binary = sp.csr_matrix(TWO_CLUSTERS, copy=True)  # a copy: the shared matrix must keep its weights
    binary.data[:] = 1.0
    np.testing.assert_array_equal(weights.row, binary.tocoo().row)
    np.testing.assert_array_equal(weights.col, binary.tocoo().col)
    assert sorted(set(weights.data.tolist())) == [1.0, 2.0, 3.0]
    scores_weighted = weighted.fit(DATA).score(USERS, TWO_CLUSTERS)
    assert not np.allclose(scores_weighted, LightFMRecommender(LFM_SMALL).fit(DATA).score(USERS, TWO_CLUSTERS))
    ones = FitInput(interactions=binary, recent=binary, item_features=CLUSTER_FEATURES, seed=3)
    np.testing.assert_allclose(LightFMRecommender(replace(LFM_SMALL, use_weights=True)).fit(ones).score(USERS, binary),
                               LightFMRecommender(LFM_SMALL).fit(ones).score(USERS, binary), rtol=1e-5)


def test_lightfm_warm_start_continues_from_the_parents_scorer():
    config = LightFMConfig(no_components=4, epochs=5, use_item_features=False)
    parent = LightFMRecommender(config).fit(DATA)
    same = LightFMRecommender(config).warm_start(parent, DATA, np.arange(12), np.arange(10))
    np.testing.assert_array_equal(same.scorer().score(USERS, TWO_CLUSTERS), parent.score(USERS, TWO_CLUSTERS))
    # user 0 is new (-1): it gets a fresh row; the others and every item carry over
    grown = LightFMRecommender(config).warm_start(parent, DATA, np.r_[-1, np.arange(1, 12)], np.arange(10))
    moved = grown.scorer()
    np.testing.assert_array_equal(moved.user_factors[1:], parent.user_factors[1:])
    np.testing.assert_array_equal(moved.item_factors, parent.item_factors)
    assert not np.array_equal(moved.user_factors[0], parent.user_factors[0])
    with pytest.raises(ValueError, match=r"the previous 'als' model carries no LightFM training state"):
        LightFMRecommender(config).warm_start(ALSRecommender(ALS_SMALL).fit(DATA), DATA, np.arange(12), np.arange(10))
