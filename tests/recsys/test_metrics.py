"""Ranking metrics, catalogue metrics and ``top_k``: hand-computed cases and slow reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import ndcg_score

from recsys import topk as topk_module
from recsys.evaluation.metrics import (
    catalog_coverage,
    gini,
    mean_popularity,
    novelty,
    ranking_metrics,
)
from recsys.topk import top_k

L3 = 1 / math.log2(3)  # discount of rank 2 = 0.6309298


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


# ---------------------------------------------------------------- hand-computed ranking metrics

TOPK = np.array([[1, 2, 3], [4, 0, -1], [0, 1, 2], [0, 1, 5]])
TRUTH = _csr([[2, 5], [4, 0, 3], [], [5]], n_items=6)
# user 0: rel = [0, 1, 0], R = 2     user 1: rel = [1, 1, pad], R = 3
# user 2: no relevant item -> NaN     user 3: rel = [0, 0, 1], R = 1
EXPECTED = {
    # u0: 1/2;  u1: 2/3;  u3: 0 hits in top 2, then 1/1
    "recall@2": [0.5, 2 / 3, np.nan, 0.0],
    "recall@3": [0.5, 2 / 3, np.nan, 1.0],
    # hits / k: u0 1/2, 1/3;  u1 2/2, 2/3 (padding is a miss);  u3 0/2, 1/3
    "precision@2": [0.5, 1.0, np.nan, 0.0],
    "precision@3": [1 / 3, 2 / 3, np.nan, 1 / 3],
    # u0: DCG = 1/log2(3); IDCG over min(k, 2) = 2 items = 1 + 1/log2(3)  -> 0.3868528 at k = 2 and 3
    # u1 k=2: (1 + 1/log2 3) / (1 + 1/log2 3) = 1;  k=3: IDCG over 3 items = 1 + 1/log2 3 + 1/2 -> 0.7653606
    # u3 k=3: DCG = 1/log2(4) = 0.5, IDCG over min(3, 1) = 1 item = 1 -> 0.5
    "ndcg@2": [L3 / (1 + L3), 1.0, np.nan, 0.0],
    "ndcg@3": [L3 / (1 + L3), (1 + L3) / (1.5 + L3), np.nan, 0.5],
    "hitrate@2": [1.0, 1.0, np.nan, 0.0],
    "hitrate@3": [1.0, 1.0, np.nan, 1.0],
    # u0: precision@2 * rel_2 / min(k, 2) = (1/2) / 2 = 0.25 at k = 2 and 3
    # u1 k=2: (1/1 + 2/2) / 2 = 1;  k=3: (1/1 + 2/2) / min(3, 3) = 2/3
    # u3 k=3: precision@3 * rel_3 / min(3, 1) = 1/3
    "map@2": [0.25, 1.0, np.nan, 0.0],
    "map@3": [0.25, 2 / 3, np.nan, 1 / 3],
    # first hit at rank 2, 1, none (NaN: empty truth), 3
    "mrr": [0.5, 1.0, np.nan, 1 / 3],
}


def test_ranking_metrics_hand_computed():
    got = ranking_metrics(TOPK, TRUTH, ks=(2, 3))
    assert set(got) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        assert got[name].dtype == np.float64
        np.testing.assert_allclose(got[name], expected, rtol=1e-12, err_msg=name)


def test_k_beyond_list_length_counts_missing_ranks_as_misses():
    got = ranking_metrics(TOPK, TRUTH, ks=(5,))
    np.testing.assert_allclose(got["recall@5"], [0.5, 2 / 3, np.nan, 1.0])
    np.testing.assert_allclose(got["precision@5"], [1 / 5, 2 / 5, np.nan, 1 / 5])  # still divided by k = 5
    # IDCG@5 covers min(5, R) items: u0 2 items, u1 3 items, u3 1 item
    np.testing.assert_allclose(got["ndcg@5"], [L3 / (1 + L3), (1 + L3) / (1.5 + L3), np.nan, 0.5])
    np.testing.assert_allclose(got["map@5"], [0.25, 2 / 3, np.nan, 1 / 3])


def test_padding_never_hits_even_next_to_previous_users_last_item():
    # user 1's -1 must not be read as user 0's last item (key u * n_items - 1) nor as item n_items - 1.
    truth = _csr([[3], [3]], n_items=4)
    got = ranking_metrics(np.array([[-1, -1], [-1, 3]]), truth, ks=(1, 2))
    np.testing.assert_allclose(got["hitrate@1"], [0.0, 0.0])
    np.testing.assert_allclose(got["hitrate@2"], [0.0, 1.0])
    np.testing.assert_allclose(got["mrr"], [0.0, 0.5])


def test_truth_values_other_than_one_and_stored_zeros():
    truth = sp.csr_matrix((np.array([5.0, 0.0]), (np.array([0, 0]), np.array([1, 2]))), shape=(1, 3))
    got = ranking_metrics(np.array([[2, 1]]), truth, ks=(2,))
    # the stored zero at item 2 is not relevant: R = 1, hit at rank 2
    np.testing.assert_allclose(got["recall@2"], [1.0])
    np.testing.assert_allclose(got["mrr"], [0.5])
    assert truth.nnz == 2  # caller's matrix untouched


def test_all_users_empty_truth_gives_nan():
    got = ranking_metrics(np.array([[0, 1]]), sp.csr_matrix((1, 3)), ks=(1,))
    assert all(np.isnan(v).all() for v in got.values())


def test_perfect_ranker_scores_one():
    rng = np.random.default_rng(3)
    n_users, n_items, width = 40, 30, 12
    sizes = rng.integers(1, 9, n_users)
    rows = [rng.choice(n_items, s, replace=False) for s in sizes]
    topk = np.array([np.concatenate([r, np.setdiff1d(np.arange(n_items), r)[: width - r.size]]) for r in rows])
    got = ranking_metrics(topk, _csr([list(r) for r in rows], n_items), ks=(1, 3, 5, 10))
    np.testing.assert_allclose(got["mrr"], 1.0)
    for k in (1, 3, 5, 10):
        for name in ("ndcg", "hitrate", "map"):
            np.testing.assert_allclose(got[f"{name}@{k}"], 1.0, err_msg=f"{name}@{k}")
        np.testing.assert_allclose(got[f"recall@{k}"], np.minimum(k, sizes) / sizes)
        np.testing.assert_allclose(got[f"precision@{k}"][sizes >= k], 1.0)


def _slow_ranking_metrics(topk: np.ndarray, truth: sp.csr_matrix, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for u in range(topk.shape[0]):
        relevant = set(truth[u].indices[truth[u].data != 0].tolist())
        rel = [1 if (i >= 0 and i in relevant) else 0 for i in topk[u]]
        for k in ks:
            r = (rel + [0] * k)[:k]
            R = len(relevant)
            m = min(k, R)
            dcg = sum(g / math.log2(i + 2) for i, g in enumerate(r))
            idcg = sum(1 / math.log2(i + 2) for i in range(m))
            vals = {
                "recall": sum(r) / R if R else np.nan,
                "precision": sum(r) / k if R else np.nan,
                "ndcg": dcg / idcg if R else np.nan,
                "hitrate": float(sum(r) > 0) if R else np.nan,
                "map": sum(sum(r[: i + 1]) / (i + 1) * r[i] for i in range(k)) / m if R else np.nan,
            }
            for name, v in vals.items():
                out.setdefault(f"{name}@{k}", []).append(v)
        first = next((i for i, g in enumerate(rel) if g), None)
        out.setdefault("mrr", []).append(np.nan if not relevant else (0.0 if first is None else 1 / (first + 1)))
    return {name: np.array(v) for name, v in out.items()}


@pytest.mark.parametrize("width", [10, 3, 0])
def test_ranking_metrics_match_slow_reference(width):
    rng = np.random.default_rng(width)
    n_users, n_items = 50, 30
    truth = sp.random(n_users, n_items, density=0.15, format="csr", random_state=width)
    truth.data[:] = 1.0
    topk = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :width]
    topk[rng.random(topk.shape) < 0.1] = -1  # scattered padding
    ks = (1, 2, 5, 10, 20)
    got = ranking_metrics(topk, truth, ks)
    expected = _slow_ranking_metrics(topk, truth, ks)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("with_exclusions", [False, True])
def test_ndcg_matches_sklearn(with_exclusions):
    rng = np.random.default_rng(7)
    n_users, n_items = 50, 30
    scores = rng.random((n_users, n_items))
    exclude = sp.random(n_users, n_items, density=0.2 * with_exclusions, format="csr", random_state=1)
    truth = sp.random(n_users, n_items, density=0.2, format="csr", random_state=2)
    truth = ((truth != 0).astype(np.int8) - (truth != 0).multiply(exclude != 0)).tocsr()  # truth outside exclusions
    truth.eliminate_zeros()
    ks = (1, 3, 5, 10)
    got = ranking_metrics(top_k(scores, 10, exclude=exclude), truth, ks)
    for u in np.flatnonzero(truth.getnnz(axis=1)):
        keep = np.setdiff1d(np.arange(n_items), exclude[u].indices)
        y_true = truth[u].toarray()[0, keep][None]
        for k in ks:
            assert got[f"ndcg@{k}"][u] == pytest.approx(ndcg_score(y_true, scores[u, keep][None], k=k), rel=1e-12)


# ---------------------------------------------------------------- top_k


def _slow_top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> np.ndarray:
    out = np.full((scores.shape[0], k), -1)
    for u, row in enumerate(scores.astype(np.float64)):
        banned = set() if exclude is None else set(exclude[u].indices[exclude[u].data != 0].tolist())
        cand = [j for j in range(row.size) if j not in banned and not np.isnan(row[j]) and row[j] != -np.inf]
        cand.sort(key=lambda j: (-row[j], j))  # best first, ties to the lower index
        out[u, : min(k, len(cand))] = cand[:k]
    return out


@pytest.mark.parametrize("k", [1, 4, 7, 12, 15])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("by_torch", [False, True])
def test_top_k_matches_slow_reference_with_ties_and_exclusions(k, dtype, by_torch, monkeypatch):
    """Either selection (the partition, or torch.topk on large blocks, rows with a tie at the boundary settled
    by the partition) gives the reference's lists."""
    if by_torch:
        monkeypatch.setattr(topk_module, "TORCH_MIN_SIZE", 0)
    rng = np.random.default_rng(k)
    b, n_items = 40, 12
    scores = rng.integers(0, 4, (b, n_items)).astype(dtype)  # heavy ties, also at the k-th value
    if dtype != np.int64:
        scores[rng.random(scores.shape) < 0.05] = np.nan
        scores[rng.random(scores.shape) < 0.05] = -np.inf
        scores[rng.random(scores.shape) < 0.02] = np.inf
    scores[0] = 1  # one constant row
    if dtype != np.int64:
        scores[2, 3:] = np.nan  # fewer numbers than k
    exclude = sp.random(b, n_items, density=0.3, format="csr", random_state=k).toarray()
    exclude[1] = 1.0  # one row with everything excluded
    exclude = sp.csr_matrix(exclude)
    before = scores.copy()
    got = top_k(scores, k, exclude=exclude)
    np.testing.assert_array_equal(got, _slow_top_k(scores, k, exclude))
    np.testing.assert_array_equal(scores, before)  # input untouched
    assert got.shape == (b, k) and got.dtype == np.int64
    assert (got[1] == -1).all()
    for u in range(b):
        assert not set(got[u]) & set(exclude[u].indices.tolist())


