"""Candidate generation: the union of each source's top-N, flagged by source, scored by every model.

The ranker can only reorder what this stage hands it, so its recall@N is measured and logged
(``candidate_recall``). Every candidate carries the score of *every* stage-one model, not
only of the source that proposed it, standardised per user over the whole catalogue
(``score_<model>``): a z-score is comparable between users, which a raw LightFM or cosine
score is not, and it is the "text score calibrated against warm scores" a new item needs to
compete. A ``cold`` source adds the best new items by one model (the text tower: new items
have text but no history), so they reach the ranker at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.arrays import distinct
from recsys import contract as C
from recsys.config import check_at_least
from recsys.scorers.factor_scores import FactorScores
from recsys.scorers.item_item import NeighbourScores
from recsys.topk import top_k

__all__ = ["CandidateConfig", "generate_candidates", "candidate_recall", "standardise_rows", "standardised_at",
           "FactorScores", "Lazy", "dense_scores", "COLD_SOURCE"]

COLD_SOURCE = "cold"
"""Name of the source that proposes new (no-interaction) items."""


@dataclass(frozen=True)
class CandidateConfig:
    """How many candidates each source proposes per user."""

    n_per_source: int = 100
    """Top-N of each source model (LightFM, text tower, EASE, recent popularity); >= 1."""
    n_cold: int = 20
    """Top-N among the new items (no interaction before the cut) by ``cold_by``; 0 turns it off."""
    cold_by: str = "text"
    """Model whose scores choose the new-item candidates."""
    new_items: bool = True
    """False: no source proposes a new item (the ablation that measures what new items on merit are worth;
    the text tower and LightFM's features score new items too, so turning ``n_cold`` off alone keeps some)."""

    def __post_init__(self) -> None:
        check_at_least(self, n_per_source=1, n_cold=0)


def standardise_rows(scores: np.ndarray, top: int | None = None) -> np.ndarray:
    """float64 per-row z-scores, with the mean and std of each row's ``top`` highest scores (all when None).

    One user's scores of one model, made comparable across users and models; the blend of
    ``training/blend.py`` standardises by the top of each list, the candidate features by all of it.
    """
    scores = np.asarray(scores, dtype=np.float64)
    basis = scores if top is None or top >= scores.shape[1] else -np.partition(-scores, top - 1, axis=1)[:, :top]
    mean = basis.mean(axis=1, keepdims=True)
    std = basis.std(axis=1, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


def _z_at(values: np.ndarray, mean: np.ndarray, std: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 z-scores of gathered ``values`` against their row's mean and spread (a flat row: 0)."""
    return ((values - mean[rows]) / np.where(std > 0, std, 1.0)[rows]).astype(np.float32)


def row_moments(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean and standard deviation of each row, accumulated in float64 without a float64 copy.

    From the sum and the sum of squares (a block's float64 copy is 800 MB a model at 100k items,
    and ``std`` makes two); scores are standardised, so the cancellation in ``E[x^2] - mean^2`` is
    negligible (~1e-14 against the direct formula).
    """
    if scores.shape[0] > 1 and scores.strides[0] == 0:  # the same row for every user: once
        mean, std = row_moments(scores[:1])
        return np.repeat(mean, scores.shape[0]), np.repeat(std, scores.shape[0])
    n = max(scores.shape[1], 1)
    mean = scores.sum(axis=1, dtype=np.float64) / n
    square = np.einsum("ij,ij->i", scores, scores, dtype=np.float64) / n
    return mean, np.sqrt(np.maximum(square - mean**2, 0.0))


def standardised_at(scores: np.ndarray | FactorScores | NeighbourScores, rows: np.ndarray, items: np.ndarray
                    ) -> np.ndarray:
    """``standardise_rows(scores)[rows, items]`` as float32: only the gathered pairs are standardised.

    Lazy block scores bring each row's exact mean and spread over the catalogue (``moments``); dense ones are
    read for them.
    """
    if isinstance(scores, Lazy):
        return _z_at(scores.at(rows, items).astype(np.float64), *scores.moments, rows)
    scores = np.asarray(scores)
    return _z_at(scores[rows, items].astype(np.float64), *row_moments(scores), rows)


Lazy = FactorScores | NeighbourScores
"""Block scores that are never made dense for the candidates: ranked and read at the pairs by their own
methods (``top_k``, ``at``, ``moments``)."""


def dense_scores(scores: np.ndarray | Lazy, columns: np.ndarray | None = None) -> np.ndarray:
    """float [b, n_items]: a block's scores in full (``columns``: only those items), for the few uses that
    read every item."""
    if isinstance(scores, FactorScores):
        return scores.dense(columns=columns)
    full = scores.dense() if isinstance(scores, Lazy) else np.asarray(scores)
    return full if columns is None else full[:, columns]


def generate_candidates(scores: Mapping[str, np.ndarray | Lazy], users: np.ndarray, exclude: sp.csr_matrix, *,
                        sources: Sequence[str], config: CandidateConfig = CandidateConfig(),
                        cold: np.ndarray | None = None) -> pl.DataFrame:
    """Candidates of a block of users, one row per (user, item), with source flags and every score.

    Args:
        scores: model name -> float [b, n_items] scores of the block (rows aligned with ``users``), or
            :data:`Lazy` scores (ranked and read without a dense block).
        users: int [b] user indices.
        exclude: [b, n_items] sparse history; its items are never candidates.
        sources: models (keys of ``scores``) whose top ``config.n_per_source`` become candidates.
        config: list sizes and the new-item source.
        cold: bool [n_items], True for new items; with ``config.n_cold`` > 0 the top new items by
            ``config.cold_by`` are added (flag ``src_cold``); with ``config.new_items`` False no new item
            is a candidate.

    Returns:
        ``user_idx`` Int64, ``item_idx`` Int64, ``src_<source>`` Int8 (0/1) per source, and
        ``score_<model>`` Float32 per model of ``scores`` (per-user z-score over the catalogue),
        sorted by user then item.

    Raises:
        ValueError: a source or ``cold_by`` that is not a key of ``scores``.
    """
    ranking = [*sources, *([config.cold_by] if cold is not None and config.n_cold else [])]
    missing = [s for s in ranking if s not in scores]
    if missing:
        raise ValueError(f"candidate source(s) {missing} have no scores; models scored: {sorted(scores)}")
    users = np.asarray(users, dtype=np.int64)
    n_items = exclude.shape[1]
    ranked = {s: scores[s] for s in sources}
    if cold is not None and not config.new_items:
        ranked = {s: np.where(cold[None, :], -np.inf, dense_scores(v)) for s, v in ranked.items()}
    picks: dict[str, np.ndarray] = {
        s: v.top_k(config.n_per_source, exclude) if isinstance(v, Lazy)
        else top_k(v, config.n_per_source, exclude=exclude) for s, v in ranked.items()}
    if cold is not None and config.n_cold and config.new_items:
        # the flag column is there even when no item is new (a catalogue whose every item has events): a ranker
        # trained with new items in its label window needs it at every later scoring
        new = np.flatnonzero(cold)  # ascending: ties still go to the lower item index
        top = top_k(dense_scores(scores[config.cold_by], new), config.n_cold,
                    exclude=sp.csr_matrix(exclude)[:, new]) if len(new) else np.empty((len(users), 0), np.int64)
        picks[COLD_SOURCE] = np.where(top >= 0, new[np.maximum(top, 0)], -1)
    keys_by_source = {}
    for source, top in picks.items():
        rows = np.repeat(np.arange(len(users)), top.shape[1])
        flat = top.ravel()
        keep = flat >= 0
        keys_by_source[source] = rows[keep] * n_items + flat[keep]
    keys = distinct(np.concatenate(list(keys_by_source.values()))) if keys_by_source else np.empty(0, np.int64)
    rows, items = np.divmod(keys, n_items)
    columns: dict[str, np.ndarray] = {C.USER_IDX: users[rows], C.ITEM_IDX: items}
    for source, source_keys in keys_by_source.items():  # keys are sorted and hold every source's keys
        flags = np.zeros(len(keys), np.int8)
        flags[np.searchsorted(keys, source_keys)] = 1
        columns[f"src_{source}"] = flags
    for name, matrix in scores.items():
        columns[f"score_{name}"] = standardised_at(matrix, rows, items)
    return pl.DataFrame(columns)


def candidate_recall(candidates: pl.DataFrame, truth: pl.DataFrame) -> dict[str, float]:
    """Share of relevant (user, item) pairs the candidates contain: what the ranker can reach at most.

    Args:
        candidates: ``user_idx``, ``item_idx`` and ``src_*`` flags (``generate_candidates``).
        truth: relevant pairs ``user_idx``, ``item_idx`` (unique) of the evaluated users.

    Returns:
        ``recall`` over all sources, ``recall_<source>`` per source, ``per_user`` (mean over
        users of each user's recall) and ``candidates_per_user``.
    """
    if truth.height == 0:
        return {}
    hits = truth.join(candidates, on=[C.USER_IDX, C.ITEM_IDX], how="left")
    flags = [c for c in candidates.columns if c.startswith("src_")]
    found = hits.with_columns(pl.any_horizontal([pl.col(f).fill_null(0) > 0 for f in flags]).alias("_hit"))
    out = {"recall": float(found["_hit"].mean())}
    out |= {f"recall_{f.removeprefix('src_')}": float((hits[f].fill_null(0) > 0).mean()) for f in flags}
    out["per_user"] = float(found.group_by(C.USER_IDX).agg(pl.col("_hit").mean())["_hit"].mean())
    out["candidates_per_user"] = float(candidates.height / max(candidates[C.USER_IDX].n_unique(), 1))
    return out
