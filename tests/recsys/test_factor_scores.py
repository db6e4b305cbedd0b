"""A linear model's block read without its dense scores: the screened top items are exactly ``top_k`` of the
float32 pair scores, the screen's error bound holds, and the moments and pair scores are the dense block's.

:meth:`FactorScores.top_k` screens a catalogue in bfloat16 and rescores what it kept exactly; its promise is the
same lists as ``recsys.topk.top_k`` of :meth:`FactorScores.at` at every pair (ties to the lower item, excluded
items never, -1 padding). Real catalogues below ``SCREEN_MIN_ITEMS`` skip the screen (as do CPUs without native
bfloat16), so these tests lower it to 0, screen on any CPU, and shrink ``TILE`` to drive a few hundred to a few
thousand items through several tiles, a last partial tile and partial runs of
:data:`recsys.scorers.product_kernels.RUN` columns.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.scorers import factor_scores
from recsys.scorers.factor_scores import BoostedFactorScores, FactorScores, ItemSide, Screen
from recsys.topk import top_k


@pytest.fixture
def screened(monkeypatch):
    """Every catalogue, however small, goes through the screen, on any CPU (with or without native bfloat16)."""
    monkeypatch.setattr(factor_scores, "SCREEN_MIN_ITEMS", 0)
    monkeypatch.setattr(factor_scores, "SCREEN_NATIVE", True, raising=False)
    return monkeypatch


@pytest.fixture
def rounds(screened):
    """The rows each call of the screen was given (one entry a round) and the rows read from the dense block."""
    seen: dict[str, list[int]] = {"screen": [], "dense": []}
    candidates, dense = Screen.candidates, FactorScores.dense

    def spy_candidates(self, user, m, exclude, floor=None):
        seen["screen"].append(len(user))
        return candidates(self, user, m, exclude, floor)

    def spy_dense(self, rows=None, columns=None):
        seen["dense"].append(self.shape[0] if rows is None else len(rows))
        return dense(self, rows, columns)

    screened.setattr(Screen, "candidates", spy_candidates)
    screened.setattr(FactorScores, "dense", spy_dense)
    return seen


def _random_block(seed: int, n_users: int, n_items: int, d: int = 16, *, item_offset: bool = False,
                  user_offset: bool = False) -> FactorScores:
    """Gaussian user and item vectors (offsets on the scale of the products when asked)."""
    rng = np.random.default_rng(seed)
    user = rng.normal(size=(n_users, d)).astype(np.float32)
    items = rng.normal(size=(n_items, d)).astype(np.float32)
    offset = rng.normal(scale=2.0, size=n_items).astype(np.float32) if item_offset else None
    side = ItemSide(items, offset, user_offset=user_offset)
    return FactorScores(user, side, rng.normal(scale=3.0, size=n_users).astype(np.float32) if user_offset else None)


def _integer_block(seed: int, n_users: int, n_items: int, d: int = 6, *, high: int = 3) -> FactorScores:
    """Small integer vectors and offsets: every score is exact in float32 in any summation order (the dense
    block and the pair scores agree to the bit), and many scores tie exactly."""
    rng = np.random.default_rng(seed)
    user = rng.integers(-high, high + 1, size=(n_users, d)).astype(np.float32)
    items = rng.integers(-high, high + 1, size=(n_items, d)).astype(np.float32)
    side = ItemSide(items, rng.integers(-2, 3, n_items).astype(np.float32), user_offset=True)
    return FactorScores(user, side, rng.integers(-2, 3, n_users).astype(np.float32))


def _pair_scores(scores: FactorScores) -> np.ndarray:
    """float32 [b, n]: :meth:`FactorScores.at` at every pair (the scores the selection promises to rank by)."""
    b, n = scores.shape
    rows, cols = np.divmod(np.arange(b * n), n)
    return scores.at(rows, cols).reshape(b, n)


def _reference(scores: FactorScores, k: int, exclude=None) -> np.ndarray:
    return top_k(_pair_scores(scores), k, exclude=exclude)


def _csr(shape: tuple[int, int], rows, cols, values) -> sp.csr_matrix:
    """A CSR matrix holding exactly these entries in this order within each row: duplicates are not summed,
    indices not sorted, stored zeros kept (what a caller's history may look like)."""
    rows, cols, values = (np.asarray(a) for a in (rows, cols, values))
    order = np.argsort(rows, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    return sp.csr_matrix((values[order].astype(np.float32), cols[order].astype(np.int32), indptr), shape=shape)


def _exclusion(seed: int, scores: FactorScores, k: int) -> sp.csr_matrix:
    """Random exclusions, plus some of each row's true top items excluded (once as a duplicate of a stored zero,
    once as +1 and -1) and others marked with a stored zero only (which must not exclude them); row 0 has none."""
    rng = np.random.default_rng(seed + 100)
    b, n = scores.shape
    best = _reference(scores, k)
    rows, cols = np.nonzero(rng.random((b, n)) < 0.05)
    entries = [(rows, cols, np.ones(len(rows)))]
    for r in range(1, b):
        first, second, zero_only = best[r, 0], best[r, 2], best[r, 1]
        entries.append(([r] * 5, [first, second, zero_only, first, second], [0.0, 1.0, 0.0, 2.0, -1.0]))
    rows, cols, values = (np.concatenate([np.asarray(e[i]) for e in entries]) for i in range(3))
    shuffle = rng.permutation(len(rows))
    keep = rows[shuffle] != 0
    return _csr((b, n), rows[shuffle][keep], cols[shuffle][keep], values[shuffle][keep])


CASES = [  # seed, item offset, user offset, tile (96: a run of 64 and a partial one in every tile)
    (0, False, False, 96),
    (1, True, False, 64),
    (2, False, True, 4096),
    (3, True, True, 96),
    (4, True, True, 200),
]


@pytest.mark.parametrize(("seed", "item_offset", "user_offset", "tile"), CASES)
def test_the_screened_lists_are_top_k_of_the_exact_pair_scores(monkeypatch, rounds, seed, item_offset, user_offset,
                                                                 tile):
    """The screen's promise on ordinary data, with exclusions in the forms callers send (stored zeros that must
    not exclude, duplicates, unsorted indices): the very lists of ``top_k`` over :meth:`FactorScores.at` at every
    pair. Also that the screen, not the dense fallback, settles most rows (else this proves nothing of it)."""
    monkeypatch.setattr(factor_scores, "TILE", tile)
    n_items = 1500 + 97 * seed  # never a whole number of tiles
    scores = _random_block(seed, 120, n_items, item_offset=item_offset, user_offset=user_offset)
    for k in (10, 37):
        exclude = _exclusion(seed, scores, k)
        want = _reference(scores, k, exclude)
        assert (want[1:, 0] != _reference(scores, k)[1:, 0]).all()  # the exclusions do move every row's best
        for ex in (exclude, None):
            rounds["screen"].clear()
            rounds["dense"].clear()
            got = scores.top_k(k, ex)
            assert got.dtype == np.int64 and got.shape == (120, k)
            np.testing.assert_array_equal(got, want if ex is not None else _reference(scores, k))
            assert rounds["screen"][0] == 120
            assert sum(rounds["dense"]) <= 12  # the first round settles nearly every row


def test_a_sparse_array_excludes_like_a_matrix(screened):
    """``exclude`` may come as a ``csr_array`` (scipy's newer type) as ``top_k`` accepts it."""
    scores = _random_block(7, 20, 700)
    exclude = sp.csr_array(sp.random(20, 700, density=0.2, random_state=7, format="csr", dtype=np.float32))
    np.testing.assert_array_equal(scores.top_k(5, exclude), _reference(scores, 5, exclude))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 10, 40])
