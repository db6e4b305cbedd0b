"""Candidate generation: union of top-N per source, flags, per-user z-scores, history excluded, new items."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys import candidates
from recsys.candidates import (
    CandidateConfig,
    FactorScores,
    candidate_recall,
    generate_candidates,
    standardise_rows,
    standardised_at,
)
from recsys.scorers.factor_scores import ItemSide

# two users x six items; user 0 has seen item 0
CF = np.array([[9, 8, 7, 1, 0, 2], [0, 1, 2, 3, 4, 5]], dtype=np.float32)
TEXT = np.array([[0, 1, 9, 8, 0, 7], [5, 4, 3, 2, 1, 0]], dtype=np.float32)
HISTORY = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32))
USERS = np.array([7, 3])


def _candidates(**config) -> pl.DataFrame:
    return generate_candidates({"cf": CF, "text": TEXT}, USERS, HISTORY, sources=("cf", "text"),
                               config=CandidateConfig(**config), cold=np.array([0, 0, 0, 0, 1, 1], bool))


def test_union_of_top_n_with_source_flags_and_history_excluded():
    got = _candidates(n_per_source=2, n_cold=0)
    user7 = got.filter(pl.col("user_idx") == 7)
    # cf top-2 without item 0: items 1, 2; text top-2: items 2, 3
    assert user7["item_idx"].to_list() == [1, 2, 3]
    assert user7["src_cf"].to_list() == [1, 1, 0]
    assert user7["src_text"].to_list() == [0, 1, 1]
    user3 = got.filter(pl.col("user_idx") == 3)
    assert user3["item_idx"].to_list() == [0, 1, 4, 5]
    assert "src_cold" not in got.columns


def test_every_candidate_carries_every_models_per_user_z_score():
    got = _candidates(n_per_source=2, n_cold=0)
    row = got.filter((pl.col("user_idx") == 3) & (pl.col("item_idx") == 5))
    z = (CF[1] - CF[1].mean()) / CF[1].std()
    assert row["score_cf"].item() == pytest.approx(z[5], rel=1e-5)
    assert row["score_text"].item() == pytest.approx(((TEXT[1] - TEXT[1].mean()) / TEXT[1].std())[5], rel=1e-5)


def test_lazy_scores_stand_in_for_their_dense_block_without_a_pass_over_it(monkeypatch):
    """FactorScores give the same candidates and z-scores as their dense block, with moments read from the items
    (no pass over a row of scores for them)."""
    rng = np.random.default_rng(4)
    user, items = rng.normal(size=(2, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
    offset = rng.normal(size=6).astype(np.float32)
    lazy = FactorScores(user, ItemSide(items, offset))
    dense = user @ items.T + offset
    cold = np.array([0, 0, 0, 0, 1, 1], bool)
    plain = generate_candidates({"cf": dense, "text": TEXT}, USERS, HISTORY, sources=("cf", "text"),
                                config=CandidateConfig(n_per_source=2, n_cold=1), cold=cold)
    read: list[int] = []
    full = candidates.row_moments
    monkeypatch.setattr(candidates, "row_moments", lambda scores: read.append(len(scores)) or full(scores))
    got = generate_candidates({"cf": lazy, "text": TEXT}, USERS, HISTORY, sources=("cf", "text"),
                              config=CandidateConfig(n_per_source=2, n_cold=1), cold=cold)
    assert read == [2]  # the text scores only
    np.testing.assert_allclose(got["score_cf"].to_numpy(), plain["score_cf"].to_numpy(), rtol=1e-5, atol=1e-5)
    assert got.drop("score_cf").equals(plain.drop("score_cf"))


def test_new_items_come_in_through_the_cold_source():
    got = _candidates(n_per_source=1, n_cold=1, cold_by="text")
    user7 = got.filter(pl.col("user_idx") == 7)
    # best new item by text for user 7 is item 5 (7 > 0)
    assert user7.filter(pl.col("src_cold") == 1)["item_idx"].to_list() == [5]
    assert got.filter(pl.col("src_cold") == 1).height == 2


def test_without_new_items_no_source_proposes_one():
    """The no-new-items ablation: user 3's CF top-2 (items 5, 4) are both new, so its next best warm items come in
    instead, and no cold source is added."""
    got = _candidates(n_per_source=2, n_cold=1, new_items=False)
    assert got.filter(pl.col("item_idx") >= 4).height == 0 and "src_cold" not in got.columns
    user3 = got.filter(pl.col("user_idx") == 3)
    assert user3["item_idx"].to_list() == [0, 1, 2, 3]  # text: 0, 1; cf: 3, 2
    with_new = _candidates(n_per_source=2, n_cold=1)
    assert with_new.filter((pl.col("user_idx") == 3) & (pl.col("src_cf") == 1))["item_idx"].to_list() == [4, 5]


def test_a_catalogue_without_new_items_still_has_the_cold_flag():
    """A pipeline shipped on every event has no new item left, yet its ranker learned the flag in its label
    window: the column is there (all zero), or serving without new items fails on a missing feature."""
    got = generate_candidates({"cf": CF, "text": TEXT}, USERS, HISTORY, sources=("cf", "text"),
                              config=CandidateConfig(n_per_source=2, n_cold=1), cold=np.zeros(6, bool))
    assert got["src_cold"].to_list() == [0] * got.height and got.height == 7


def test_unknown_source_is_an_error_naming_it():
    with pytest.raises(ValueError, match="lightfm"):
        generate_candidates({"cf": CF}, USERS, HISTORY, sources=("lightfm",))


def test_candidate_recall_counts_pairs_and_sources():
    got = _candidates(n_per_source=2, n_cold=0)
    truth = pl.DataFrame({"user_idx": [7, 7, 3], "item_idx": [3, 4, 5]})
    recall = candidate_recall(got, truth)
    assert recall["recall"] == pytest.approx(2 / 3)
    assert recall["recall_text"] == pytest.approx(1 / 3)
    assert recall["recall_cf"] == pytest.approx(1 / 3)
    assert recall["per_user"] == pytest.approx((0.5 + 1.0) / 2)
    assert recall["candidates_per_user"] == pytest.approx(7 / 2)


def test_standardised_at_equals_the_whole_blocks_z_scores_at_those_pairs():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 50)).astype(np.float32)
    scores[3] = 2.0  # a flat row: no spread, z = 0
    rows, items = rng.integers(0, 7, 40), rng.integers(0, 50, 40)
    want = standardise_rows(scores)[rows, items].astype(np.float32)
    np.testing.assert_allclose(standardised_at(scores, rows, items), want, rtol=1e-6, atol=1e-6)
    assert (standardised_at(scores, np.array([3]), np.array([9])) == 0).all()


def test_factor_scores_give_the_dense_products_z_scores_without_forming_them():
    rng = np.random.default_rng(1)
    user, items = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    factored = FactorScores(user, ItemSide(items))
    rows, cols = rng.integers(0, 5, 25), rng.integers(0, 30, 25)
    np.testing.assert_allclose(standardised_at(factored, rows, cols), standardise_rows(user @ items.T)[rows, cols],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(factored.dense(), user @ items.T, rtol=1e-6)
    cos = FactorScores(user[:2], ItemSide(items[:6]))
    got = generate_candidates({"cf": CF, "cos": cos}, USERS, HISTORY, sources=("cf",),
                              config=CandidateConfig(n_per_source=3, n_cold=0))
    want = standardise_rows(user[:2] @ items[:6].T)[[0, 0, 0, 1, 1, 1], got["item_idx"].to_numpy()]
    np.testing.assert_allclose(got["score_cos"].to_numpy(), want, rtol=1e-4, atol=1e-5)


def test_new_item_candidates_are_the_best_new_items_with_ties_to_the_lower_index():
    cold = np.array([0, 1, 1, 0, 1, 1], bool)
    text = np.array([[9, 3, 3, 9, 3, 1], [0, 2, 5, 9, 5, 5]], dtype=np.float32)
    got = generate_candidates({"text": text}, USERS, sp.csr_matrix((2, 6)), sources=("text",), cold=cold,
                              config=CandidateConfig(n_per_source=1, n_cold=2))
    new = got.filter(pl.col("src_cold") == 1)
    assert new.filter(pl.col("user_idx") == 7)["item_idx"].to_list() == [1, 2]  # 3, 3, 3: the two lowest
    assert new.filter(pl.col("user_idx") == 3)["item_idx"].to_list() == [2, 4]
