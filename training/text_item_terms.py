"""The text tower's item terms beside its dense match: the text-read appeal, and the weight of the lexical term.

The appeal is how widely an item is chosen, read from its text alone. Collaborative models know an
item's popularity from its events; a new item has none, and a pure user-item match ranks a niche
new item beside a new blockbuster. Yet the text often tells them apart (the kind of item, its year,
its franchise). After fine-tuning, a ridge regression from the catalogue vectors to
``log(1 + positives)`` over the trained items learns that reading.

The lexical term (``recsys.scorers.text_lexical``: the TF-IDF cosine of the history's tokens with
an item's) carries what a briefly fine-tuned encoder has not learned, such as two short video
titles sharing a rare hashtag. The neighbour term (``recsys.scorers.text_neighbours``: the mean,
over the history, of an unseen item's cosines with its nearest chosen items) stands in for the
co-occurrence a new item lacks.

The three weights are chosen together, from grids that start at zero, on what the tower never trained
on (:class:`NewItemJudge`): on positives-only logs, each user with a positive on the held-out items
gets those items ranked from their history of the other items, and the weights that give the best
mean Recall@20 win. That is the new-item protocol itself in miniature; an earlier judge that ranked
each held-out example against its own time-local history window chose the lexical term over the
appeal on MovieLens, which halved the new-item Recall@20 that the appeal had bought. With
impressions (:class:`ImpressionJudge`), each held-out impression's items are ranked among
themselves (mean per-impression AUC).

The result is two numbers per dimension in ``TowerHead.appeal`` and one weight in each of the
``LexicalIndex`` and the ``NeighbourIndex``, so serving (new items included: their appeal comes from
their vectors, their words from the stored tokenizer, their neighbours from the stored vectors)
needs nothing from here.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from sklearn.linear_model import Ridge

from recsys import contract as C
from recsys.evaluation.impressions import impression_metrics
from recsys.evaluation.metrics import ranking_metrics
from recsys.scorers.text import user_windows
from recsys.scorers.text_head import TowerHead
from recsys.scorers.text_lexical import LexicalIndex
from recsys.scorers.text_neighbours import NeighbourIndex
from recsys.topk import top_k
from training.text_data import Examples, holdout_grid

__all__ = ["APPEAL_WEIGHTS", "LEXICAL_WEIGHTS", "NEIGHBOUR_WEIGHTS", "HeldOutUsers", "ImpressionJudge", "NewItemJudge",
           "fit_item_terms", "held_out_users"]

logger = logging.getLogger(__name__)

APPEAL_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Candidate weights of the z-scored appeal, in logits (the cosine match spans about +-temperature)."""
LEXICAL_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Candidate weights of the lexical cosine, in units of the judged match's spread per unit of the cosine's
spread (scale-free, whatever the similarity and temperature): 1 weighs the two alike, 8 is words first."""
NEIGHBOUR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Candidate weights of the neighbour term, in the same units as :data:`LEXICAL_WEIGHTS`; on the new-item protocol
the best lay between 0.5 and 4 on MovieLens and ML-1M, with little between them."""
RIDGE_PENALTY = 1.0
"""L2 penalty of the ridge regression on unit-length 384-d vectors: mild, thousands of items fit it."""
MIN_ITEMS = 20
"""Fewer trained items than this: no appeal (a regression on a handful of items is noise)."""
JUDGE_K = 20
"""The new-item judge's cut-off: Recall@20, the first page."""
MAX_JUDGED_USERS = 5000
"""Users the new-item judge ranks for (a seeded sample where more have a held-out positive)."""


@dataclass(frozen=True)
class HeldOutUsers:
    """Users with a positive on the held-out items, as the new-item protocol sees them."""

    items: np.ndarray
    """int64 [m] the held-out items: the pool every user's list is drawn from."""
    windows: np.ndarray
    """int64 [u, L] each user's most recent positives among the other items (the tower's user window)."""
    history: sp.csr_matrix
    """float32 [u, n_items] each user's positives among the other items (the lexical profile)."""
    truth: sp.csr_matrix
    """bool [u, m] each user's held-out positives."""