@pytest.mark.parametrize("k", [1, 4, 9, 14])
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_searching_only_the_best_chunks_gives_the_reference_lists(k, ties, monkeypatch):
    """Large rows are searched in the chunks with the highest maxima (and the tail past the last whole chunk);
    a row whose k-th value is not above every skipped entry is selected again exactly."""
    monkeypatch.setattr(topk_module, "TORCH_MIN_SIZE", 0)
    monkeypatch.setattr(topk_module, "CHUNK", 3)  # 33 whole chunks of 3 and a tail of 2 in 101 columns
    exact = topk_module._partitioned
    redone: list[int] = []
    monkeypatch.setattr(topk_module, "_partitioned", lambda neg, kk: redone.append(len(neg)) or exact(neg, kk))
    rng = np.random.default_rng(100 + k)
    b, n_items = 60, 101
    scores = (rng.integers(0, 5, (b, n_items)) if ties else rng.standard_normal((b, n_items))).astype(np.float32)
    scores[:, -2:] += 2.0 * (rng.random((b, 2)) < 0.3)  # some of the best entries sit in the tail
    scores[5:10][rng.random((5, n_items)) < 0.1] = np.nan  # NaN in a few rows (a row with one is redone)
    scores[rng.random(scores.shape) < 0.05] = -np.inf
    scores[3, :] = -np.inf
    scores[3, 7] = 1.0  # fewer numbers than k
    exclude = sp.random(b, n_items, density=0.2, format="csr", random_state=k)
    before = scores.copy()
    got = top_k(scores, k, exclude=exclude)
    np.testing.assert_array_equal(got, _slow_top_k(scores, k, exclude))
    np.testing.assert_array_equal(scores, before)
    if not ties:  # distinct values: only the rows with a NaN or too few numbers are redone
        assert sum(redone) <= 6


