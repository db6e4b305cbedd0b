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

    Large blocks select with ``torch.topk`` on the scores themselves (:func:`_top_in_place`), small ones by a
    partition of each row's values (:func:`_partitioned`); neither sorts a whole row. Ties are broken by the
    lower item index, also at the selection boundary.
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
    if batch > 1 and scores.strides[0] == 0:  # one row for every user (popularity): rank it once
        return _top_k_shared(scores[0], batch, k, exclude)
    kk = min(k, n_items)
    if scores.size >= TORCH_MIN_SIZE and 0 < kk < n_items:
        if not (scores.dtype in _TORCH_DTYPES and scores.flags.writeable and scores.flags.c_contiguous):
            scores = np.array(scores, dtype=np.float64, order="C")  # a copy to select on (read-only, integer, ...)
        return np.pad(_top_in_place(scores, kk, exclude), ((0, 0), (0, k - kk)), constant_values=-1)
    dtype = scores.dtype if np.issubdtype(scores.dtype, np.floating) else np.float64
    # Ascending order of -score is descending score; NaN sorts last in numpy, so it acts like -inf.
    neg = np.negative(scores, dtype=dtype)
    if exclude is not None:
        _exclude(neg, exclude)
    if kk == 0:
        return np.full((batch, k), -1, dtype=np.int64)
    if kk < n_items:
        return np.pad(_partitioned(neg, kk), ((0, 0), (0, k - kk)), constant_values=-1)
    part = np.tile(np.arange(n_items), (batch, 1))
    values = np.take_along_axis(neg, part, axis=1)
    order = np.argsort(values, axis=1, kind="stable")  # ascending index first: ties go to the lower index
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)
    idx[~(np.take_along_axis(values, order, axis=1) < np.inf)] = -1
    if kk < k:
        idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
    return idx


TORCH_MIN_SIZE = 1 << 20
"""Blocks of at least this many scores take ``torch.topk`` (multi-threaded, about 3x faster than the partition
on 2 cores at 1,024 x 100k); a test sets it to 0 to drive every block through it."""


