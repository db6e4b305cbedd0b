"""Bootstrap intervals: hand cases, determinism, coverage of the normal approximation, shared resamples."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.evaluation import bootstrap
from recsys.evaluation.bootstrap import PairedResult, bootstrap_ci, bootstrap_many, paired_bootstrap


def test_constant_values_give_a_point_interval():
    assert bootstrap_ci(np.full(50, 0.3)) == pytest.approx((0.3, 0.3, 0.3))


def test_two_users_hand_case():
    # Resample means of {0, 1}: 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4 -> 2.5% quantile 0, 97.5% quantile 1.
    assert bootstrap_ci(np.array([0.0, 1.0]), n_resamples=2000) == (0.5, 0.0, 1.0)
    # with alpha = 0.6 the 30% and 70% quantiles both fall on 0.5
    assert bootstrap_ci(np.array([0.0, 1.0]), n_resamples=2000, alpha=0.6) == (0.5, 0.5, 0.5)


def test_seeded_determinism():
    x = np.random.default_rng(0).random(300)
    assert bootstrap_ci(x, seed=4) == bootstrap_ci(x, seed=4)
    assert bootstrap_ci(x, seed=4) != bootstrap_ci(x, seed=5)
    assert bootstrap_many({"x": x}, seed=4) == bootstrap_many({"x": x}, seed=4)


def test_interval_contains_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 1_000, 10_000):
        x = rng.exponential(size=n)
        mean, low, high = bootstrap_ci(x)
        assert mean == pytest.approx(x.mean())
        assert low < mean < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_normal_sample_width_matches_normal_theory():
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, size=2_000)
    _, low, high = bootstrap_ci(x, n_resamples=2_000)
    expected = 2 * 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert high - low == pytest.approx(expected, rel=0.15)


def test_nan_values_are_dropped():
    x = np.random.default_rng(3).random(100)
    with_nan = np.insert(x, [0, 10, 50], np.nan)
    assert bootstrap_ci(with_nan) == bootstrap_ci(x)
    assert all(np.isnan(bootstrap_ci(np.array([np.nan, np.nan]))))
    assert all(np.isnan(bootstrap_ci(np.array([]))))


def test_many_equals_single_and_shares_resamples():
    rng = np.random.default_rng(4)
    x = rng.random(500)
    got = bootstrap_many({"x": x, "same": x.copy(), "double": 2 * x, "shift": x + 1}, n_resamples=300, seed=9)
    single = bootstrap_ci(x, n_resamples=300, seed=9)
    assert got["x"] == pytest.approx(single, rel=1e-12)
    assert got["same"] == got["x"]
    # same user draws for every metric: a linear transform of one metric moves its interval exactly
    assert got["double"] == pytest.approx(tuple(2 * v for v in got["x"]), rel=1e-12)
    assert got["shift"] == pytest.approx(tuple(v + 1 for v in got["x"]), rel=1e-12)


def _slow_many(per_user: dict[str, np.ndarray], n_resamples: int, alpha: float, seed: int):
    """One resample at a time, the rng drawing one [1, n] row each (chunks of one resample)."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(per_user.values())))
    means = {name: [] for name in per_user}
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=(1, n))[0]
        for name, v in per_user.items():
            drawn = v[idx][~np.isnan(v[idx])]
            means[name].append(drawn.mean() if drawn.size else np.nan)
    out = {}
    for name, v in per_user.items():
        m = np.array(means[name])
        m = m[~np.isnan(m)]
        out[name] = (np.nanmean(v), *np.quantile(m, [alpha / 2, 1 - alpha / 2]))
    return out


def test_many_matches_slow_loop_with_nan_and_chunks(monkeypatch):
    rng = np.random.default_rng(5)
    n = 40
    a = rng.random(n)
    b = np.where(rng.random(n) < 0.7, np.nan, rng.random(n))  # mostly NaN: some resamples draw none
    monkeypatch.setattr(bootstrap, "_CHUNK_CELLS", n)  # one resample per chunk, as the slow loop draws
    got = bootstrap_many({"a": a, "b": b}, n_resamples=200, alpha=0.1, seed=3)
    expected = _slow_many({"a": a, "b": b}, 200, 0.1, 3)
    for name in ("a", "b"):
        assert got[name] == pytest.approx(expected[name], rel=1e-12)