@pytest.mark.parametrize("k", [1, 4, 11, 15])
def test_one_row_shared_by_every_user_is_ranked_once_with_the_same_lists(k):
    """Popularity scores every user alike (a stride-0 view): ranked once, then each row's exclusions."""
    rng = np.random.default_rng(k)
    row = rng.integers(0, 4, 12).astype(np.float32)  # ties
    row[[2, 7]] = [np.nan, -np.inf]
    shared = np.broadcast_to(row, (30, 12))
    exclude = sp.random(30, 12, density=0.3, format="csr", random_state=k)
    exclude.data[::5] = 0.0  # stored zeros exclude nothing
    exclude = sp.vstack([exclude[:3], sp.csr_matrix(np.ones((1, 12))), exclude[4:]], format="csr")  # all of row 3
    copy = exclude.copy()
    got = top_k(shared, k, exclude=exclude)
    np.testing.assert_array_equal(got, _slow_top_k(np.array(shared), k, exclude))
    np.testing.assert_array_equal(top_k(shared, k), _slow_top_k(np.array(shared), k, None))
    assert (got[3] == -1).all() and got.dtype == np.int64
    assert (exclude != copy).nnz == 0 and exclude.nnz == copy.nnz  # the caller's matrix is untouched


def test_top_k_hand_case_and_padding():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, np.nan, -np.inf, 1.0]])
    exclude = sp.csr_matrix(np.array([[0, 0, 0, 1], [0, 0, 0, 0]]))
    np.testing.assert_array_equal(top_k(scores, 3), [[1, 3, 2], [0, 3, -1]])
    np.testing.assert_array_equal(top_k(scores, 3, exclude=exclude), [[1, 2, 0], [0, 3, -1]])
    np.testing.assert_array_equal(top_k(scores, 6, exclude=exclude), [[1, 2, 0, -1, -1, -1], [0, 3, -1, -1, -1, -1]])