_TORCH_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _top_in_place(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> np.ndarray:
    """int64 [batch, k]: :func:`top_k` of a large float block by ``torch.topk`` on the scores themselves.

    The negated copy the partition reads is a second ``[batch, n_items]`` array, and writing it cost
    more than the selection (0.24 s a source against 0.11 s at 1,024 x 100k): here the excluded entries are
    set to ``-inf`` for the selection and their values put back before returning, so only the exclusions are
    copied. Rows the selection cannot settle exactly (a tie at the boundary, a NaN near the top, fewer than
    ``k`` numbers) take the partition on their own negated rows. ``torch.topk`` breaks ties arbitrarily, so it
    asks for ``k + 1``: where the ``k``-th value is strictly above the next, the ``k`` entries are the row's
    exact set, then ordered by (value, index). Not for an array another thread reads.
    """
    import torch

    ex = None if exclude is None else _checked(exclude, scores.shape)
    rows = cols = saved = None
    if ex is not None:
        rows, cols = _entries(ex)
        saved = scores[rows, cols]
    try:
        if rows is not None:
            scores[rows, cols] = -np.inf
        values, index = _top_by_chunks(torch.from_numpy(scores), k + 1)
    finally:
        if rows is not None:
            scores[rows, cols] = saved
    values, index = values.numpy(), index.numpy()
    # NaN sorts above everything in torch: a row with one near the top is left to the partition
    settled = (values[:, k - 1] > values[:, k]) & (values[:, k - 1] > -np.inf) & ~np.isnan(values).any(axis=1)
    values, index = values[:, :k], index[:, :k]
    order = np.lexsort((index, -values), axis=-1)
    out = np.take_along_axis(index, order, axis=1).astype(np.int64)
    if not settled.all():
        unsettled = np.flatnonzero(~settled)
        neg = np.negative(scores[unsettled])
        if ex is not None:
            _exclude(neg, ex[unsettled])
        out[unsettled] = _partitioned(neg, k)
    return out


def _top_by_chunks(scores, k: int) -> tuple:
    """The ``k`` largest entries of each row of a torch float block, best first (ties in any order).

    Each row is cut into chunks of :data:`CHUNK` columns, and only the ``k`` chunks with the highest maxima are
    searched (with the tail past the last whole chunk). Those chunks hold ``k`` entries at or above the lowest
    of their maxima and every skipped entry is at most that value, so the ``k`` found are the row's ``k``
    largest values: where the caller asks for one more than it keeps and finds the last two apart, the kept
    set is the row's exact set (a tie with a skipped entry is a tie at that boundary, re-selected exactly).
    At 512 x 100k, k = 101: one cheap pass for the maxima, then 6.5k columns a row, 0.055 s against 0.10 s for
    ``torch.topk`` over every column (one thread).

    Returns:
        torch values [b, k] and int64 column indices [b, k], best first.
    """
    import torch

    batch, n_items = scores.shape
    whole = n_items // CHUNK
    if 2 * k * CHUNK > n_items:  # the chunks would hold most of the row: a plain selection is as quick
        return torch.topk(scores, k, dim=1, largest=True, sorted=True)
    view = scores[:, :whole * CHUNK].view(batch, whole, CHUNK)
    chunk = torch.topk(view.amax(dim=2), k, dim=1, largest=True, sorted=False).indices
    searched = view[torch.arange(batch)[:, None], chunk].reshape(batch, k * CHUNK)  # contiguous runs: cheap copy
    tail = n_items - whole * CHUNK
    if tail:
        searched = torch.cat([searched, scores[:, whole * CHUNK:]], dim=1)
    values, at = torch.topk(searched, k, dim=1, largest=True, sorted=True)
    in_chunk = at < k * CHUNK
    first = torch.gather(chunk, 1, torch.where(in_chunk, at, 0) // CHUNK) * CHUNK  # the chunk's first column
    return values, torch.where(in_chunk, first + at % CHUNK, at - k * CHUNK + whole * CHUNK)


CHUNK = 64
"""Columns per chunk of :func:`_top_by_chunks`: the top 101 of 100k items then reads 1,562 maxima and 6.5k
columns a row (32: 0.056 s, 64: 0.055, 128: 0.062 at 512 x 100k on one thread). Rows shorter than twice the
columns searched (13k items for the top 101) take ``torch.topk`` over every column: at 10k items the chunks
were no quicker (0.034 s against 0.032)."""


def _partitioned(neg: np.ndarray, k: int) -> np.ndarray:
    """int64 [batch, k]: each row's ``k`` lowest entries of ``neg``, lowest first, ties to the lower index.

    Each row's ``k``-th lowest value comes from a partition of the values alone, and the entries at
    or under it (``k`` of them, more on a tie) are then ordered by value and index. Unlike an
    ``argpartition``, nothing of the row's size but one float copy is made, and ties at the
    boundary need no second pass. Entries that are NaN or ``inf`` (excluded) never count; rows
    with fewer are padded with -1.
    """
    batch = neg.shape[0]
    kth = np.partition(neg, k - 1, axis=1)[:, k - 1:k]
    kth[np.isnan(kth)] = np.inf  # fewer than k numbers in the row (NaN sorts last): all of them
    rows, cols = np.nonzero((neg <= kth) & (neg < np.inf))
    values = neg[rows, cols]
    order = np.lexsort((cols, values, rows))
    rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=batch)
    at = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = at < k
    out = np.full((batch, k), -1, dtype=np.int64)
    out[rows[keep], at[keep]] = cols[keep]
    return out


def _top_k_shared(row: np.ndarray, batch: int, k: int, exclude: sp.csr_matrix | None) -> np.ndarray:
    """:func:`top_k` of ``batch`` copies of ``row``: the row's top ``k + (most items one row excludes)``
    once, then each row's first ``k`` of them that it does not exclude (the same lists, ties included)."""
    if exclude is None:
        return np.repeat(top_k(row[None, :], k), batch, axis=0)
    ex = _checked(exclude, (batch, len(row))).copy()
    ex.eliminate_zeros()
    shared = top_k(row[None, :], k + int(np.diff(ex.indptr).max(initial=0)))[0]
    shared = shared[shared >= 0]
    hidden = np.asarray(ex[:, shared].toarray() != 0) if len(shared) else np.zeros((batch, 0), bool)
    keep = np.argsort(hidden, axis=1, kind="stable")[:, :k]  # the shown items first, in the row's order
    out = np.where(np.take_along_axis(hidden, keep, axis=1), -1, shared[keep]) if len(shared) else keep
    return np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1).astype(np.int64)


def _checked(exclude: sp.csr_matrix | sp.csr_array, shape: tuple[int, int]) -> sp.csr_matrix:
    """``exclude`` as CSR, once it is known to be sparse and of the scores' shape."""
    if not sp.issparse(exclude) or exclude.shape != shape:
        raise ValueError(f"exclude must be a scipy sparse matrix of the scores' shape {shape}, "
                         f"got {getattr(exclude, 'shape', type(exclude).__name__)}")
    return sp.csr_matrix(exclude)


def _entries(ex: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the entries ``ex`` excludes (its stored nonzeros)."""
    keep = ex.data != 0
    return np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr))[keep], ex.indices[keep]


def _exclude(neg: np.ndarray, exclude: sp.csr_matrix | sp.csr_array) -> None:
    neg[_entries(_checked(exclude, neg.shape))] = np.inf
