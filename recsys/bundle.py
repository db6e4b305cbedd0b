"""The fitted pipeline as one self-contained object: what the registered model carries.

A :class:`ModelBundle` holds the ranking pipeline (text tower in its serving form, LightFM,
EASE, popularity, the LightGBM ranker), the id maps, each user's history and the popularity
fallback, so it answers "top k for user U" with no access to the training data. Batch export
hands it newer logs (:meth:`ModelBundle.with_interactions`) and items that arrived after
training (:meth:`ModelBundle.with_new_items`); neither refits anything.

On disk it is a folder of data (:mod:`recsys.model_format`: arrays, Parquet, LightGBM text, the
text encoder as a Hugging Face folder, JSON with a format version), never serialised Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import contract as C
from recsys.errors import DataContractError
from recsys.indexing import FitInput, IdIndex, event_matrix, id_lookup
from recsys.pipeline import ColdExposure, PipelineState, RankingPipeline
from recsys.scorers import TextScorer
from recsys.scoring import iter_ranked

__all__ = ["ModelBundle", "PaddedScores", "RESULT_SCHEMA", "FALLBACK"]

FALLBACK = "fallback"
RESULT_SCHEMA = {C.USER_ID: pl.String, C.ITEM_ID: pl.String, "score": pl.Float64, "rank": pl.Int64,
                 FALLBACK: pl.Boolean}
"""Output rows: one per (user, recommended item); ``fallback`` marks users the model does not know."""


@dataclass(frozen=True)
class PaddedScores:
    """A stage-one model that knows the first ``n_items`` items, scoring items added later at its row minimum.

    Collaborative models have nothing to say about an item without history; the new items
    reach the lists through the text tower (the ``cold_by`` candidates) and the ranker.
    """

    model: object
    n_items: int

    @property
    def name(self) -> str:
        return getattr(self.model, "name", type(self.model).__name__)

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        known = self.model.score(users, history[:, :self.n_items])
        pad = np.repeat(known.min(axis=1, keepdims=True), history.shape[1] - self.n_items, axis=1)
        return np.hstack([known, pad]).astype(np.float32, copy=False)


@dataclass(frozen=True)
class ModelBundle:
    """Everything needed to recommend, indexed like the training run."""

    pipeline: RankingPipeline
    user_ids: np.ndarray
    """str [n_users]: ``user_id`` of each user index."""
    item_ids: np.ndarray
    """str [n_items]: ``item_id`` of each item index."""
    history: sp.csr_matrix
    """float32 [n_users, n_items] event-weight sums of each user's positives: seen items, EASE's input."""
    popularity: np.ndarray
    """float32 [n_items] distinct users with a positive: the list of users the model does not know."""
    positives: tuple[str, ...] = (C.CLICK, C.PURCHASE)
    event_weights: dict[str, float] = field(default_factory=lambda: dict(C.DEFAULT_EVENT_WEIGHTS))
    meta: dict = field(default_factory=dict)
    """Free-form facts written to ``bundle.json`` (run id, data fingerprint, metrics)."""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def state(self) -> PipelineState:
        return self.pipeline._state()

    # ---- storage -------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the model as a folder of data into ``folder`` (replaced atomically; see :mod:`recsys.model_format`)."""
        from recsys.model_format import write_bundle_folder

        return write_bundle_folder(self, folder, self.describe())

    @staticmethod
    def load(folder: str | Path) -> ModelBundle:
        """Read a folder written by :meth:`save` (refuses another format version with a clear message)."""
        from recsys.model_format import read_bundle_folder

        return read_bundle_folder(folder)

    def describe(self) -> dict:
        """What a person wants to know about the model, as plain JSON."""
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "not installed"

        state = self.state
        return {"n_users": self.n_users, "n_items": self.n_items, "history_pairs": int(self.history.nnz),
                "cold_items": int(state.cold.sum()), "models": sorted(state.models), "sources": list(state.sources),
                "features": list(state.ranker.features) if state.ranker is not None else [],
                "ranked_by": "ranker" if state.ranker is not None else state.sources[0],
                "positives": list(self.positives),
                "event_weights": self.event_weights, "cold_exposure": self.pipeline.cold.label,
                "versions": {p: installed(p) for p in ("recsys", "torch", "transformers", "lightfm-next",
                                                       "lightgbm", "polars", "mlflow")}} | self.meta

    # ---- newer data ----------------------------------------------------------------------
    def index(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
        """Contract interactions as ``user_idx``/``item_idx`` (the string ids dropped) with their ``timestamp``,
        ``event`` and ``impression_id``; rows of unknown items or users dropped (their two counts).

        One lazy pass of left joins that drops the ids before anything is collected: two inner
        joins kept three string-keyed copies of the log, and at 20M events an export's load peaked
        at 7.9 GB on them.
        """
        users, items = id_lookup(self.user_ids, C.USER_ID, C.USER_IDX), id_lookup(self.item_ids, C.ITEM_ID, C.ITEM_IDX)
        kept = [c for c in (C.TS, C.EVENT, C.IMPRESSION_ID) if c in frame.columns]
        joined = (frame.lazy().select(C.USER_ID, C.ITEM_ID, *kept)
                  .join(items.lazy(), on=C.ITEM_ID, how="left", maintain_order="left")
                  .join(users.lazy(), on=C.USER_ID, how="left", maintain_order="left")
                  .select(C.USER_IDX, C.ITEM_IDX, *kept).collect())
        no_item = joined[C.ITEM_IDX].is_null()
        unknown_users = int((joined[C.USER_IDX].is_null() & ~no_item).sum())
        return joined.drop_nulls([C.USER_IDX, C.ITEM_IDX]), int(no_item.sum()), unknown_users

    def with_interactions(self, frame: pl.DataFrame) -> ModelBundle:
        """The same models reading the histories in ``frame`` (contract interactions) instead of their own.

        Seen items, EASE's input, the text tower's recent items and every behaviour feature
        come from ``frame`` from then on; users and items the model does not know are skipped
        (unknown users get the popularity fallback). Nothing is refitted.
        """
        return self.with_indexed(self.index(frame)[0])

    def with_indexed(self, indexed: pl.DataFrame) -> ModelBundle:
        """:meth:`with_interactions` of interactions already :meth:`index`-ed (a caller that counted what was
        skipped indexes a 20M-row log once, not twice).

        Only what serving reads is built: the positives in time order and their weighted matrix (a
        whole fit input also sorted every non-positive row and built a recent-window matrix no model
        reads here)."""
        positive = (indexed.lazy().filter(pl.col(C.EVENT).is_in(list(self.positives)))
                    .select(C.USER_IDX, C.ITEM_IDX, C.TS, C.EVENT).sort(C.TS, C.USER_IDX, C.ITEM_IDX).collect())
        weight = pl.col(C.EVENT).replace_strict(self.event_weights, default=0.0, return_dtype=pl.Float32)
        return self._with_histories(event_matrix(positive, (self.n_users, self.n_items), weight), positive)

    def with_fit(self, fit: FitInput) -> ModelBundle:
        """:meth:`with_indexed` of a fit input already built over the histories (its ``events`` and
        ``interactions``, with this model's positives and event weights): training packages the
        input it refit on instead of building it again from 20M rows."""
        if fit.interactions.shape != (self.n_users, self.n_items) or fit.events is None:
            raise ValueError(f"a fit input over {self.n_users} users x {self.n_items} items with events is needed, "
                             f"got {fit.interactions.shape}")
        return self._with_histories(fit.interactions, fit.events.filter(pl.col(C.EVENT).is_in(list(self.positives))))

    def _with_histories(self, history: sp.csr_matrix, positive: pl.DataFrame) -> ModelBundle:
        """The models reading ``history`` (the weighted matrix) and ``positive`` (indexed positive events with
        their ``event``, in time order)."""
        state = self.state
        cold = np.ones(self.n_items, bool)
        cold[positive[C.ITEM_IDX].unique().to_numpy()] = False
        models = {name: model.with_history(positive, self.n_users) if isinstance(model, TextScorer) else model
                  for name, model in state.models.items()}
        events = positive.select(C.USER_IDX, C.ITEM_IDX, C.TS)
        return self._with_state(replace(state, models=models, events=events, cold=cold), history=history)

    def with_new_items(self, items: pl.DataFrame) -> ModelBundle:
        """The catalogue extended by items that arrived after training (contract item rows).

        The text tower encodes them now; they enter the candidates as new items (the text
        tower's top new items) and compete in the ranker like any other cold item.
        """
        if items.height == 0:
            return self
        clash = items.filter(pl.col(C.ITEM_ID).is_in(self.item_ids.tolist()))[C.ITEM_ID]
        if clash.len():
            raise DataContractError(f"new items already in the model's catalogue ({clash.len()}): "
                                    f"{', '.join(clash.head(5).to_list())}")
        state, n_old = self.state, self.n_items
        models = {name: model.with_items(items) if isinstance(model, TextScorer) else PaddedScores(model, n_old)
                  for name, model in state.models.items()}
        added = items.with_columns(pl.int_range(n_old, n_old + items.height, dtype=pl.Int64).alias(C.ITEM_IDX))
        catalogue = pl.concat([state.items, added.select(state.items.columns)], how="vertical_relaxed")
        vectors = state.item_vectors
        text = next((m for m in models.values() if isinstance(m, TextScorer)), None)
        if vectors is not None and text is not None:
            new = text.item_vectors_[n_old:].numpy()
            vectors = np.vstack([vectors, new / np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)])
        state = replace(state, models=models, items=catalogue, cold=np.concatenate([state.cold, np.ones(items.height,
                                                                                                          bool)]),
                        item_vectors=vectors)
        history = sp.hstack([self.history, sp.csr_matrix((self.n_users, items.height), dtype=np.float32)],
                            format="csr")
        return replace(self._with_state(state, history=history),
                       item_ids=np.concatenate([self.item_ids, items[C.ITEM_ID].to_numpy().astype(object)]),
                       popularity=np.concatenate([self.popularity, np.zeros(items.height, np.float32)]))

    def with_cold(self, cold: ColdExposure) -> ModelBundle:
        """The same model with another new-item quota (see :class:`recsys.pipeline.ColdExposure`)."""
        return replace(self, pipeline=self.pipeline.with_cold(cold, self.pipeline.name))

    def _with_state(self, state: PipelineState, history: sp.csr_matrix) -> ModelBundle:
        pipeline = RankingPipeline(state, name=self.pipeline.name, cold=self.pipeline.cold)
        return replace(self, pipeline=pipeline, history=history)

    # ---- recommending ----------------------------------------------------------------------
    def user_index(self, user_ids) -> np.ndarray:
        """int64 index of each id; -1 for users the model does not know."""
        return self._users.of(user_ids)

    @cached_property
    def _users(self) -> IdIndex:
        """The user id -> index map, built at the first lookup (every export block and request asks it)."""
        return IdIndex(self.user_ids)

    def expected_rows(self, user_ids, k: int, exclude_seen: bool = True) -> np.ndarray:
        """int64 per user: the list length :meth:`recommend` must return (k, or the items left to show)."""
        index = self.user_index(user_ids)
        seen = np.zeros(len(index), np.int64)
        if exclude_seen:
            known = index >= 0
            seen[known] = np.diff(self.history.indptr)[index[known]]
        return np.minimum(k, self.n_items - seen)

    def recommend(self, user_ids, k: int = 10, *, exclude_seen: bool = True, block_size: int = 512,
                  keep_row: bool = False) -> pl.DataFrame:
        """Top-``k`` rows per user (:data:`RESULT_SCHEMA`), users in the order given.

        ``keep_row`` adds ``_row``: the position of each row's user in ``user_ids``.

        Known users go through candidates -> features -> ranker in blocks of ``block_size``
        (:func:`recsys.scoring.iter_ranked`); users the model does not know get the most popular
        items, flagged ``fallback``. ``k`` is checked by the caller (``recsys.topk.check_k``).
        """
        user_ids = np.asarray(user_ids, dtype=object)
        index = self.user_index(user_ids)
        parts: list[pl.DataFrame] = []
        known = np.flatnonzero(index >= 0)
        # a user named twice is scored once (the ranker's table holds one row per user and item)
        scored, position = _first_seen(index[known])
        blocks = list(iter_ranked(self.pipeline, scored, self.history, min(k, self.n_items), block_size=block_size,
                                  exclude_seen=exclude_seen))
        if blocks:
            top, scores = np.concatenate([b[1] for b in blocks]), np.concatenate([b[2] for b in blocks])
            parts.append(self._rows(known, top[position], scores[position], fallback=False))
        unknown = np.flatnonzero(index < 0)
        if len(unknown):
            order = np.argsort(-self.popularity, kind="stable")[:k]
            top = np.broadcast_to(order, (len(unknown), len(order)))
            parts.append(self._rows(unknown, top, self.popularity[top].astype(np.float64), fallback=True))
        columns = list(RESULT_SCHEMA) + (["_row"] if keep_row else [])
        if not parts:
            return pl.DataFrame(schema=RESULT_SCHEMA | {"_row": pl.Int64}).select(columns)
        out = pl.concat(parts).sort("_row", "rank")
        return out.with_columns(pl.Series(C.USER_ID, user_ids[out["_row"].to_numpy()], dtype=pl.String)).select(
            columns)

    def _rows(self, rows: np.ndarray, top: np.ndarray, scores: np.ndarray, fallback: bool) -> pl.DataFrame:
        """Long rows of a block's lists: input row, item id, score, 1-based rank (padding dropped)."""
        keep = top >= 0
        row = np.repeat(rows, keep.sum(axis=1))
        rank = np.broadcast_to(np.arange(1, top.shape[1] + 1), top.shape)[keep]
        return pl.DataFrame({"_row": row.astype(np.int64), C.ITEM_ID: self.item_ids[top[keep]],
                             "score": scores[keep].astype(np.float64), "rank": rank.astype(np.int64),
                             FALLBACK: np.full(len(row), fallback)},
                            schema={"_row": pl.Int64, C.ITEM_ID: pl.String, "score": pl.Float64, "rank": pl.Int64,
                                    FALLBACK: pl.Boolean})


def _first_seen(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values in order of first appearance, and each value's position among them."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    place = np.empty_like(order)
    place[order] = np.arange(len(order))
    return values[first[order]], place[inverse.ravel()]