def test_exact_ties_go_to_the_lower_item_as_top_k_breaks_them(monkeypatch, rounds, seed, k):
    """Integer vectors tie exactly and often, within a run, across tiles and at the heap's boundary: the screen's
    heap and the rescoring must keep ``top_k``'s order (the lower item first) and its boundary."""
    monkeypatch.setattr(factor_scores, "TILE", 160)
    scores = _integer_block(seed, 80, 1000 + 13 * seed)
    mask = np.random.default_rng(seed).random(scores.shape) < 0.1
    exclude = _csr(scores.shape, *np.nonzero(mask), np.ones(int(mask.sum())))
    pairs = _pair_scores(scores)
    np.testing.assert_array_equal(pairs, scores.dense())  # exact: the two references are one
    best = top_k(pairs, k + 1)
    assert (pairs[np.arange(80), best[:, k - 1]] == pairs[np.arange(80), best[:, k]]).mean() > 0.2  # ties at k
    for ex in (None, exclude):
        rounds["dense"].clear()
        np.testing.assert_array_equal(scores.top_k(k, ex), top_k(pairs, k, exclude=ex))
        assert sum(rounds["dense"]) <= 8  # the screen settled (nearly) every row, ties and all


def test_rows_with_fewer_items_than_k_are_padded_and_excluded_items_never_come_back(screened):
    """Edges of the selection: a row excluding every item (nothing, not even a floor's leftovers), rows keeping
    fewer than ``k``, exactly ``k`` and ``k + 1`` items, and an exclusion listing stored zeros for the rest."""
    scores = _integer_block(3, 6, 300)
    n, k = 300, 10
    everything = np.arange(n)
    rows, cols, values = [], [], []
    for r, kept in [(0, 0), (1, 3), (2, k), (3, k + 1)]:
        dropped = everything[kept:]
        rows += [r] * len(dropped)
        cols += list(dropped)
        values += [1.0] * len(dropped)
    rows += [4] * n  # every item of row 4 listed, but as stored zeros: nothing excluded
    cols += list(everything)
    values += [0.0] * n
    exclude = _csr(scores.shape, rows, cols, values)
    got = scores.top_k(k, exclude)
    np.testing.assert_array_equal(got, _reference(scores, k, exclude))
    assert (got[0] == -1).all()
    assert sorted(got[1, :3]) == [0, 1, 2] and (got[1, 3:] == -1).all()
    assert sorted(got[2]) == list(range(k))
    assert set(got[3]) < set(range(k + 1))
    np.testing.assert_array_equal(got[4], _reference(scores, k)[4])