def test_many_chunking_keeps_the_number_of_resamples(monkeypatch):
    x = np.random.default_rng(6).random(50)
    monkeypatch.setattr(bootstrap, "_CHUNK_CELLS", 50 * 7)  # chunks of 7, last one partial
    means = bootstrap._resampled_means(x[:, None], 100, seed=0)
    assert means.shape == (100, 1)
    assert np.all((means >= x.min()) & (means <= x.max()))


def test_many_edge_cases():
    got = bootstrap_many({"ok": np.array([1.0, 2.0]), "none": np.array([np.nan, np.nan])})
    assert got["ok"][0] == pytest.approx(1.5)
    assert all(np.isnan(got["none"]))
    assert bootstrap_many({}) == {}
    assert all(np.isnan(bootstrap_many({"e": np.array([])})["e"]))


def test_paired_detects_a_real_difference():
    rng = np.random.default_rng(7)
    a = rng.random(500)
    b = a + 0.1 + rng.normal(0, 0.02, 500)  # b is better by about 0.1
    worse = paired_bootstrap(a, b)
    assert worse.mean_diff == pytest.approx(-0.1, abs=0.01)
    assert worse.low < worse.high < 0
    assert not worse.better
    assert worse.p_value == 0.0  # no resample reaches 0
    better = paired_bootstrap(b, a)
    assert 0 < better.low < better.mean_diff < better.high
    assert better.better


def test_paired_does_not_detect_a_null_difference():
    rng = np.random.default_rng(8)
    a = rng.random(500)
    noise = rng.normal(0, 0.05, 500)
    b = a + (noise - noise.mean()) + 0.001  # mean shift 0.001, under half a standard error (0.05 / sqrt(500))
    res = paired_bootstrap(a, b)
    assert res.mean_diff == pytest.approx(-0.001)
    assert res.low < 0 < res.high
    assert not res.better
    assert res.p_value > 0.05


def test_paired_hand_cases():
    a = np.array([0.5, 0.7, 0.2])
    # constant difference 0.1: every resample mean is 0.1, none <= 0
    assert paired_bootstrap(a, a - 0.1) == PairedResult(pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1), 0.0)
    # zero difference: p-value 1 by definition
    same = paired_bootstrap(a, a)
    assert (same.mean_diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # differences (+1, -1): resample means -1 (1/4), 0 (1/2), 1 (1/4) -> observed mean 0 -> p = 1
    assert paired_bootstrap(np.array([1.0, 0.0]), np.array([0.0, 1.0]), n_resamples=500).p_value == 1.0
    # differences (2, 0, 0, 0) -> mean 0.5; resamples with no draw of user 0: (3/4)^4 = 0.316 -> p ~ 0.63
    p = paired_bootstrap(np.array([2.0, 0, 0, 0]), np.zeros(4), n_resamples=4000).p_value
    assert p == pytest.approx(2 * 0.75**4, abs=0.04)


def test_paired_drops_pairs_with_nan():
    rng = np.random.default_rng(9)
    a, b = rng.random(200), rng.random(200)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[3], b_nan[17] = np.nan, np.nan
    keep = np.ones(200, bool)
    keep[[3, 17]] = False
    assert paired_bootstrap(a_nan, b_nan) == paired_bootstrap(a[keep], b[keep])
    assert all(np.isnan([*vars(paired_bootstrap(np.array([np.nan]), np.array([1.0]))).values()]))


@pytest.mark.parametrize(("call", "match"), [
    (lambda: bootstrap_ci(np.ones(3), alpha=0.0), r"alpha must be in \(0, 1\)"),
    (lambda: bootstrap_ci(np.ones(3), alpha=1.0), r"alpha must be in \(0, 1\)"),
    (lambda: bootstrap_many({"a": np.ones(3)}, alpha=1.5), r"alpha must be in \(0, 1\)"),
    (lambda: bootstrap_ci(np.ones(3), n_resamples=0), "n_resamples must be an integer >= 1"),
    (lambda: paired_bootstrap(np.ones(3), np.ones(3), n_resamples=2.5), "n_resamples must be an integer >= 1"),
    (lambda: bootstrap_ci(np.ones((3, 2))), "values must be a 1-D array"),
    (lambda: bootstrap_many({"a": np.ones(3), "b": np.ones(4)}), "per_user arrays must have equal lengths"),
    (lambda: paired_bootstrap(np.ones(3), np.ones(4)), "a and b must hold the same users"),
])
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
