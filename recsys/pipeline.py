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
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.table import FeatureConfig, build_ranking_table
from recsys import contract as C
from recsys.candidates import CandidateConfig, generate_candidates
from recsys.errors import NotFittedError
from recsys.ranker import RankerEnsemble
from recsys.scorers import Scorer
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


def user_cuts(events: pl.DataFrame, users: np.ndarray) -> pl.DataFrame:
    """Scoring-time cut of each user: just after their last event (or after the last event of all).

    Features then read everything the model was given about the user, and nothing later.
    """
    last = events.group_by(C.USER_IDX).agg(pl.col(C.TS).max().alias("cut"))
    # no event at all (the data given names only items the model does not know): now
    fallback = events[C.TS].max() if events.height else datetime.now(UTC).replace(tzinfo=None)
    frame = pl.DataFrame({C.USER_IDX: np.asarray(users, dtype=np.int64)})
    return frame.join(last, on=C.USER_IDX, how="left").with_columns(
        (pl.col("cut").fill_null(fallback) + pl.duration(microseconds=1)).cast(C.DATETIME))


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

    def stage_scores(self, users: np.ndarray, history: sp.csr_matrix) -> dict[str, np.ndarray]:
        """Every stage-one model's scores of the block, plus the history-centroid cosine."""
        state = self._state()
        scores = {name: model.score(users, history) for name, model in state.models.items()}
        if state.item_vectors is not None:
            weights = sp.csr_matrix(history, dtype=np.float32, copy=True)
            weights.data[:] = 1.0
            centroid = np.asarray(weights @ state.item_vectors)
            centroid /= np.maximum(np.linalg.norm(centroid, axis=1, keepdims=True), 1e-12)
            scores[HIST_COS] = centroid @ state.item_vectors.T
        return scores

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
        scores = self.stage_scores(users, history) if scores is None else scores
        exclude = history if exclude_seen else sp.csr_matrix(history.shape, dtype=np.float32)
        candidates = generate_candidates(scores, users, exclude, sources=state.sources, config=state.candidates,
                                         cold=state.cold)
        cuts = user_cuts(state.events, users) if cuts is None else cuts
        return build_ranking_table(candidates, state.events, state.items, cuts, config=state.features)

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items]: the ranked candidates on top, the fallback order below them elsewhere."""
        return self._dense(users, history)[0]

    def rank(self, users: np.ndarray, history: sp.csr_matrix, k: int, exclude: sp.csr_matrix | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Each user's top ``k`` (the list order of :meth:`score`) and the ranker's score of each.

        Items past the candidates carry a score below every candidate's (the ``cold_by`` model's
        order), so a list longer than the candidates still reads best first.

        Returns:
            int64 [b, k] item indices (-1 padded when fewer than ``k`` are left after ``exclude``)
            and float64 [b, k] scores (NaN on the padding).
        """
        order, value = self._dense(users, history, ranker_values=True, exclude_seen=exclude is not None)
        top = top_k(order, k, exclude=exclude)
        scores = np.take_along_axis(value, np.maximum(top, 0), axis=1).astype(np.float64)
        return top, np.where(top >= 0, scores, np.nan)

    def _dense(self, users: np.ndarray, history: sp.csr_matrix, ranker_values: bool = False,
               exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """The list order as dense scores (candidates ``-position``), and optionally the ranker's scores."""
        state = self._state()
        users = np.asarray(users, dtype=np.int64)
        if state.ranker is None:  # one stage-one model serves: its own scores are the order and the values
            scores = state.models[state.sources[0]].score(users, history)
            return scores.astype(np.float32, copy=False), (scores.astype(np.float64) if ranker_values else None)
        scores = self.stage_scores(users, history)
        table = self.candidate_table(users, history, scores=scores, exclude_seen=exclude_seen)
        ranked = table.select(C.USER_IDX, C.ITEM_IDX, pl.Series("s", state.ranker.predict(table)))
        items = ranked[C.ITEM_IDX].to_numpy()
        ranked = ranked.with_columns(pl.Series("cold", state.cold[items])).pipe(_positions, self.cold)
        row_of = np.full(int(users.max()) + 1 if len(users) else 0, -1, dtype=np.int64)
        row_of[users] = np.arange(len(users))
        rows = row_of[ranked[C.USER_IDX].to_numpy()]
        fallback = np.asarray(scores.get(state.candidates.cold_by, next(iter(scores.values()))), dtype=np.float64)
        span = np.ptp(fallback, axis=1, keepdims=True)
        below = (fallback - fallback.min(axis=1, keepdims=True)) / np.where(span > 0, span, 1.0) - 2.0  # [-2, -1]
        top = -ranked["position"].to_numpy().astype(np.float64)
        order = (top.min() if len(top) else 0.0) + below
        order[rows, items] = top
        if not ranker_values:
            return order.astype(np.float32), None
        lowest = np.full(len(users), np.inf)
        np.minimum.at(lowest, rows, ranked["s"].to_numpy())  # each user's lowest candidate score
        lowest[np.isinf(lowest)] = 0.0
        value = lowest[:, None] + below
        value[rows, items] = ranked["s"].to_numpy()
        return order.astype(np.float32), value


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