def test_top_k_large_random_matches_full_argsort():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((64, 500)).astype(np.float32)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :50]
    np.testing.assert_array_equal(top_k(scores, 50), expected)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: top_k(np.zeros((2, 3)), 0), "k must be an integer >= 1"),
    (lambda: top_k(np.zeros(3), 1), "scores must be a 2-D array"),
    (lambda: top_k(np.zeros((2, 3)), 1, exclude=sp.csr_matrix((2, 4))), "exclude must be a scipy sparse matrix"),
    (lambda: ranking_metrics(np.zeros((2, 3)), TRUTH), "topk must be a 2-D integer array"),
    (lambda: ranking_metrics(TOPK, TRUTH[:2]), "truth has 2 rows but topk has 4"),
    (lambda: ranking_metrics(TOPK + 5, TRUTH), r"item indices in \[0, 6\)"),
    (lambda: ranking_metrics(TOPK, TRUTH, ks=(0,)), "every cut-off in ks must be an integer >= 1"),
    (lambda: ranking_metrics(TOPK, TRUTH.toarray()), "truth must be a 2-D scipy sparse matrix"),
    (lambda: gini(TOPK, 6, k=0), "k must be an integer >= 1"),
    (lambda: novelty(TOPK, -np.ones(6), 3, 2), "item_popularity must be a 1-D array of non-negative counts"),
])
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- catalogue metrics


