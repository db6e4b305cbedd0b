"""A registered model's quality on a later window: history before a time cut, targets after it.

The training run's own test split answers "how good was it when trained"; this answers "how
good is it now, on these events", for any model bundle: the stale model on a new window, an
update on the next window (gain), or an update on an old window's held-back events
(forgetting). Histories are what the model reads (``ModelBundle.with_interactions``), targets
the positives after the cut that the user had not already seen; nothing is refitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import contract as C
from recsys.bundle import ModelBundle
from recsys.evaluation.metrics import ranking_metrics
from recsys.indexing import id_lookup
from recsys.scoring import rank_users

__all__ = ["WindowScore", "score_window"]


@dataclass(frozen=True)
class WindowScore:
    """Per-user metrics of one model on one window (users with a target the model knows)."""

    users: np.ndarray
    """str [n] evaluated users."""
    ndcg10: np.ndarray
    recall20: np.ndarray
    cold_recall20: np.ndarray
    """Recall@20 of targets on items with no event before the cut (NaN for users without one)."""

    def mean(self) -> dict[str, float]:
        return {"ndcg@10": float(np.nanmean(self.ndcg10)) if len(self.users) else float("nan"),
                "recall@20": float(np.nanmean(self.recall20)) if len(self.users) else float("nan"),
                "cold_recall@20": float(np.nanmean(self.cold_recall20)) if np.isfinite(self.cold_recall20).any()
                else float("nan"), "users": float(len(self.users))}


def score_window(bundle: ModelBundle, history: pl.DataFrame, targets: pl.DataFrame, *,
                 users: np.ndarray | None = None, block_size: int = 512) -> WindowScore:
    """Rank the whole catalogue for each user with a target, reading ``history``; score against ``targets``.

    Args:
        bundle: the model.
        history: contract interactions before the cut (what the model reads and excludes).
        targets: contract interactions after the cut; their relevant events (the training run's) are the targets.
        users: only these user ids (e.g. a held-back sample); default every user with a target.
    """
    model = bundle.with_interactions(history)
    # the events the model was judged on when trained (older models: every positive)
    relevant = bundle.meta.get("relevant") or list(bundle.positives)
    positive = targets.filter(pl.col(C.EVENT).is_in(relevant))
    items = id_lookup(bundle.item_ids, C.ITEM_ID, C.ITEM_IDX)
    positive = positive.join(items, on=C.ITEM_ID).select(C.USER_ID, C.ITEM_IDX).unique()
    known = model.user_index(positive[C.USER_ID].to_numpy())
    positive = positive.filter(pl.Series(known >= 0))
    asked = np.asarray(sorted(set(positive[C.USER_ID].to_list()) if users is None
                              else set(positive[C.USER_ID].to_list()) & {str(u) for u in users}), dtype=object)
    rows = model.user_index(asked)
    seen = model.history[rows]
    row_of = {u: i for i, u in enumerate(asked)}
    pairs = positive.filter(pl.col(C.USER_ID).is_in(list(asked)))
    r = np.array([row_of[u] for u in pairs[C.USER_ID].to_list()], dtype=np.int64)
    truth = sp.csr_matrix((np.ones(len(r), bool), (r, pairs[C.ITEM_IDX].to_numpy())), shape=seen.shape)
    truth = (truth.astype(np.int8) - truth.multiply(seen > 0).astype(np.int8)).astype(bool).tocsr()
    truth.eliminate_zeros()
    cold = np.ones(bundle.n_items, bool)
    cold[np.unique(model.state.events[C.ITEM_IDX].to_numpy())] = False
    top = rank_users(model.pipeline, rows, model.history, 20, block_size=block_size)[0]
    metrics = ranking_metrics(top, truth, (10, 20))
    cold_truth = sp.csr_matrix(truth.multiply(cold[None, :]), dtype=bool)
    cold_truth.eliminate_zeros()
    cold_metrics = ranking_metrics(top, cold_truth, (20,))
    keep = np.asarray(truth.sum(axis=1)).ravel() > 0
    return WindowScore(asked[keep], metrics["ndcg@10"][keep], metrics["recall@20"][keep],
                       cold_metrics["recall@20"][keep])