@pytest.mark.parametrize("k", [100, 299, 300, 301, 450])
def test_a_k_near_or_past_the_catalogue_still_gives_top_k(screened, k):
    """A large ``k`` makes the heap as large as the catalogue after a round or before the first one: those rows
    leave the screen for the dense block, still with ``top_k``'s lists and -1 past the catalogue."""
    scores = _integer_block(5, 7, 300)
    exclude = _csr(scores.shape, [1, 1, 2], [5, 7, 9], [1.0, 1.0, 0.0])
    got = scores.top_k(k, exclude)
    np.testing.assert_array_equal(got, _reference(scores, k, exclude))
    np.testing.assert_array_equal(got, top_k(scores.dense(), k, exclude=exclude))
    if k >= 300:
        assert (got[1, 298:] == -1).all() and (got[:, 300:] == -1).all()


@pytest.mark.parametrize("user_offset", [False, True])
def test_an_empty_block_selects_nothing(screened, user_offset):
    """A block of 0 users (the last block of an export can be empty) gives a [0, k] int64 array."""
    side = ItemSide(np.ones((50, 4), np.float32), user_offset=user_offset)
    scores = FactorScores(np.zeros((0, 4), np.float32), side, np.zeros(0, np.float32) if user_offset else None)
    got = scores.top_k(5, sp.csr_matrix((0, 50)))
    assert got.shape == (0, 5) and got.dtype == np.int64
    assert scores.top_k(3).shape == (0, 3)


def test_a_floor_guessed_too_high_fails_the_first_round_and_the_next_settles_it(monkeypatch, rounds):
    """The first round's floor is a guess from normal scores; one far too high keeps too few items, so no row
    may be settled by it, and the next (floorless) round must settle them exactly."""
    monkeypatch.setattr(factor_scores, "SCREEN_ROUNDS", ((1, 1e-9), (8, None)))
    monkeypatch.setattr(factor_scores, "TILE", 96)
    scores = _random_block(11, 60, 1200, item_offset=True, user_offset=True)
    exclude = _exclusion(11, scores, 10)
    np.testing.assert_array_equal(scores.top_k(10, exclude), _reference(scores, 10, exclude))
    assert rounds["screen"] == [60, 60]  # every row failed round 1 and went on
    assert sum(rounds["dense"]) == 0  # round 2 settled them all


