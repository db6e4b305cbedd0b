"""A sparse item-item model's block read lazily: the same scores, lists, moments and candidates as the dense block."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.candidates import CandidateConfig, generate_candidates, row_moments
from recsys.scorers import ItemItemScorer
from recsys.scorers.base import binarize
from recsys.scorers.item_item import NeighbourScores
from recsys.topk import top_k


def _block(seed: int, n_users: int = 40, n_items: int = 60, *, integer: bool) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """A history block (an empty row, a long one, event weights > 1) and a sparse ``W`` (popular rows reaching
    most items, negative and stored-zero weights; integer weights tie often)."""
    rng = np.random.default_rng(seed)
    history = sp.random(n_users, n_items, density=0.08, random_state=rng, format="lil", dtype=np.float32)
    history[0, :] = 0
    history[1, :30] = 2.5
    history = sp.csr_matrix(history)
    w = sp.random(n_items, n_items, density=0.1, random_state=rng, format="lil", dtype=np.float32)
    w[3, :] = rng.random(n_items)  # an item that reaches every item
    w = sp.csr_matrix(w)
    if integer:
        w.data = rng.integers(-2, 4, w.nnz).astype(np.float32)  # ties, negatives and stored zeros
    else:
        w.data = rng.normal(size=w.nnz).astype(np.float32)
    return history, w


@pytest.mark.parametrize("integer", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_lazy_block_gives_the_dense_blocks_scores_lists_and_moments(seed, integer):
    history, w = _block(seed, integer=integer)
    dense = (binarize(history) @ w).toarray()
    lazy = NeighbourScores(binarize(history), w)
    np.testing.assert_array_equal(lazy.dense(), dense)  # the same float32 sums, bit for bit
    np.testing.assert_array_equal(lazy.dense(np.array([5, 1])), dense[[5, 1]])
    exclude = history.copy()
    exclude.data[::4] = 0.0  # a stored zero excludes nothing, as in top_k
    for k in (1, 7, 25, 70):  # 70 > the 60 items: padded with -1
        np.testing.assert_array_equal(lazy.top_k(k, exclude), top_k(dense, k, exclude=exclude))
        np.testing.assert_array_equal(lazy.top_k(k), top_k(dense, k))
    mean, std = row_moments(dense)
    np.testing.assert_allclose(lazy.moments[0], mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lazy.moments[1], std, rtol=1e-9, atol=1e-12)
    rng = np.random.default_rng(seed)
    rows, items = rng.integers(0, 40, 300), rng.integers(0, 60, 300)  # unsorted, repeated pairs
    np.testing.assert_array_equal(lazy.at(rows, items), dense[rows, items])


def test_moments_alone_come_without_a_selection():
    history, w = _block(3, integer=False)
    dense = (binarize(history) @ w).toarray()
    np.testing.assert_allclose(NeighbourScores(binarize(history), w).moments, row_moments(dense), rtol=1e-9,
                               atol=1e-12)


def test_an_exclusion_of_another_shape_is_refused():
    history, w = _block(4, integer=True)
    with pytest.raises(ValueError, match="exclude must be a scipy sparse matrix of the scores' shape"):
        NeighbourScores(binarize(history), w).top_k(3, history[:5])


def test_candidates_from_the_lazy_block_equal_those_from_the_dense_one():
    history, w = _block(5, integer=True)
    scorer = ItemItemScorer("itemknn", w)
    users = np.arange(history.shape[0])
    lazy = scorer.block_scores(users, history)
    assert isinstance(lazy, NeighbourScores)
    dense = scorer.score(users, history)
    np.testing.assert_array_equal(dense, (binarize(history) @ w).toarray())
    other = np.random.default_rng(5).normal(size=dense.shape).astype(np.float32)
    cold = np.zeros(dense.shape[1], bool)
    cold[[4, 9, 33]] = True
    for config in (CandidateConfig(n_per_source=6, n_cold=2, cold_by="itemknn"),
                   CandidateConfig(n_per_source=6, n_cold=0, new_items=False)):
        got = generate_candidates({"itemknn": lazy, "other": other}, users, history, sources=("itemknn", "other"),
                                  config=config, cold=cold)
        want = generate_candidates({"itemknn": dense, "other": other}, users, history, sources=("itemknn", "other"),
                                   config=config, cold=cold)
        assert got.drop("score_itemknn").equals(want.drop("score_itemknn"))
        np.testing.assert_allclose(got["score_itemknn"].to_numpy(), want["score_itemknn"].to_numpy(), rtol=1e-6,
                                   atol=1e-6)


def test_a_dense_item_item_model_scores_its_block_densely():
    history, w = _block(6, integer=False)
    scorer = ItemItemScorer("ease", w.toarray())
    got = scorer.block_scores(np.arange(history.shape[0]), history)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, (binarize(history) @ w).toarray(), rtol=1e-5, atol=1e-5)
