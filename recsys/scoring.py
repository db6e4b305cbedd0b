"""The one scoring path: blocks of users -> ranked item indices (and the model's score of each).

Evaluation, window scoring, drift, batch export, Spark and the pyfunc all turn users into lists
here, so a list means the same thing wherever it is made. Memory is bounded by
``block_size x n_items``; there is no Python loop over users.

A model is anything with ``score(users, history) -> float [b, n_items]`` (the stage-one scorers
of :mod:`recsys.scorers`, baselines, blends); a model that also has ``rank(users, history, k,
exclude)`` (the ranked pipeline) ranks itself, with the same order as ``score`` + :func:`top_k`
and the ranker's scores as values.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.console import bars
from recsys.scorers.base import Scorer
from recsys.topk import top_k

__all__ = ["rank_block", "iter_ranked", "rank_users"]


def rank_block(model: Scorer, users: np.ndarray, history: sp.csr_matrix, k: int, *, exclude_seen: bool = True,
               only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of one block of users.

    Args:
        model: a fitted model.
        users: int [b] user indices.
        history: [b, n_items] what the users have seen (rows aligned with ``users``): what the
            model reads, and what is excluded when ``exclude_seen``.
        k: list length (checked by the caller at its boundary).
        exclude_seen: drop the ``history`` items from the lists.
        only: bool [n_items]; when given, only these items are ranked.

    Returns:
        int64 [b, k] item indices best first (-1 padded) and float64 [b, k] the model's scores
        of them (NaN on padding).
    """
    exclude = history if exclude_seen else None
    rank = getattr(model, "rank", None)
    if rank is not None and only is None:
        return rank(users, history, k, exclude=exclude)
    scores = model.score(users, history)
    if only is not None:
        scores = np.where(only[None, :], scores, -np.inf)
    top = top_k(scores, k, exclude=exclude)
    values = np.take_along_axis(scores, np.maximum(top, 0), axis=1).astype(np.float64)
    return top, np.where(top >= 0, values, np.nan)


def iter_ranked(model: Scorer, users: np.ndarray, history: sp.csr_matrix, k: int, *, block_size: int = 1024,
                exclude_seen: bool = True, only: np.ndarray | None = None, show_progress: bool = False,
                desc: str = "scoring") -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """:func:`rank_block` over ``users`` in blocks of ``block_size``.

    Args:
        users: int [n] user indices.
        history: [n_users, n_items] indexed by user index (``history[users]`` is each block's).

    Yields:
        (offset of the block in ``users``, top int64 [b, k], scores float64 [b, k]).
    """
    users = np.asarray(users, dtype=np.int64)
    starts = range(0, len(users), max(1, block_size))
    for start in tqdm(starts, desc=desc, unit="block", disable=bars(show_progress), leave=False):
        block = users[start:start + block_size]
        top, values = rank_block(model, block, history[block], k, exclude_seen=exclude_seen, only=only)
        yield start, top, values


def rank_users(model: Scorer, users: np.ndarray, history: sp.csr_matrix, k: int, **kwargs
               ) -> tuple[np.ndarray, np.ndarray]:
    """All of :func:`iter_ranked` at once: int64 [n, k] lists and float64 [n, k] scores."""
    users = np.asarray(users, dtype=np.int64)
    top = np.full((len(users), k), -1, dtype=np.int64)
    values = np.full((len(users), k), np.nan)
    for start, block_top, block_values in iter_ranked(model, users, history, k, **kwargs):
        top[start:start + len(block_top)] = block_top
        values[start:start + len(block_top)] = block_values
    return top, values
