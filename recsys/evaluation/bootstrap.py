"""Percentile bootstrap confidence intervals over users, for one metric, many, or a paired difference.

Every function resamples users with replacement from ``np.random.default_rng(seed)`` in the same
way, so for the same seed and the same number of users they see the same resamples:
``bootstrap_many({"m": x})["m"] == bootstrap_ci(x)`` for ``x`` without NaN, and all metrics of one
``bootstrap_many`` call share their resamples. A resample is a count vector ``w`` (how often each
user was drawn); the resampled mean of every metric at once is ``w @ values / w @ present``, which
is one matrix product per chunk of resamples, so memory stays at ``chunk x n_users``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedResult", "bootstrap_ci", "bootstrap_many", "paired_bootstrap"]

_CHUNK_CELLS = 2_000_000
"""Resamples x users drawn at once (~16 MB per float64 array), bounding memory for any n_users."""

_NAN3 = (float("nan"), float("nan"), float("nan"))


@dataclass(frozen=True)
class PairedResult:
    """Paired bootstrap of the per-user difference ``a - b``."""

    mean_diff: float
    """Observed mean of ``a - b`` over users present in both."""
    low: float
    """Lower percentile bound of the mean difference."""
    high: float
    """Upper percentile bound of the mean difference."""
    p_value: float
    """Two-sided bootstrap p-value: 2 x share of resampled means on the other side of 0 (or at 0), capped at 1."""

    @property
    def better(self) -> bool:
        """True when ``a`` is significantly higher than ``b`` (the whole interval is above 0)."""
        return bool(self.low > 0)


def _check_args(n_resamples: int, alpha: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (0.05 gives a 95% interval), got {alpha!r}")


def _vector(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-user values, got shape {values.shape}")
    return values


def _counts(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of float64 ``[chunk, n]`` draw counts; row ``i`` is one resample of ``n`` users."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _CHUNK_CELLS // n))
    for start in range(0, n_resamples, chunk):
        c = min(chunk, n_resamples - start)
        draws = rng.integers(0, n, size=(c, n)) + (np.arange(c) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=c * n).reshape(c, n).astype(np.float64)


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """``[n_resamples, m]`` means of each column of ``values [n, m]`` over resampled rows, NaN ignored.

    A resample in which a column has only NaN rows gives NaN for that column.
    """
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    both = np.concatenate([filled, present.astype(np.float64)], axis=1)
    m = values.shape[1]
    parts = []
    for w in _counts(values.shape[0], n_resamples, seed):
        sums = w @ both
        with np.errstate(divide="ignore", invalid="ignore"):
            parts.append(sums[:, :m] / sums[:, m:])
    return np.concatenate(parts)


def _interval(point: float, means: np.ndarray, alpha: float) -> tuple[float, float, float]:
    means = means[~np.isnan(means)]
    if np.isnan(point) or means.size == 0:
        return _NAN3
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(point), float(low), float(high)


def bootstrap_ci(values: np.ndarray, *, n_resamples: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-user values with a percentile bootstrap interval over users.

    NaN values (users a metric does not apply to) are dropped first. The interval is the
    ``alpha/2`` and ``1 - alpha/2`` quantiles (linear interpolation) of the means of
    ``n_resamples`` resamples of the remaining users drawn with replacement.

    Args:
        values: float ``[n_users]`` per-user metric values.
        n_resamples: number of bootstrap resamples (>= 1).
        alpha: 1 - confidence level, in (0, 1).
        seed: seed of ``np.random.default_rng``; the same seed gives the same interval.

    Returns:
        ``(mean, low, high)``; ``(nan, nan, nan)`` when no value is left after dropping NaN.

    Raises:
        ValueError: ``values`` is not 1-D, ``n_resamples < 1`` or ``alpha`` outside (0, 1).
    """
    _check_args(n_resamples, alpha)
    values = _vector(values, "values")
    values = values[~np.isnan(values)]
    if values.size == 0:
        return _NAN3
    means = _resampled_means(values[:, None], n_resamples, seed)[:, 0]
    return _interval(float(values.mean()), means, alpha)