def test_rows_no_round_can_settle_are_selected_from_their_dense_rows(monkeypatch, rounds):
    """When the bound settles nothing (here: made huge) every round is tried and the rows come from the dense
    block, with ``top_k``'s lists of it."""
    monkeypatch.setattr(Screen, "bound", lambda self, user, rounded: np.full(len(user), 1e30))
    scores = _random_block(12, 40, 900, item_offset=True)
    exclude = _exclusion(12, scores, 10)
    got = scores.top_k(10, exclude)
    assert rounds["screen"] == [40] * len(factor_scores.SCREEN_ROUNDS)
    assert rounds["dense"][-1] == 40
    np.testing.assert_array_equal(got, top_k(scores.dense(), 10, exclude=exclude))
    np.testing.assert_array_equal(got, _reference(scores, 10, exclude))  # well separated: the same lists


def _near_tie_block(seed: int, n_users: int = 60, n_items: int = 1500, d: int = 16) -> FactorScores:
    """Items the bfloat16 screen cannot tell apart: a cluster of 400 copies of one integer vector, each moved by
    multiples of 2**-12 (under half a bfloat16 step), among integer items moved the same way; users are integer,
    some the cluster's own vector. Every float32 score is exact (at most 20 significant bits), so the dense block
    and the pair scores agree and the order is unique up to exact ties."""
    rng = np.random.default_rng(seed)
    base = rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], size=d)
    items = rng.integers(-3, 4, size=(n_items, d)).astype(np.float64)
    cluster = rng.choice(n_items, 400, replace=False)
    items[cluster] = base
    items += rng.integers(-15, 16, size=(n_items, d)) / 4096
    user = rng.integers(-2, 3, size=(n_users, d)).astype(np.float64)
    user[: n_users // 2] = np.clip(base, -2, 2)  # rows whose top is the cluster
    offset = rng.integers(-4, 5, n_items) / 4096
    return FactorScores(user.astype(np.float32), ItemSide(items.astype(np.float32), offset.astype(np.float32)))


@pytest.mark.parametrize("seed", [0, 1])
def test_items_the_screen_cannot_tell_apart_are_settled_exactly_or_not_by_the_screen(monkeypatch, rounds, seed):
    """Where hundreds of items have the same bfloat16 product but different exact scores, the screen keeps an
    arbitrary few of them: its proof must fail for those rows (else it returns the wrong items), while the rows
    it can prove keep the screen's lists."""
    monkeypatch.setattr(factor_scores, "TILE", 256)
    scores = _near_tie_block(seed)
    pairs = _pair_scores(scores)
    np.testing.assert_array_equal(pairs, scores.dense())
    for k in (5, 20):
        rounds["dense"].clear()
        np.testing.assert_array_equal(scores.top_k(k), top_k(pairs, k))
        assert 0 < sum(rounds["dense"]) < 60  # the cluster's rows and only some others fell through


@pytest.mark.parametrize("tau", ["zero", "kth"])
@pytest.mark.parametrize(("item_offset", "user_offset"), [(False, False), (True, True)])
def test_the_screens_error_bound_holds_at_every_item(tau, item_offset, user_offset):
    """The proof rests on :meth:`Screen.bound`: no exact float32 score exceeds the next bfloat16 above the
    screen's product, plus ``tau``, plus the bound. Checked against this platform's own bfloat16 matrix product
    (a product that rounded its inputs or sums differently from what the bound assumes would break the proof),
    with ``tau`` 0 and at each row's ``k``-th score (products near 0: the bound's own terms decide)."""
    scores = _random_block(21, 200, 2000, item_offset=item_offset, user_offset=user_offset)
    side = scores.side
    pairs = _pair_scores(scores).astype(np.float64)
    guess = np.zeros(200) if tau == "zero" else -np.sort(-pairs, axis=1)[:, 9]
    x = np.hstack([side.augment(scores.user, scores.user_offset), -guess[:, None]]).astype(np.float32)
    rounded = torch.from_numpy(x).bfloat16()
    product = torch.mm(rounded, side.screen.items.T)
    above = torch.nextafter(product, torch.full_like(product, float("inf"))).double().numpy()
    bound = side.screen.bound(x.astype(np.float64), rounded.double().numpy())
    ceiling = above - x[:, -1:].astype(np.float64) + bound[:, None]
    assert (pairs <= ceiling).all()
    assert np.median(bound) < 0.05 * pairs.std()  # and tight enough for the screen to settle rows


def _bfloat16(values) -> np.ndarray:
    return torch.from_numpy(np.asarray(values, np.float32)).bfloat16().float().numpy()


def test_the_bound_covers_float32_sums_that_cancel():
    """Where the inputs are bfloat16 numbers already (no rounding error to bound) and the products cancel terms
    of 2**20 down to scores near 1, only the bound's float32 accumulation terms stand between the screen and the
    exact float32 scores (each sums in its own order and loses different bits): they must cover the difference."""
    rng = np.random.default_rng(81)
    n, b, d = 1000, 50, 16
    big = _bfloat16(rng.uniform(1, 2, n)) * 2.0**20
    items = np.hstack([big[:, None], -big[:, None], _bfloat16(rng.normal(size=(n, d - 2)))])
    user = np.hstack([np.ones((b, 2)), _bfloat16(rng.normal(size=(b, d - 2)))]).astype(np.float32)
    scores = FactorScores(user, ItemSide(items))
    pairs = _pair_scores(scores).astype(np.float64)
    x = np.hstack([user, np.zeros((b, 1), np.float32)])  # tau = 0: the products are the scores
    rounded = torch.from_numpy(x).bfloat16()
    np.testing.assert_array_equal(rounded.float().numpy(), x)
    product = torch.mm(rounded, scores.side.screen.items.T)
    above = torch.nextafter(product, torch.full_like(product, float("inf"))).double().numpy()
    bound = scores.side.screen.bound(x.astype(np.float64), rounded.double().numpy())
    assert (pairs > above).any()  # the sums do differ: the case is a real one
    assert (pairs <= above + bound[:, None]).all()


@pytest.mark.parametrize("floor", [False, True])
@pytest.mark.parametrize("tau", [-1000.0, 0.0])
def test_no_item_the_screen_dropped_can_reach_its_ceiling(monkeypatch, floor, tau):
    """:meth:`Screen.candidates`' own promise, which the proof compares the ``k``-th score with: every item it did
    not keep (and does not exclude) scores at most the row's ceiling. A ``tau`` far below the scores (a poor
    guess) puts the products where bfloat16 steps are 4 wide, so the ceiling must start from the next bfloat16
    above the heap's lowest product, or above the floor, not from the value itself. Kept items are distinct,
    not excluded, as many as the heap holds."""
    monkeypatch.setattr(factor_scores, "TILE", 96)
    scores = _random_block(71, 40, 1500, item_offset=True, user_offset=True)
    side, m = scores.side, 100 if floor else 50
    pairs = _pair_scores(scores).astype(np.float64)
    exclude = sp.random(40, 1500, density=0.05, random_state=71, format="lil", dtype=np.float32)
    exclude[0] = 1.0  # a row with nothing left: nothing dropped, no ceiling
    exclude = sp.csr_matrix(exclude)
    exclude.data[:] = 1.0
    x = np.hstack([side.augment(scores.user, scores.user_offset), np.full((40, 1), -tau)]).astype(np.float32)
    # the floor between each row's 5th and 6th best score: the heap stays short of m, the floor decides
    level = -np.sort(-np.where(exclude.toarray() != 0, -np.inf, pairs), axis=1)[:, 4:6].mean(axis=1) - tau
    got = side.screen.candidates(x, m, exclude, level if floor else None)
    items, ceiling = got[0], got[1]
    assert ceiling[0] == -np.inf and (items[0] == -1).all()
    dropped = exclude.toarray() == 0
    sizes = (items >= 0).sum(axis=1)
    assert (sizes[1:] >= 5).all() and ((sizes[1:] < m).mean() > 0.5 if floor else (sizes[1:] == m).all())
    for r in range(1, 40):
        kept = items[r][items[r] >= 0]
        assert len(set(kept)) == len(kept)
        assert not dropped[r, kept].sum() < len(kept)  # none excluded
        dropped[r, kept] = False
    dropped[0] = False
    rows = np.nonzero(dropped)[0]
    assert np.isfinite(ceiling[1:]).all()
    assert (pairs[dropped] <= ceiling[rows]).all()


@pytest.mark.parametrize(("item_offset", "user_offset"), [(False, False), (True, False), (True, True)])
def test_the_moments_are_those_of_the_dense_scores(item_offset, user_offset):
    """The z-score features standardise with :attr:`FactorScores.moments`, computed from the items' moments: they
    must be each row's mean and (population) standard deviation over the whole catalogue."""
    scores = _random_block(31, 50, 800, item_offset=item_offset, user_offset=user_offset)
    dense = scores.dense().astype(np.float64)
    mean, std = scores.moments
    np.testing.assert_allclose(mean, dense.mean(axis=1), rtol=1e-5, atol=1e-5 * dense.std())
    np.testing.assert_allclose(std, dense.std(axis=1), rtol=1e-5)


@pytest.mark.parametrize(("item_offset", "user_offset"), [(False, False), (True, True)])
def test_dense_of_some_rows_and_items_is_that_slice_of_the_dense_block(item_offset, user_offset):
    """The fallback and the features read :meth:`FactorScores.dense` of a few rows or items: the same scores as
    the full block's rows and columns (repeated and unordered indices included), offsets added to the right ones."""
    scores = _random_block(32, 30, 400, item_offset=item_offset, user_offset=user_offset)
    full = scores.dense()
    rows, cols = np.array([7, 0, 7, 29]), np.array([399, 3, 3, 150, 0])
    np.testing.assert_allclose(scores.dense(rows), full[rows], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores.dense(columns=cols), full[:, cols], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores.dense(rows, cols), full[np.ix_(rows, cols)], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("item_offset", "user_offset"), [(False, False), (True, False), (False, True), (True, True)])
def test_pair_scores_are_the_products_plus_offsets(item_offset, user_offset):
    """:meth:`FactorScores.at` (the compiled ``pair_dots``) is what the selection ranks by: it must be
    ``user . item + user_offset + item_offset`` at each pair, for any pairs (repeats, any order, none)."""
    scores = _random_block(41, 25, 300, d=33, item_offset=item_offset, user_offset=user_offset)
    rng = np.random.default_rng(41)
    rows, cols = rng.integers(0, 25, 500), rng.integers(0, 300, 500)
    side = scores.side
    want = np.einsum("pd,pd->p", scores.user[rows].astype(np.float64), side.items[cols].astype(np.float64))
    if user_offset:
        want += scores.user_offset[rows]
    if item_offset:
        want += side.item_offset[cols]
    got = scores.at(rows, cols)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(scores.at(list(rows[:3]), list(cols[:3])), got[:3])
    assert scores.at(np.zeros(0, int), np.zeros(0, int)).shape == (0,)


def test_blocks_share_their_item_side_and_its_screen_is_built_once(screened):
    """A model keeps one :class:`ItemSide` across its blocks: the bfloat16 catalogue (and the item moments) must
    be built at the first block's selection and reused by every later block, not rebuilt per block."""
    built: list[int] = []
    init = Screen.__init__

    def counting(self, side):
        built.append(side.n_items)
        init(self, side)

    screened.setattr(Screen, "__init__", counting)
    rng = np.random.default_rng(51)
    side = ItemSide(rng.normal(size=(700, 8)).astype(np.float32), rng.normal(size=700).astype(np.float32))
    first = FactorScores(rng.normal(size=(10, 8)).astype(np.float32), side)
    second = FactorScores(rng.normal(size=(12, 8)).astype(np.float32), side)
    assert built == []  # nothing before a selection
    first.top_k(5)
    second.top_k(5)
    first.top_k(7)
    assert built == [700]
    assert first.side.screen is second.side.screen
    assert first.side.moments is second.side.moments


def test_a_side_with_a_user_offset_refuses_a_block_without_one():
    """LightFM's score adds a per-user bias: a block built without it would silently score without it."""
    side = ItemSide(np.ones((5, 3), np.float32), user_offset=True)
    with pytest.raises(ValueError, match="user_offset"):
        FactorScores(np.ones((2, 3), np.float32), side)


def test_an_exclusion_of_another_shape_is_refused(screened):
    """An exclusion for another block or catalogue would exclude the wrong items: refused, as ``top_k`` does."""
    scores = _random_block(61, 4, 100)
    with pytest.raises(ValueError, match="shape"):
        scores.top_k(3, sp.csr_matrix((4, 99)))
    with pytest.raises(ValueError, match="shape"):
        scores.top_k(3, np.zeros((4, 100)))


def test_without_a_writable_cache_folder_the_loops_compile_in_memory(monkeypatch):
    """numba refuses ``cache=True`` at decoration when no folder can hold the cache (a read-only install)."""
    import numba

    from recsys.scorers import compiled

    asked: list[bool] = []

    def njit(**options):
        asked.append(options.get("cache", False))
        if options.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return lambda function: function

    monkeypatch.setattr(numba, "njit", njit)

    def double(x):
        return 2 * x

    assert compiled.jit(double)(3) == 6
    assert asked == [True, False]


def _boosted(seed: int, n_users: int, n_items: int, share: float = 0.15) -> BoostedFactorScores:
    """An integer block plus an integer boost on a share of the items (the unseen ones), present for about half
    of each row's pairs there: sums exact in float32, many ties between boosted and plain items."""
    base = _integer_block(seed, n_users, n_items)
    rng = np.random.default_rng(seed + 7)
    unseen = rng.choice(n_items, size=int(share * n_items), replace=False)
    rows, cols = np.nonzero(rng.random((n_users, len(unseen))) < 0.5)
    boost = sp.csr_matrix((rng.integers(1, 8, size=len(rows)).astype(np.float32), (rows, unseen[cols])),
                          shape=base.shape)
    return BoostedFactorScores(base.user, base.side, boost, base.user_offset)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 10, 40])
