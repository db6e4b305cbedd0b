"""The ranked pipeline at scoring time: stage-one scores -> candidates -> features -> ranker.

Training (``training/fit_pipeline.py``) and every use of a fitted pipeline (the evaluation,
batch export, the registered model) go through :meth:`RankingPipeline.candidate_table`, so
the ranker always reads features built by the same function from the same kind of data;
lists come from :meth:`RankingPipeline.rank`, which :mod:`recsys.scoring` calls.

Items outside a user's candidates still get a score (the ``cold_by`` model's, placed below
every candidate), so a ranking over any subset of the catalogue, e.g. only the new items, is
well defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.history import UserEvents
from features.popularity import ItemTimeline
from features.table import FeatureConfig, build_ranking_table
from recsys import contract as C
from recsys.candidates import CandidateConfig, FactorScores, Lazy, generate_candidates
from recsys.errors import NotFittedError
from recsys.ranker import RankerEnsemble
from recsys.scorers import Scorer
from recsys.scorers.factor_scores import ItemSide
from recsys.topk import top_k

__all__ = ["PipelineState", "RankingPipeline", "ColdExposure", "HIST_COS", "user_cuts"]

HIST_COS = "hist_cos"
"""Score name of the cosine between a candidate's text vector and the user's history centroid."""


@dataclass(frozen=True)
class ColdExposure:
    """A new-item quota: ``slots`` of the first ``page`` positions of every list go to new items.

    Every warm signal outranks a new item, so the ranker alone rarely shows one. A quota, unlike
    an additive boost, moves a controlled number of them: the best new items in the ranker's
    order (which reads the text score) take the reserved positions while new candidates last.
    """

    slots: int = 0
    """New items guaranteed in the first ``page`` positions; 0 = the ranker's own order."""
    page: int = 20
    """The list length the quota applies to (the first screen)."""
    place: Literal["spread", "end"] = "spread"
    """``spread``: positions page/slots, 2*page/slots, ..., page; ``end``: the last ``slots`` of the page."""

    def __post_init__(self) -> None:
        if not 0 <= self.slots <= self.page or self.page < 1:
            raise ValueError(f"ColdExposure needs 0 <= slots <= page and page >= 1; got {self.slots}, {self.page}")
        if self.place not in ("spread", "end"):
            raise ValueError(f"Invalid ColdExposure.place {self.place!r}. Must be one of spread, end")

    def reserved(self) -> np.ndarray:
        """int64 [slots]: the reserved 1-based positions, increasing."""
        if self.place == "end":
            return np.arange(self.page - self.slots + 1, self.page + 1, dtype=np.int64)
        return np.ceil(self.page * np.arange(1, self.slots + 1) / self.slots - 1e-9).astype(np.int64)

    @property
    def label(self) -> str:
        """Short name: ``cold4of20_spread``."""
        return f"cold{self.slots}of{self.page}_{self.place}"


@dataclass(frozen=True)
class PipelineState:
    """Everything a fitted pipeline scores with."""

    models: dict[str, Scorer]
    """Fitted stage-one models by name; each scores every block (their scores are features)."""
    sources: tuple[str, ...]
    """Models whose top-N become candidates."""
    ranker: RankerEnsemble | None
    """The learning-to-rank model over the feature table; None when a single stage-one model ranked
    held-out users better than the ranked pipeline (training's gate): then ``sources[0]`` ranks alone."""
    events: pl.DataFrame
    """Positive events the features read: ``user_idx``, ``item_idx``, ``timestamp``."""
    items: pl.DataFrame
    """The catalogue by ``item_idx`` (category, published_at, description)."""
    cold: np.ndarray
    """bool [n_items]: items without a positive event in ``events``."""
    candidates: CandidateConfig
    features: FeatureConfig
    item_vectors: np.ndarray | None = None
    """float32 [n_items, d] L2-normalised text vectors for the history-centroid cosine, or None."""

    @cached_property
    def timeline(self) -> ItemTimeline:
        """``events`` indexed by item, built at the first block and read by every block after it."""
        return ItemTimeline.from_events(self.events)

    @cached_property
    def user_events(self) -> UserEvents:
        """``events`` indexed by user: each block's history features slice their users' events."""
        return UserEvents.from_events(self.events)

    @cached_property
    def last_events(self) -> np.ndarray:
        """Each user's last event (:func:`last_events`): the scoring-time cuts of every block."""
        return last_events(self.events)

    @cached_property
    def vector_side(self) -> ItemSide | None:
        """The text vectors as the history cosine reads them, with their moments (its per-user spread, exactly)."""
        return None if self.item_vectors is None else ItemSide(self.item_vectors)