def bootstrap_many(per_user: dict[str, np.ndarray], *, n_resamples: int = 1000, alpha: float = 0.05,
                   seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Bootstrap intervals of several metrics, all computed on the same user resamples.

    Rows are users. Each resample draws ``n_users`` row indices with replacement (NaN rows
    included) and every metric takes its mean over its non-NaN drawn rows; intervals are the
    ``alpha/2`` and ``1 - alpha/2`` quantiles of those means. Sharing the draws keeps the metrics'
    intervals comparable (and equal to :func:`bootstrap_ci` with the same seed for a metric without NaN).
    Resamples are processed in chunks, so memory is ``O(chunk x n_users)`` whatever ``n_resamples``.

    Args:
        per_user: metric name -> float ``[n_users]`` per-user values, all of the same length;
            NaN marks users the metric does not apply to.
        n_resamples: number of bootstrap resamples (>= 1).
        alpha: 1 - confidence level, in (0, 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        Metric name -> ``(nanmean, low, high)``; ``(nan, nan, nan)`` for a metric with only NaN
        (resamples in which a metric drew only NaN rows are left out of its quantiles).

    Raises:
        ValueError: an array is not 1-D, the lengths differ, ``n_resamples < 1`` or ``alpha`` outside (0, 1).
    """
    _check_args(n_resamples, alpha)
    columns = {name: _vector(v, f"per_user[{name!r}]") for name, v in per_user.items()}
    lengths = {v.size for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"per_user arrays must have equal lengths (one row per user), got "
                         f"{ {name: v.size for name, v in columns.items()} }")
    if not columns or lengths == {0}:
        return dict.fromkeys(columns, _NAN3)
    values = np.stack(list(columns.values()), axis=1)
    means = _resampled_means(values, n_resamples, seed)
    present = ~np.isnan(values)
    out = {}
    for j, name in enumerate(columns):
        point = float(values[present[:, j], j].mean()) if present[:, j].any() else float("nan")
        out[name] = _interval(point, means[:, j], alpha)
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> PairedResult:
    """Paired percentile bootstrap of the mean per-user difference ``a - b`` of two models.

    Users with NaN on either side are dropped, then users are resampled with replacement and
    the mean difference recomputed. ``p_value = min(1, 2 * share of resampled means <= 0)`` when
    the observed mean difference is positive (``>= 0`` when negative; 1.0 when it is exactly 0).

    Args:
        a: float ``[n_users]`` per-user metric of model A.
        b: float ``[n_users]`` per-user metric of model B on the same users, same order.
        n_resamples: number of bootstrap resamples (>= 1).
        alpha: 1 - confidence level, in (0, 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        :class:`PairedResult`; ``better`` is True when the interval lies above 0 (A beats B).
        All fields are NaN when no user has both values.

    Raises:
        ValueError: ``a``/``b`` not 1-D or of different lengths, ``n_resamples < 1`` or ``alpha`` outside (0, 1).
    """
    _check_args(n_resamples, alpha)
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.size != b.size:
        raise ValueError(f"a and b must hold the same users (equal lengths), got {a.size} and {b.size}")
    diff = (a - b)[~(np.isnan(a) | np.isnan(b))]
    if diff.size == 0:
        return PairedResult(*_NAN3, float("nan"))
    means = _resampled_means(diff[:, None], n_resamples, seed)[:, 0]
    mean_diff, low, high = _interval(float(diff.mean()), means, alpha)
    if mean_diff > 0:
        p_value = 2.0 * np.mean(means <= 0)
    elif mean_diff < 0:
        p_value = 2.0 * np.mean(means >= 0)
    else:
        p_value = 1.0
    return PairedResult(mean_diff, low, high, float(min(1.0, p_value)))