def held_out_users(events: pl.DataFrame, n_users: int, n_items: int, held: np.ndarray, positives: tuple[str, ...],
                   length: int, *, relevant: tuple[str, ...] | None = None, seed: int = 0,
                   max_users: int = MAX_JUDGED_USERS) -> HeldOutUsers:
    """The users with a relevant event on ``held`` (a seeded sample of ``max_users``), their history of the others.

    Args:
        events: the fit window's indexed events (``user_idx, item_idx, event, timestamp``).
        held: int item indices the tower never trained on.
        positives: events that count as positive (the history).
        length: the tower's history window L.
        relevant: events that are relevant on the held-out items (the truth); None: the positives.
    """
    held = np.unique(np.asarray(held, dtype=np.int64))
    is_held = pl.col(C.ITEM_IDX).is_in(pl.Series(held).implode())
    hits = events.filter(is_held & pl.col(C.EVENT).is_in(list(relevant or positives)))
    users = np.unique(hits[C.USER_IDX].to_numpy())
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    mine = pl.col(C.USER_IDX).is_in(pl.Series(users).implode())
    hits = hits.filter(mine)
    truth = sp.csr_matrix((np.ones(hits.height, bool), (np.searchsorted(users, hits[C.USER_IDX].to_numpy()),
                                                        np.searchsorted(held, hits[C.ITEM_IDX].to_numpy()))),
                          shape=(len(users), len(held)))
    others = events.filter(mine & ~is_held & pl.col(C.EVENT).is_in(list(positives)))
    history = sp.csr_matrix((np.ones(others.height, np.float32),
                             (np.searchsorted(users, others[C.USER_IDX].to_numpy()), others[C.ITEM_IDX].to_numpy())),
                            shape=(len(users), n_items))
    history.sum_duplicates()
    windows = user_windows(others, n_users, positives, length, users=users)
    return HeldOutUsers(held, windows, history, truth.astype(bool))


class _Judge:
    """Candidates and their match scores under a head (its own appeal left out: it is what is being chosen),
    their lexical cosines and neighbour terms, computed once; :meth:`judge` then adds any per-item appeal and
    the weighed terms."""

    items: np.ndarray
    """int item index of each scored candidate, broadcastable to :attr:`match`."""
    match: np.ndarray
    cosines: np.ndarray | None
    neighbours: np.ndarray | None = None
    """The neighbour term at each candidate (None: not judged, e.g. on impressions, where held-out items have
    events)."""

    @cached_property
    def lexical_scale(self) -> float:
        """Logits per unit of lexical weight (0: the lexical term cannot tell the candidates apart)."""
        return self._scale(self.cosines)

    @cached_property
    def neighbour_scale(self) -> float:
        """Logits per unit of neighbour weight (0: the term cannot tell the candidates apart)."""
        return self._scale(self.neighbours)

    def _scale(self, term: np.ndarray | None) -> float:
        spread = 0.0 if term is None else term.std()
        return float(self.match.std() / spread) if spread > 0 else 0.0

    def scores(self, appeal: np.ndarray | None, lexical: float, neighbour: float = 0.0) -> np.ndarray:
        scores = self.match if appeal is None else self.match + appeal[self.items]
        if lexical and self.cosines is not None:
            scores = scores + lexical * self.lexical_scale * self.cosines
        if neighbour and self.neighbours is not None:
            scores = scores + neighbour * self.neighbour_scale * self.neighbours
        return scores

    def judge(self, appeal: np.ndarray | None = None, lexical: float = 0.0, neighbour: float = 0.0) -> float:
        """How well the match, plus ``appeal`` [n_items] of each candidate when given, plus the lexical cosine and
        the neighbour term at weights ``lexical`` and ``neighbour`` (:data:`LEXICAL_WEIGHTS` units), ranks what was
        held out (higher is better)."""
        raise NotImplementedError