def test_same_list_for_everyone_is_concentrated():
    topk = np.tile([0, 1, 2], (5, 1))
    assert catalog_coverage(topk, 10, 3) == pytest.approx(3 / 10)
    # counts sorted: seven 0s then 5, 5, 5; sum (2i - 11) c_i = (5 + 7 + 9) * 5 = 105; / (10 * 15) = 0.7 = 1 - k/n
    assert gini(topk, 10, 3) == pytest.approx(0.7)
    assert catalog_coverage(topk, 10, 1) == pytest.approx(1 / 10)
    # one item takes every slot: counts (0, 0, 0, 5), (2*4 - 5) * 5 / (4 * 5) = 0.75 = 1 - 1/n
    assert gini(topk, 4, 1) == pytest.approx(0.75)


def test_even_spread_has_zero_gini_and_full_coverage():
    topk = np.array([[0, 1], [2, 3], [-1, -1]])  # padding row ignored
    assert gini(topk, 4, 2) == pytest.approx(0.0)
    assert catalog_coverage(topk, 4, 2) == pytest.approx(1.0)
    assert catalog_coverage(topk, 8, 2) == pytest.approx(0.5)


def test_novelty_and_mean_popularity_hand_case():
    topk = np.array([[0, 1, 3], [2, 3, 1]])
    pop = np.array([4, 2, 1, 0])
    # k = 2 slots: items 0, 1, 2, 3 -> p = 4/4, 2/4, 1/4, max(0, 1)/4 -> -log2 p = 0, 1, 2, 2 -> mean 1.25
    assert novelty(topk, pop, 4, 2) == pytest.approx(1.25)
    assert mean_popularity(topk, pop, 2) == pytest.approx((4 + 2 + 1 + 0) / 4)
    # k = 3 adds items 3 and 1: (0 + 1 + 2 + 2 + 2 + 1) / 6 = 8/6
    assert novelty(topk, pop, 4, 3) == pytest.approx(8 / 6)
    assert mean_popularity(topk, pop, 3) == pytest.approx((4 + 2 + 0 + 1 + 0 + 2) / 6)


def test_catalogue_metrics_without_any_recommendation():
    topk = np.full((2, 3), -1)
    assert catalog_coverage(topk, 5, 3) == 0.0
    assert np.isnan(gini(topk, 5, 3))
    assert np.isnan(novelty(topk, np.ones(5), 3, 3))
    assert np.isnan(mean_popularity(topk, np.ones(5), 3))


def test_gini_matches_mean_absolute_difference_definition():
    rng = np.random.default_rng(11)
    n_items = 25
    topk = np.argsort(rng.random((30, n_items)) ** 3 * rng.random(n_items), axis=1)[:, :5]
    counts = np.bincount(topk.ravel(), minlength=n_items).astype(float)
    # G = sum_i sum_j |c_i - c_j| / (2 n^2 mean(c))
    expected = sum(abs(a - b) for a in counts for b in counts) / (2 * n_items**2 * counts.mean())
    assert gini(topk, n_items, 5) == pytest.approx(expected)
