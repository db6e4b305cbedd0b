"""The text tower's appeal term: how widely an item is chosen, read from its text alone.

Collaborative models know an item's popularity from its events; a new item has none, and a pure
user-item match ranks a niche new item beside a new blockbuster. Yet the text often tells them
apart (the kind of item, its year, its franchise). After fine-tuning, a ridge regression from the
catalogue vectors to ``log(1 + positives)`` over the trained items learns that reading, and the
weight it gets beside the match is chosen on the held-out items' examples (items the tower never
trained on), from a grid that starts at zero: where popularity does not carry over from text to
new items (short video titles), the weight stays zero and the tower is the match alone.

The result is two numbers per dimension in ``TowerHead.appeal``, so serving (new items included:
their appeal comes from their vectors) needs nothing from here.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.linear_model import Ridge

from recsys.evaluation.impressions import impression_metrics
from recsys.scorers.text_head import TowerHead
from training.text_data import Examples, holdout_grid

__all__ = ["APPEAL_WEIGHTS", "fit_appeal"]

logger = logging.getLogger(__name__)

APPEAL_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Candidate weights of the z-scored appeal, in logits (the cosine match spans about +-temperature)."""
RIDGE_PENALTY = 1.0
"""L2 penalty of the ridge regression on unit-length 384-d vectors: mild, thousands of items fit it."""
MIN_ITEMS = 20
"""Fewer trained items than this: no appeal (a regression on a handful of items is noise)."""


class _HoldoutMatch:
    """The holdout's candidates and their match scores under ``head`` (its own appeal left out: it is what is
    being chosen), computed once; :meth:`auc` then adds any per-item appeal."""

    def __init__(self, head: TowerHead, vectors: torch.Tensor, holdout: Examples,
                 negatives: np.ndarray | None) -> None:
        history = torch.from_numpy(holdout.history)
        negs = None if negatives is None else torch.from_numpy(negatives)
        items, labels, groups = holdout_grid(torch.from_numpy(holdout.items), torch.from_numpy(holdout.labels),
                                             torch.from_numpy(holdout.group), negs)
        with torch.inference_mode():
            users = head.users(vectors[history.clamp(min=0)], history >= 0)
            match = torch.stack([head.pair_match(users, vectors[items[:, j]]) for j in range(items.shape[1])], 1)
        self.items, self.labels, self.groups = items.numpy().ravel(), labels.numpy().ravel(), groups.numpy().ravel()
        self.match = match.numpy().astype(np.float64).ravel()

    def auc(self, appeal: np.ndarray | None = None) -> float:
        """Mean per-group AUC of the match, plus ``appeal`` [n_items] of each candidate when given."""
        scores = self.match if appeal is None else self.match + appeal[self.items]
        auc = impression_metrics(scores, self.labels, self.groups)["auc"]
        auc = auc[np.isfinite(auc)]  # groups of one label (an impression with no click) have no AUC
        return float(auc.mean()) if len(auc) else float("nan")


def fit_appeal(head: TowerHead, vectors: torch.Tensor, train: Examples, holdout: Examples,
               negatives: np.ndarray | None) -> dict[str, float]:
    """Fit ``head.appeal`` (in place) from the trained items' positives; keep it only where it helps held-out items.

    Args:
        head: the fitted tower's head (its appeal is overwritten).
        vectors: float [n_items, d] the catalogue encoded by the fitted encoder.
        train: the examples the tower trained on (their positives count per item).
        holdout: examples on items (or times) kept out of training; the weight is chosen on them.
        negatives: each holdout positive's fixed negatives (positives-only data), else None.

    Returns:
        ``appeal_weight`` (0 = not used), the holdout AUC without and with it.
    """
    counts = np.bincount(train.items[train.labels > 0], minlength=len(vectors)).astype(np.float64)
    fitted = np.flatnonzero(counts > 0)
    judged = _HoldoutMatch(head, vectors, holdout, negatives)
    base = judged.auc()
    stats = {"appeal_weight": 0.0, "holdout_auc_match": base, "holdout_auc_appeal": base}
    if len(fitted) < MIN_ITEMS or not np.isfinite(base):
        return stats
    space = head.item_space(vectors).numpy().astype(np.float64)
    ridge = Ridge(alpha=RIDGE_PENALTY).fit(space[fitted], np.log1p(counts[fitted]))
    predicted = space @ ridge.coef_ + ridge.intercept_
    centre, spread = predicted[fitted].mean(), predicted[fitted].std()
    if not spread > 0:
        return stats
    z = (predicted - centre) / spread
    scores = {w: judged.auc(w * z) if w else base for w in APPEAL_WEIGHTS}
    weight = max(APPEAL_WEIGHTS, key=lambda w: (scores[w], -w))  # ties: the smaller weight
    with torch.no_grad():
        head.appeal.weight.copy_(torch.as_tensor(weight * ridge.coef_ / spread, dtype=torch.float32)[None, :])
        head.appeal.bias.fill_(float(weight * (ridge.intercept_ - centre) / spread))
    logger.info("text tower: text-read appeal weight %.1f (held-out AUC %.3f -> %.3f)", weight, base, scores[weight])
    return stats | {"appeal_weight": float(weight), "holdout_auc_appeal": scores[weight]}