class NewItemJudge(_Judge):
    """Positives-only logs: the held-out items ranked for each user, mean Recall@20 (the new-item protocol)."""

    def __init__(self, head: TowerHead, vectors: torch.Tensor, users: HeldOutUsers,
                 lexical: LexicalIndex | None = None, neighbours: NeighbourIndex | None = None) -> None:
        windows = torch.from_numpy(users.windows)
        with torch.inference_mode():
            pooled = head.users(vectors[windows.clamp(min=0)], windows >= 0)
            self.match = head.match_logits(pooled, vectors[torch.from_numpy(users.items)]).numpy().astype(np.float64)
        self.items = users.items[None, :]  # every user ranks the same pool: one row of appeals broadcasts
        self.cosines = None if lexical is None else lexical.cosines(lexical.profiles(users.history), users.items)
        self.neighbours = None if neighbours is None else neighbours.columns(users.history, users.items)
        self.truth = users.truth

    def judge(self, appeal: np.ndarray | None = None, lexical: float = 0.0, neighbour: float = 0.0) -> float:
        if self.truth.nnz == 0:
            return float("nan")
        top = top_k(self.scores(appeal, lexical, neighbour), JUDGE_K)
        return float(np.nanmean(ranking_metrics(top, self.truth, (JUDGE_K,))[f"recall@{JUDGE_K}"]))


class ImpressionJudge(_Judge):
    """Held-out examples with their own groups: each impression's items (or each positive beside its fixed
    negatives) ranked among themselves, mean per-group AUC; the lexical profile is the example's window."""

    def __init__(self, head: TowerHead, vectors: torch.Tensor, holdout: Examples, negatives: np.ndarray | None,
                 lexical: LexicalIndex | None = None) -> None:
        history = torch.from_numpy(holdout.history)
        negs = None if negatives is None else torch.from_numpy(negatives)
        items, labels, groups = holdout_grid(torch.from_numpy(holdout.items), torch.from_numpy(holdout.labels),
                                             torch.from_numpy(holdout.group), negs)
        with torch.inference_mode():
            users = head.users(vectors[history.clamp(min=0)], history >= 0)
            match = torch.stack([head.pair_match(users, vectors[items[:, j]]) for j in range(items.shape[1])], 1)
        self.items, self.labels, self.groups = items.numpy(), labels.numpy().ravel(), groups.numpy().ravel()
        self.match = match.numpy().astype(np.float64)
        self.cosines = None if lexical is None else lexical.pair_cosines(lexical.window_profiles(holdout.history),
                                                                         self.items)

    def judge(self, appeal: np.ndarray | None = None, lexical: float = 0.0, neighbour: float = 0.0) -> float:
        auc = impression_metrics(self.scores(appeal, lexical, neighbour).ravel(), self.labels, self.groups)["auc"]
        auc = auc[np.isfinite(auc)]  # groups of one label (an impression with no click) have no AUC
        return float(auc.mean()) if len(auc) else float("nan")


