"""Top-k selection and list-length checks: the one place a score matrix becomes ranked item lists.

Every caller that turns scores into lists (the evaluation, the ranking pipeline, candidates,
batch export, serving) uses :func:`top_k`; ``k`` coming from a person (a request, a flag) is
checked once at that boundary with :func:`check_k`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.errors import RecsysError

__all__ = ["top_k", "check_k", "check_positive", "DEFAULT_K", "MAX_K"]

DEFAULT_K = 10
"""List length when a request does not say."""
MAX_K = 10_000
"""The longest list one request may ask for (a guard against a typo that would return the catalogue)."""


def check_k(k) -> int:
    """``k`` from a person (request row, CLI flag) as an int in ``1..MAX_K``, or a ``RecsysError`` saying so."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= MAX_K:
        raise RecsysError(f"k must be between 1 and {MAX_K} (a whole number); got {k!r}")
    return int(k)


def check_positive(k: int, name: str = "k") -> int:
    """``k`` as an int when it is an integer >= 1 (a programming argument; ``ValueError`` otherwise)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")
    return int(k)


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores of each row, best first.

    Selection is ``np.argpartition`` followed by a sort of the ``k`` selected columns only (no full
    argsort). Ties are broken by the lower item index, also at the partition boundary.
    NaN and ``-inf`` scores and the excluded items are never returned (``+inf`` ranks first); a row
    with fewer than ``k`` such candidates is padded at the end with -1. ``scores`` is not modified.

    Args:
        scores: float ``[batch, n_items]`` (integer scores are cast to float64).
        k: number of items per row (>= 1); ``k > n_items`` pads the extra columns with -1.
        exclude: optional sparse ``[batch, n_items]``, rows aligned with ``scores``; its stored
            nonzero entries (e.g. training history) are removed from the candidates.

    Returns:
        int64 ``[batch, k]`` item indices, -1 = padding.

    Raises:
        ValueError: ``scores`` is not 2-D, ``k`` is not an integer >= 1, or ``exclude`` has a different shape.
    """
    k = check_positive(k)
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D array [batch, n_items], got shape {scores.shape}")
    batch, n_items = scores.shape
    dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float64
    # Ascending order of -score is descending score; NaN sorts last in numpy, so it acts like -inf.
    neg = np.negative(scores, dtype=dtype)
    if exclude is not None:
        _exclude(neg, exclude)
    kk = min(k, n_items)
    if kk == 0:
        return np.full((batch, k), -1, dtype=np.int64)
    if kk < n_items:
        part = np.argpartition(neg, kk - 1, axis=1)[:, :kk]
        part = _lowest_index_on_ties(neg, part)
    else:
        part = np.tile(np.arange(n_items), (batch, 1))
    part.sort(axis=1)  # ascending index first, so the stable sort below breaks ties by index
    values = np.take_along_axis(neg, part, axis=1)
    order = np.argsort(values, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)
    idx[~(np.take_along_axis(values, order, axis=1) < np.inf)] = -1
    if kk < k:
        idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
    return idx


def _exclude(neg: np.ndarray, exclude: sp.csr_matrix | sp.csr_array) -> None:
    if not sp.issparse(exclude) or exclude.shape != neg.shape:
        raise ValueError(f"exclude must be a scipy sparse matrix of the scores' shape {neg.shape}, "
                         f"got {getattr(exclude, 'shape', type(exclude).__name__)}")
    ex = sp.csr_matrix(exclude)
    rows = np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr))
    keep = ex.data != 0
    neg[rows[keep], ex.indices[keep]] = np.inf


def _lowest_index_on_ties(neg: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Fix rows where argpartition picked arbitrary members of a tie at the k-th value.

    A row is right when every entry <= the k-th value was selected; otherwise the entries strictly
    below it are kept and the remaining slots go to the lowest-index entries equal to it.
    Rows whose k-th value is not a candidate (inf/NaN) end up as padding, so they are skipped.
    """
    kk = part.shape[1]
    kth = np.take_along_axis(neg, part[:, -1:], axis=1)
    tied = np.flatnonzero((np.count_nonzero(neg <= kth, axis=1) > kk) & (kth[:, 0] < np.inf))
    if tied.size:
        sub, v = neg[tied], kth[tied]
        below = sub < v
        equal = sub == v
        need = kk - np.count_nonzero(below, axis=1)
        chosen = below | (equal & (np.cumsum(equal, axis=1) <= need[:, None]))
        part[tied] = np.nonzero(chosen)[1].reshape(tied.size, kk)
    return part