def test_a_boosted_block_reads_as_its_dense_scores(monkeypatch, screened, seed, k):
    """The text tower's neighbour term on unseen items: the pairs, the moments, slices and the top items (through
    the screen, ties to the lower item, exclusions kept out) are those of the linear scores plus the boost."""
    monkeypatch.setattr(factor_scores, "TILE", 160)
    scores = _boosted(seed, 60, 900 + 11 * seed)
    linear = FactorScores(scores.user, scores.side, scores.user_offset).dense()
    dense = linear + scores.boost.toarray()
    assert (scores.boost.toarray() > 0).any(axis=1).all()
    np.testing.assert_array_equal(scores.dense(), dense)
    np.testing.assert_array_equal(_pair_scores(scores), dense)
    rows, cols = np.array([5, 0, 5, 59]), np.array([3, 899, 3, 100])
    np.testing.assert_array_equal(scores.dense(rows, cols), dense[np.ix_(rows, cols)])
    mean, std = scores.moments
    np.testing.assert_allclose(mean, dense.astype(np.float64).mean(axis=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(std, dense.astype(np.float64).std(axis=1), rtol=1e-6)
    exclude = _exclusion(seed, scores, max(k, 3))
    best = top_k(dense, k)
    assert np.isin(best, scores.boost.indices).any()  # boosted items do reach the lists
    for ex in (None, exclude):
        np.testing.assert_array_equal(scores.top_k(k, ex), top_k(dense, k, exclude=ex))


def test_a_boost_must_be_non_negative_and_of_the_blocks_shape():
    base = _integer_block(0, 4, 50)
    with pytest.raises(ValueError, match="non-negative"):
        BoostedFactorScores(base.user, base.side, -sp.eye(4, 50, format="csr"), base.user_offset)
    with pytest.raises(ValueError, match=r"\[4, 50\]"):
        BoostedFactorScores(base.user, base.side, sp.eye(4, 49, format="csr"), base.user_offset)
