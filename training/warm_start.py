"""Updating a registered model on newer data: ``recsys train --from models:/recsys@champion``.

The update fits the same pipeline, but its stage-one models start from the previous version:
the text encoder and head load its weights (``training.fit_text.WarmText``), LightFM copies its
user and item embeddings into tables grown for new ids and continues with ``fit_partial``
(``LightFMRecommender.warm_start``); EASE, popularity and the ranker refit on the new window,
which is cheap. Two options fight forgetting: a replay sample of the previous version's
positive events mixed into the new window (text tower examples and LightFM's matrix), and an
L2-SP penalty toward the previous encoder weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import contract as C
from recsys.bundle import ModelBundle
from recsys.config import check_at_least
from recsys.evaluation.eval_data import EvalData
from recsys.indexing import FitInput, index_of

__all__ = ["UpdateConfig", "WarmStart", "warm_start", "parent_interactions", "ParentView"]


@dataclass(frozen=True)
class UpdateConfig:
    """How ``recsys train --from`` updates the previous version."""

    replay: float = 0.0
    """Older positives replayed, as a share of the new window's positive events (0 = none)."""
    l2sp: float = 0.0
    """Weight of the L2-SP penalty toward the previous text-tower weights (0 = none)."""
    lightfm_epochs: int = 10
    """``fit_partial`` epochs of LightFM on the new window."""
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, replay=0, l2sp=0, lightfm_epochs=1)


@dataclass(frozen=True)
class WarmStart:
    """The previous version and how its indices map onto this run's."""

    parent: ModelBundle
    user_map: np.ndarray
    """int64 [n_users]: the parent's index of each user of this run, -1 for new users."""
    item_map: np.ndarray
    """int64 [n_items]: the parent's index of each item of this run, -1 for new items."""
    replay: pl.DataFrame
    """Sampled parent positives in this run's index: ``user_idx, item_idx, event, impression_id, timestamp``."""
    config: UpdateConfig

    def with_replay(self, fit: FitInput) -> FitInput:
        """``fit`` with the replayed pairs added to its interaction matrix (weight 1 each, as a click)."""
        if self.replay.height == 0:
            return fit
        extra = sp.csr_matrix((np.ones(self.replay.height, np.float32),
                               (self.replay[C.USER_IDX].to_numpy(), self.replay[C.ITEM_IDX].to_numpy())),
                              shape=fit.interactions.shape)
        return replace(fit, interactions=(fit.interactions + extra).tocsr())


def warm_start(parent: ModelBundle, data: EvalData, config: UpdateConfig) -> WarmStart:
    """Index maps between the parent and this run, and the replay sample (seeded)."""
    user_map, item_map = index_of(data.user_ids, parent.user_ids), index_of(data.item_ids, parent.item_ids)
    to_new_user = np.full(parent.n_users, -1, np.int64)
    to_new_user[user_map[user_map >= 0]] = np.flatnonzero(user_map >= 0)
    to_new_item = np.full(parent.n_items, -1, np.int64)
    to_new_item[item_map[item_map >= 0]] = np.flatnonzero(item_map >= 0)
    old = parent.state.events
    mapped = old.with_columns(pl.Series(C.USER_IDX, to_new_user[old[C.USER_IDX].to_numpy()]),
                              pl.Series(C.ITEM_IDX, to_new_item[old[C.ITEM_IDX].to_numpy()]))
    mapped = mapped.filter((pl.col(C.USER_IDX) >= 0) & (pl.col(C.ITEM_IDX) >= 0))
    fit = data.test.fit
    n_new = int(fit.events[C.EVENT].is_in(list(data.config.positives)).sum()) if fit.events is not None else 0
    n = min(mapped.height, int(round(config.replay * n_new)))
    sample = mapped.sample(n, seed=config.seed) if n else mapped.head(0)
    replay = sample.select(C.USER_IDX, C.ITEM_IDX, pl.lit(C.CLICK).alias(C.EVENT),
                           pl.lit(None, pl.String).alias(C.IMPRESSION_ID), C.TS).sort(C.TS)
    return WarmStart(parent, user_map, item_map, replay, config)


def parent_interactions(parent: ModelBundle) -> pl.DataFrame:
    """The parent's positive events as contract interactions (clicks): histories of users the new data lacks."""
    events = parent.state.events
    return pl.DataFrame({C.USER_ID: parent.user_ids[events[C.USER_IDX].to_numpy()].astype(str),
                         C.ITEM_ID: parent.item_ids[events[C.ITEM_IDX].to_numpy()].astype(str),
                         C.TS: events[C.TS], C.EVENT: C.CLICK},
                        schema={C.USER_ID: pl.String, C.ITEM_ID: pl.String, C.TS: C.DATETIME, C.EVENT: pl.String})


class ParentView:
    """The previous version, unchanged, scored in this run's index: the "stale" model of an update run."""

    name = "parent"

    def __init__(self, warm: WarmStart, data: EvalData) -> None:
        self.warm, self.data = warm, data
        self.bundle: ModelBundle | None = None

    def fit(self, data: FitInput) -> ParentView:
        """Nothing is fitted: the parent reads this window's histories (as every model here does)."""
        rows = data.events.filter(pl.col(C.EVENT).is_in(list(self.warm.parent.positives)))
        frame = rows.select(pl.Series(C.USER_ID, self.data.user_ids[rows[C.USER_IDX].to_numpy()].astype(str)),
                            pl.Series(C.ITEM_ID, self.data.item_ids[rows[C.ITEM_IDX].to_numpy()].astype(str)),
                            C.TS, C.EVENT)
        self.bundle = self.warm.parent.with_interactions(frame)
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """[b, n_items] in this run's index; users or items the parent lacks get its lowest score."""
        bundle = self.bundle
        out = np.full((len(users), history.shape[1]), np.nan, np.float32)
        parent_users = self.warm.user_map[np.asarray(users)]
        known = np.flatnonzero(parent_users >= 0)
        items = np.flatnonzero(self.warm.item_map >= 0)
        if len(known):
            scores = bundle.pipeline.score(parent_users[known], bundle.history[parent_users[known]])
            out[np.ix_(known, items)] = scores[:, self.warm.item_map[items]]
        unknown = np.flatnonzero(parent_users < 0)
        if len(unknown):
            out[np.ix_(unknown, items)] = bundle.popularity[self.warm.item_map[items]]
        floor = np.nanmin(out, axis=1, keepdims=True) - 1.0
        return np.where(np.isnan(out), floor, out).astype(np.float32)