def fit_item_terms(head: TowerHead, vectors: torch.Tensor, lexical: LexicalIndex | None, train: Examples,
                   judged: _Judge, neighbours: NeighbourIndex | None = None
                   ) -> tuple[dict[str, float], LexicalIndex | None, NeighbourIndex | None]:
    """Fit ``head.appeal`` (in place) and weigh it, the lexical term and the neighbour term jointly by ``judged``.

    Args:
        head: the fitted tower's head (its appeal is overwritten).
        vectors: float [n_items, d] the catalogue encoded by the fitted encoder.
        lexical: the catalogue's lexical index (its weight is chosen here), or None.
        train: the examples the tower trained on (their positives count per item).
        judged: what the tower never trained on, scored under ``head``, ``lexical`` and the judge's own neighbour
            term (:class:`NewItemJudge` or :class:`ImpressionJudge`).
        neighbours: the serving catalogue's neighbour index to weigh, or None: the term is still judged where
            ``judged`` carries it, and the caller builds the index only where its weight is above 0 (every item's
            neighbours are a pass over the catalogue: 44 s at 100k items).

    Returns:
        The stats (``appeal_weight``, ``lexical_weight`` and ``neighbour_weight``, 0 = not used;
        ``terms_score_*``: the judge's figure for the match alone, with the best of each term alone and with
        the chosen weights), and the lexical and neighbour indices with their weights in logits.
    """
    base = judged.judge()
    stats = {"appeal_weight": 0.0, "lexical_weight": 0.0, "neighbour_weight": 0.0, "terms_score_match": base}
    fitted = _appeal(head, vectors, train) if np.isfinite(base) else None
    z = None if fitted is None else fitted[0]
    appeals = APPEAL_WEIGHTS if z is not None else (0.0,)
    lexicals = LEXICAL_WEIGHTS if judged.lexical_scale > 0 and np.isfinite(base) else (0.0,)
    near = NEIGHBOUR_WEIGHTS if judged.neighbour_scale > 0 and np.isfinite(base) else (0.0,)
    scores = {(a, w, n): judged.judge(a * z if a else None, w, n)
              for a, w, n in itertools.product(appeals, lexicals, near)}
    best = max(scores, key=lambda key: (scores[key], -key[2], -key[1], -key[0]))  # ties: the smaller weights
    appeal_weight, lexical_weight, neighbour_weight = best
    with torch.no_grad():
        if appeal_weight and fitted is not None:  # z = space @ coef + intercept, kept as the linear layer
            _, coef, intercept = fitted
            head.appeal.weight.copy_(torch.as_tensor(appeal_weight * coef, dtype=torch.float32)[None, :])
            head.appeal.bias.fill_(float(appeal_weight * intercept))
        else:
            head.appeal.weight.zero_()
            head.appeal.bias.zero_()
    if lexical is not None:
        lexical = lexical.with_weight(lexical_weight * judged.lexical_scale)
    if neighbours is not None:
        neighbours = neighbours.with_weight(neighbour_weight * judged.neighbour_scale)
    stats |= {"appeal_weight": float(appeal_weight), "lexical_weight": float(lexical_weight),
              "neighbour_weight": float(neighbour_weight),
              "terms_score_appeal": max(scores[a, 0.0, 0.0] for a in appeals),
              "terms_score_lexical": max(scores[0.0, w, 0.0] for w in lexicals),
              "terms_score_neighbours": max(scores[0.0, 0.0, n] for n in near), "terms_score_chosen": scores[best]}
    logger.info("text tower: text-read appeal weight %.1f, lexical weight %.2f, neighbour weight %.2f "
                "(held-out %s %.3f -> %.3f)", appeal_weight, lexical_weight, neighbour_weight,
                "Recall@20" if isinstance(judged, NewItemJudge) else "AUC", base, scores[best])
    return stats, lexical, neighbours


def _appeal(head: TowerHead, vectors: torch.Tensor, train: Examples) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The z-scored ridge reading of ``log(1 + positives)`` from the item vectors over the trained items.

    Returns ``(z, coef, intercept)`` with ``z = item_space(vectors) @ coef + intercept`` for every item,
    or None when too few items trained or the reading is constant.
    """
    counts = np.bincount(train.items[train.labels > 0], minlength=len(vectors)).astype(np.float64)
    fitted = np.flatnonzero(counts > 0)
    if len(fitted) < MIN_ITEMS:
        return None
    space = head.item_space(vectors).numpy().astype(np.float64)
    ridge = Ridge(alpha=RIDGE_PENALTY).fit(space[fitted], np.log1p(counts[fitted]))
    predicted = space @ ridge.coef_ + ridge.intercept_
    centre, spread = predicted[fitted].mean(), predicted[fitted].std()
    if not spread > 0:
        return None
    return (predicted - centre) / spread, ridge.coef_ / spread, float((ridge.intercept_ - centre) / spread)