def user_cuts(events: pl.DataFrame, users: np.ndarray, last: np.ndarray | None = None) -> pl.DataFrame:
    """Scoring-time cut of each user: just after their last event (or after the last event of all).

    Features then read everything the model was given about the user, and nothing later.
    ``last`` (:func:`last_events` of ``events``, computed once) spares each block a pass over the log.
    """
    last = last_events(events) if last is None else last
    users = np.asarray(users, dtype=np.int64)
    stamp = np.full(len(users), _NONE, dtype=np.int64)
    inside = (users >= 0) & (users < len(last))
    stamp[inside] = last[users[inside]]
    if (missing := stamp == _NONE).any():  # no event at all: after the last event of all (now, without one)
        known = last[last != _NONE]
        stamp[missing] = int(known.max()) if len(known) else int(datetime.now(UTC).timestamp() * 1e6)
    return pl.DataFrame({C.USER_IDX: users, "cut": pl.Series(stamp + 1, dtype=pl.Int64).cast(C.DATETIME)})


_NONE = np.iinfo(np.int64).min


def last_events(events: pl.DataFrame) -> np.ndarray:
    """int64 [max user_idx + 1]: each user's last event in µs since the epoch (``_NONE`` without one)."""
    if not events.height:
        return np.empty(0, dtype=np.int64)
    last = events.group_by(C.USER_IDX).agg(pl.col(C.TS).max().cast(pl.Int64))
    out = np.full(int(last[C.USER_IDX].max()) + 1, _NONE, dtype=np.int64)
    out[last[C.USER_IDX].to_numpy()] = last[C.TS].to_numpy()
    return out


