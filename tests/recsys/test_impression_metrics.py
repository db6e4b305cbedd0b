"""MIND impression metrics: hand-computed impressions, sklearn AUC and a port of MIND's scoring script."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recsys.evaluation.impressions import impression_metrics

L3, L5 = 1 / math.log2(3), 1 / math.log2(5)  # discounts of ranks 2 and 4


# Port of the MIND competition's evaluate.py, with a stable sort so that ties are deterministic.
def _mind_mrr(y_true: np.ndarray, y_score: np.ndarray) -> float:
    order = np.argsort(y_score, kind="stable")[::-1]
    y_true = np.take(y_true, order)
    rr_score = y_true / (np.arange(len(y_true)) + 1)
    return np.sum(rr_score) / np.sum(y_true)


def _mind_dcg(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    order = np.argsort(y_score, kind="stable")[::-1]
    y_true = np.take(y_true, order[:k])
    gains = 2**y_true - 1
    discounts = np.log2(np.arange(len(y_true)) + 2)
    return np.sum(gains / discounts)


def _mind_ndcg(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    return _mind_dcg(y_true, y_score, k) / _mind_dcg(y_true, y_true, k)


def _by_group(got: dict[str, np.ndarray]) -> dict[object, dict[str, float]]:
    return {g: {m: got[m][i] for m in got if m != "group"} for i, g in enumerate(got["group"].tolist())}


def test_hand_computed_impressions():
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.5, 0.5, 0.1, 0.3, 0.6, 0.4, 0.2])
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0])
    groups = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "c", "d", "d"])
    got = _by_group(impression_metrics(scores, labels, groups, ks=(2, 5)))
    # a: by score 0.9 (0), 0.8 (1), 0.7 (0), 0.2 (1) -> clicks at ranks 2 and 4
    #    mrr = (1/2 + 1/4) / 2 = 0.375
    #    dcg@5 = 1/log2(3) + 1/log2(5) = 1.0616064; ideal = 1 + 1/log2(3) = 1.6309298 -> 0.6509209
    #    dcg@2 = 1/log2(3); ideal@2 = 1.6309298 -> 0.3868528
    #    auc: click 0.8 beats 0.7 only, click 0.2 beats none -> 1 / (2 * 2) = 0.25
    assert got["a"]["mrr"] == pytest.approx(0.375)
    assert got["a"]["ndcg@5"] == pytest.approx((L3 + L5) / (1 + L3))
    assert got["a"]["ndcg@2"] == pytest.approx(L3 / (1 + L3))
    assert got["a"]["auc"] == pytest.approx(0.25)
    # b: the click ties with a non-click at ranks 1-2 -> expected over both orders
    #    mrr = (1/1 + 1/2) / 2 = 0.75; ndcg@5 = (1 + 1/log2(3)) / 2 / 1 = 0.8154649
    #    auc: tie with 0.5 counts 1/2, beats 0.1 -> (0.5 + 1) / 2 = 0.75
    assert got["b"]["mrr"] == pytest.approx(0.75)
    assert got["b"]["ndcg@5"] == pytest.approx((1 + L3) / 2)
    assert got["b"]["ndcg@2"] == pytest.approx((1 + L3) / 2)
    assert got["b"]["auc"] == pytest.approx(0.75)
    # c: only clicks -> no AUC; ranks 1 and 2 -> mrr (1 + 1/2) / 2 = 0.75, ndcg = 1
    assert np.isnan(got["c"]["auc"])
    assert got["c"]["mrr"] == pytest.approx(0.75)
    assert got["c"]["ndcg@5"] == pytest.approx(1.0)
    # d: no click -> everything NaN
    assert all(np.isnan(v) for v in got["d"].values())


def test_groups_need_not_be_contiguous_and_keys_come_back_sorted():
    scores = np.array([0.1, 0.9, 0.8, 0.3, 0.2])
    labels = np.array([1, 0, 1, 0, 0])
    groups = np.array([7, 3, 3, 7, 7])
    got = impression_metrics(scores, labels, groups)
    np.testing.assert_array_equal(got["group"], [3, 7])
    # group 3: click at rank 2 of 2; group 7: click at rank 3 of 3
    np.testing.assert_allclose(got["mrr"], [0.5, 1 / 3])
    np.testing.assert_allclose(got["auc"], [0.0, 0.0])
    assert set(got) == {"group", "auc", "mrr", "ndcg@5", "ndcg@10"}


def _random_impressions(rng: np.random.Generator, n: int, max_size: int, decimals: int | None):
    sizes = rng.integers(1, max_size + 1, n)
    groups = np.repeat(np.arange(n) * 10 + 5, sizes)
    scores = rng.random(sizes.sum())
    if decimals is not None:
        scores = np.round(scores, decimals)
    labels = (rng.random(sizes.sum()) < 0.3).astype(int)
    perm = rng.permutation(sizes.sum())  # rows of one impression interleaved with others
    return scores[perm], labels[perm], groups[perm]


def test_random_impressions_match_sklearn_and_mind_script():
    rng = np.random.default_rng(0)
    scores, labels, groups = _random_impressions(rng, 300, 30, decimals=None)
    got = _by_group(impression_metrics(scores, labels, groups))
    n_checked = 0
    for g, m in got.items():
        y, s = labels[groups == g], scores[groups == g]
        if y.sum() == 0:
            assert all(np.isnan(v) for v in m.values())
            continue
        n_checked += 1
        assert m["mrr"] == pytest.approx(_mind_mrr(y, s), rel=1e-12)
        assert m["ndcg@5"] == pytest.approx(_mind_ndcg(y, s, 5), rel=1e-12)
        assert m["ndcg@10"] == pytest.approx(_mind_ndcg(y, s, 10), rel=1e-12)
        if y.min() == 1:
            assert np.isnan(m["auc"])
        else:
            assert m["auc"] == pytest.approx(roc_auc_score(y, s), rel=1e-12)
    assert n_checked > 200


def test_ties_are_the_expectation_over_orders_of_the_tied_items():
    rng = np.random.default_rng(1)
    scores, labels, groups = _random_impressions(rng, 60, 6, decimals=1)
    scores = np.round(scores * 3) / 3  # values in {0, 1/3, 2/3, 1}: many ties
    got = _by_group(impression_metrics(scores, labels, groups, ks=(2, 5)))
    for g, m in got.items():
        y, s = labels[groups == g], scores[groups == g]
        if y.sum() == 0:
            continue
        # Every permutation of the rows, then a stable sort: each order of the tied items equally often.
        perms = [np.array(p) for p in itertools.permutations(range(y.size))]
        assert m["mrr"] == pytest.approx(np.mean([_mind_mrr(y[p], s[p]) for p in perms]), rel=1e-12)
        for k in (2, 5):
            assert m[f"ndcg@{k}"] == pytest.approx(np.mean([_mind_ndcg(y[p], s[p], k) for p in perms]), rel=1e-12)
        if 0 < y.mean() < 1:
            assert m["auc"] == pytest.approx(roc_auc_score(y, s), rel=1e-12)


def test_constant_scores_give_chance_level():
    labels = np.array([1, 0, 0, 0, 1, 0])
    got = impression_metrics(np.zeros(6), labels, np.zeros(6, dtype=int))
    assert got["auc"][0] == pytest.approx(0.5)
    # each click's expected reciprocal rank = mean(1/1 .. 1/6) = 2.45 / 6
    assert got["mrr"][0] == pytest.approx(sum(1 / r for r in range(1, 7)) / 6)


def test_empty_input_gives_empty_arrays():
    got = impression_metrics(np.zeros(0), np.zeros(0), np.zeros(0, dtype=int))
    assert all(v.size == 0 for v in got.values())


@pytest.mark.parametrize(("args", "match"), [
    ((np.zeros(3), np.zeros(2), np.zeros(3)), "equal length"),
    ((np.array([0.1, np.nan]), np.zeros(2), np.zeros(2)), "scores must be finite"),
    ((np.zeros(2), np.array([0, 2]), np.zeros(2)), "labels must be 0"),
])
def test_argument_errors(args, match):
    with pytest.raises(ValueError, match=match):
        impression_metrics(*args)


def test_bad_cut_off():
    with pytest.raises(ValueError, match="cut-off in ks must be an integer >= 1"):
        impression_metrics(np.zeros(2), np.zeros(2), np.zeros(2), ks=(0,))