class RankingPipeline:
    """A fitted candidates -> features -> ranker pipeline: ``score`` as any scorer, ``rank`` with the ranker's scores.

    Args:
        state: the fitted parts.
        name: result-table name.
        cold: the cold-exposure setting (:class:`ColdExposure`; default: the ranker's own order).
    """

    def __init__(self, state: PipelineState | None = None, *, name: str = "pipeline",
                 cold: ColdExposure = ColdExposure()) -> None:
        self.state, self.name, self.cold = state, name, cold

    def with_cold(self, cold: ColdExposure, name: str | None = None) -> RankingPipeline:
        """The same fitted pipeline with another cold-exposure setting (nothing refits)."""
        return RankingPipeline(self.state, name=name or f"{self.name}_{cold.label}", cold=cold)

    def _state(self) -> PipelineState:
        if self.state is None:
            raise NotFittedError("RankingPipeline has no fitted state; build it with training.fit_pipeline")
        return self.state

    def stage_scores(self, users: np.ndarray, history: sp.csr_matrix) -> dict[str, np.ndarray | Lazy]:
        """Every stage-one model's scores of the block, plus the history-centroid cosine.

        Models that can (LightFM, the text tower, a sparse item-kNN) give :data:`~recsys.candidates.Lazy`
        scores: ranked and read at the candidates with their exact row moments, never made dense. The
        cosine is a feature, never a source.
        """
        state = self._state()
        scores: dict[str, np.ndarray | Lazy] = {
            name: model.block_scores(users, history) if hasattr(model, "block_scores") else model.score(users, history)
            for name, model in state.models.items()}
        if state.vector_side is not None:
            weights = sp.csr_matrix(history, dtype=np.float32, copy=True)
            weights.data[:] = 1.0
            centroid = np.asarray(weights @ state.vector_side.items)
            centroid /= np.maximum(np.linalg.norm(centroid, axis=1, keepdims=True), 1e-12)
            scores[HIST_COS] = FactorScores(centroid, state.vector_side)
        return scores

    def candidates(self, users: np.ndarray, history: sp.csr_matrix, scores: dict[str, np.ndarray] | None = None,
                   exclude_seen: bool = True) -> pl.DataFrame:
        """The block's candidates with their source flags and stage-one scores, before any feature
        (:func:`recsys.candidates.generate_candidates`; the arguments as for :meth:`candidate_table`)."""
        state = self._state()
        scores = self.stage_scores(users, history) if scores is None else scores
        exclude = history if exclude_seen else sp.csr_matrix(history.shape, dtype=np.float32)
        return generate_candidates(scores, users, exclude, sources=state.sources, config=state.candidates,
                                   cold=state.cold)

    def candidate_table(self, users: np.ndarray, history: sp.csr_matrix, cuts: pl.DataFrame | None = None,
                        scores: dict[str, np.ndarray] | None = None, exclude_seen: bool = True) -> pl.DataFrame:
        """The (user, candidate) feature table of a block: what the ranker reads.

        Args:
            users: int [b] user indices.
            history: [b, n_items] what the users have seen (never a candidate).
            cuts: ``user_idx``, ``cut``: features read only events before each user's cut;
                None = just after the user's last event (scoring time).
            scores: precomputed :meth:`stage_scores` of the block.
            exclude_seen: False lets the items in ``history`` be candidates too (re-recommending).
        """
        state = self._state()
        candidates = self.candidates(users, history, scores, exclude_seen)
        cuts = user_cuts(state.events, users, state.last_events) if cuts is None else cuts
        return build_ranking_table(candidates, state.events, state.items, cuts, config=state.features,
                                   timeline=state.timeline, by_user=state.user_events)

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items]: the ranked candidates on top, the fallback order below them elsewhere."""
        return self._dense(users, history)

    def rank(self, users: np.ndarray, history: sp.csr_matrix, k: int, exclude: sp.csr_matrix | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Each user's top ``k`` (the list order of :meth:`score`) and the ranker's score of each.

        Built from the ranked candidates alone; only a user left with fewer than ``k`` of them
        (after ``exclude``) reads the fallback order over the catalogue, so a block costs its
        candidates, not ``users x items`` (no dense order at export time). Items past the
        candidates carry a score below every candidate's (the ``cold_by`` model's order), so a
        list longer than the candidates still reads best first.

        Returns:
            int64 [b, k] item indices (-1 padded when fewer than ``k`` are left after ``exclude``)
            and float64 [b, k] scores (NaN on the padding).
        """
        state = self._state()
        users = np.asarray(users, dtype=np.int64)
        if state.ranker is None:  # one stage-one model serves: its own scores are the order and the values
            alone = state.models[state.sources[0]].score(users, history).astype(np.float32, copy=False)
            top = top_k(alone, k, exclude=exclude)
            values = np.take_along_axis(alone, np.maximum(top, 0), axis=1).astype(np.float64)
            return top, np.where(top >= 0, values, np.nan)
        scores = self.stage_scores(users, history)
        rows, items, position, value = self._ranked(users, history, scores, exclude_seen=exclude is not None)
        n_items = history.shape[1]
        if exclude is not None and exclude is not history and len(rows):  # the candidates already leave history out
            excluded = sp.csr_matrix(exclude).tocoo()
            keep = ~np.isin(rows * n_items + items, excluded.row.astype(np.int64) * n_items + excluded.col)
            rows, items, position, value = rows[keep], items[keep], position[keep], value[keep]
        order = np.lexsort((position, rows))
        rows, items, value = rows[order], items[order], value[order]
        counts = np.bincount(rows, minlength=len(users))
        at = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        top = np.full((len(users), k), -1, dtype=np.int64)
        values = np.full((len(users), k), np.nan)
        placed = at < k
        top[rows[placed], at[placed]] = items[placed]
        values[rows[placed], at[placed]] = value[placed]
        short = np.flatnonzero(counts < k)
        if len(short):  # the fallback order fills what the candidates leave, below each user's lowest candidate
            lowest = np.full(len(users), np.inf)
            np.minimum.at(lowest, rows, value)
            lowest[np.isinf(lowest)] = 0.0
            below = _below(_fallback(scores, state, short))
            mine = np.isin(rows, short)  # a user's own candidates are never repeated by the fallback
            below[np.searchsorted(short, rows[mine]), items[mine]] = -np.inf
            fill = top_k(below, k, exclude=None if exclude is None else sp.csr_matrix(exclude)[short])
            slot = counts[short, None] + np.arange(k)[None, :]
            ok = (slot < k) & (fill >= 0)
            r, c = np.nonzero(ok)
            top[short[r], slot[r, c]] = fill[r, c]
            values[short[r], slot[r, c]] = lowest[short[r]] + below[r, fill[r, c]]
        return top, values

    def _ranked(self, users: np.ndarray, history: sp.csr_matrix, scores: dict[str, np.ndarray | Lazy],
                exclude_seen: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The block's candidates ranked: block row, item, 1-based list position (quota applied), ranker score."""
        state = self._state()
        table = self.candidate_table(users, history, scores=scores, exclude_seen=exclude_seen)
        ranked = table.select(C.USER_IDX, C.ITEM_IDX, pl.Series("s", state.ranker.predict(table)))
        items = ranked[C.ITEM_IDX].to_numpy()
        ranked = ranked.with_columns(pl.Series("cold", state.cold[items])).pipe(_positions, self.cold)
        row_of = np.full(int(users.max()) + 1 if len(users) else 0, -1, dtype=np.int64)
        row_of[users] = np.arange(len(users))
        return (row_of[ranked[C.USER_IDX].to_numpy()], ranked[C.ITEM_IDX].to_numpy(),
                ranked["position"].to_numpy().astype(np.float64), ranked["s"].to_numpy().astype(np.float64))

    def _dense(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """The list order as dense float32 scores: candidates ``-position``, the fallback order below them."""
        state = self._state()
        users = np.asarray(users, dtype=np.int64)
        if state.ranker is None:  # one stage-one model serves: its own scores are the order
            return state.models[state.sources[0]].score(users, history).astype(np.float32, copy=False)
        scores = self.stage_scores(users, history)
        rows, items, position, _ = self._ranked(users, history, scores, exclude_seen=True)
        shift = -position.max() if len(position) else 0.0
        order = np.empty(history.shape, dtype=np.float32)
        for lo in range(0, len(users), _FALLBACK_ROWS):  # float64 a few rows at a time: [b, n_items] float64
            part = np.arange(lo, min(lo + _FALLBACK_ROWS, len(users)))  # arrays were 0.8 GB each at 100k items
            order[part] = shift + _below(_fallback(scores, state, part))
        order[rows, items] = -position
        return order


_FALLBACK_ROWS = 128
"""Rows of the fallback order computed at once in :meth:`RankingPipeline.score` (float64 [rows, n_items])."""


def _fallback(scores: dict[str, np.ndarray | Lazy], state: PipelineState, rows: np.ndarray) -> np.ndarray:
    """float64 [len(rows), n_items]: the ``cold_by`` model's scores of those block rows (the first model's if
    absent): the order of everything past a user's candidates."""
    found = scores.get(state.candidates.cold_by, next(iter(scores.values())))
    if isinstance(found, Lazy):
        return found.dense(rows).astype(np.float64)
    return np.asarray(found)[rows].astype(np.float64)


def _below(fallback: np.ndarray) -> np.ndarray:
    """Each row's fallback scores mapped onto [-2, -1]: below every candidate, in the fallback's order."""
    span = np.ptp(fallback, axis=1, keepdims=True)
    return (fallback - fallback.min(axis=1, keepdims=True)) / np.where(span > 0, span, 1.0) - 2.0


def _positions(ranked: pl.DataFrame, cold: ColdExposure) -> pl.DataFrame:
    """1-based list position of each candidate: the ranker's order, with the new-item quota applied.

    The best ``c = min(slots, new candidates)`` new items take the first ``c`` reserved
    positions; warm items fill the other positions of the page in the ranker's order; past the
    page, everything left follows the ranker's order. Scores ``-position`` then rank correctly.
    """
    order = pl.col("s").rank("ordinal", descending=True)
    if cold.slots == 0:
        return ranked.with_columns(order.over(C.USER_IDX).cast(pl.Float64).alias("position"))
    reserved = cold.reserved()
    frame = ranked.with_columns((order.over(C.USER_IDX, "cold") - 1).alias("_w"),
                                pl.min_horizontal(pl.col("cold").cast(pl.Int64).sum().over(C.USER_IDX),
                                                  len(reserved)).alias("_c"))
    within, used, is_cold = frame["_w"].to_numpy(), frame["_c"].to_numpy(), frame["cold"].to_numpy()
    # warm item r follows reserved slot k iff r >= reserved[k] - 1 - k (the warm items before it)
    before = reserved - 1 - np.arange(len(reserved))
    warm_at = within + 1 + np.minimum(used, np.searchsorted(before, within, side="right"))
    at = np.where(is_cold, reserved[np.minimum(within, len(reserved) - 1)], warm_at)
    placed = np.where(is_cold, within < used, warm_at <= cold.page)
    frame = frame.with_columns(pl.Series("_at", at), pl.Series("_in", placed))
    later = cold.page + order.over(C.USER_IDX, "_in")
    return frame.with_columns(pl.when("_in").then(pl.col("_at")).otherwise(later).cast(pl.Float64)
                              .alias("position")).drop("_w", "_c", "_at", "_in")
