"""The evaluation protocol's scoring half: fitted models -> test-window lists, metrics, slices, CIs.

Nothing here fits. ``training.fit_models`` tunes each model's grid on the valid window (with
:func:`tuning_score`), fits the best setting on the run's history (train, or train + valid) and
hands the fitted model to :func:`score_model`, one model at a time; :func:`summarise` then turns
every model's result into the tidy table with bootstrap CIs and the paired comparisons. Lists
come from :mod:`recsys.scoring`: blocks of users times the whole catalogue, exactly the window's
history excluded, so memory is bounded by ``block_size x n_items``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import contract as C
from recsys.evaluation.bootstrap import bootstrap_many, paired_bootstrap
from recsys.evaluation.eval_data import HISTORY_BUCKETS, EvalData, Window
from recsys.evaluation.impressions import impression_metrics
from recsys.evaluation.metrics import catalog_coverage, gini, mean_popularity, novelty, ranking_metrics
from recsys.scorers.base import Scorer
from recsys.scoring import rank_users

__all__ = ["ModelResult", "EvalResult", "TUNING_METRIC", "check_test_window", "tuning_score", "score_model",
           "cold_only_rows", "summarise"]

TUNING_METRIC = "ndcg@10"
"""What a model's grid is tuned on: its mean over the valid window's users (:func:`tuning_score`)."""
PAIRED_METRICS = ("ndcg@10", "recall@20")
"""Metrics compared with the reference model by paired bootstrap (where only new items are ranked too, as
``cold_only_<metric>``: both lists are of the same users with a new-item positive)."""


@dataclass
class ModelResult:
    """One model's test-window outcome."""

    name: str
    setting: Any
    topk: np.ndarray
    """int [n_test_users, max_k]: the ranked lists of the evaluated users."""
    per_user: dict[str, np.ndarray]
    """metric -> float [n_test_users]."""
    tuning: dict[str, float]
    """str(setting) -> valid NDCG@10."""
    seconds: dict[str, float]
    impressions: dict[str, np.ndarray] | None = None
    cold_only: dict[str, np.ndarray] | None = None
    """Per-user metrics when only the cold items are ranked (users with a cold positive)."""
    cold_only_topk: np.ndarray | None = None
    """int [n_cold_users, max_k]: those lists, each user's new items best first (rows as ``cold_only``'s)."""
    peak_rss_mb: float | None = None
    """The process's peak memory once this model was fitted and scored (``recsys.memory``): which model raised it."""


@dataclass
class EvalResult:
    """All models of a run, the tidy table with CIs, and paired comparisons."""

    data: EvalData
    models: list[ModelResult]
    table: pl.DataFrame
    """model, slice, metric, value, ci_low, ci_high, n_users."""
    paired: pl.DataFrame = field(default_factory=pl.DataFrame)


def check_test_window(data: EvalData) -> None:
    """Raise before anything is fitted or scored when the test window has nobody to evaluate.

    Raises:
        ValueError: no test user has a relevant item outside their history.
    """
    if len(data.test.users) == 0:
        raise ValueError("the test window has no user with a relevant item outside their history")


def _lists(model: Scorer, window: Window, users: np.ndarray, k: int, data: EvalData, show_progress: bool,
           desc: str, only: np.ndarray | None = None) -> np.ndarray:
    """int [n, k] top-``k`` of ``users`` over the catalogue (or ``only``), the window's history excluded."""
    return rank_users(model, users, window.history, k, block_size=data.config.block_size, only=only,
                      show_progress=show_progress, desc=desc)[0]


def tuning_score(data: EvalData, model: Scorer, *, show_progress: bool = False, desc: str = "valid") -> float:
    """Mean :data:`TUNING_METRIC` of a model (fitted on ``data.valid.fit``) over the valid window's users.

    The valid history is excluded from the lists, as the test history is on test.

    Returns:
        The mean over users with a relevant valid item (NaN when there are none).
    """
    window = data.valid
    topk = _lists(model, window, window.users, 10, data, show_progress, desc)
    return float(np.nanmean(ranking_metrics(topk, window.truth[window.users], (10,))[TUNING_METRIC]))


def score_model(data: EvalData, name: str, model: Scorer, *, setting: Any = None,
                tuning: dict[str, float] | None = None, seconds: dict[str, float] | None = None,
                show_progress: bool = False) -> ModelResult:
    """Score one fitted model on the test window: full-catalogue lists, impressions, cold items only.

    Args:
        data: the indexed dataset; ``model`` must have been fitted on ``data.test.fit``.
        name: the model's name in the result table.
        model: a fitted model (``score(users, history)``; see :class:`recsys.scorers.Scorer`).
        setting: the grid setting it was fitted with (recorded only).
        tuning: str(setting) -> valid score of each setting tried (recorded only).
        seconds: timings so far (e.g. ``tune_s``, ``fit_s``); ``score_s`` and ``users_per_s`` are added.
        show_progress: tqdm bars over blocks of users.

    Returns:
        The model's lists and per-user metrics over ``data.test.users``.

    Raises:
        ValueError: the test window has no user to evaluate.
    """
    check_test_window(data)
    seconds = dict(seconds or {})
    window = data.test
    start = time.perf_counter()
    topk = _lists(model, window, window.users, data.config.max_k, data, show_progress, f"{name} test")
    seconds["score_s"] = time.perf_counter() - start
    seconds["users_per_s"] = len(window.users) / max(seconds["score_s"], 1e-9)
    per_user = ranking_metrics(topk, window.truth[window.users], data.config.ks)
    result = ModelResult(name, setting, topk, per_user, dict(tuning or {}), seconds, _impressions(model, data))
    result.cold_only, result.cold_only_topk = _cold_only(name, model, data, show_progress)
    return result


def _impressions(model: Scorer, data: EvalData) -> dict[str, np.ndarray] | None:
    """MIND protocol: rank only the items shown in each test impression.

    It needs the raw score of each shown item rather than lists, so it reads ``model.score``
    block by block itself instead of going through :mod:`recsys.scoring`.
    """
    events = data.test_events.filter(pl.col(C.IMPRESSION_ID).is_not_null())
    shown = events.filter(pl.col(C.EVENT) == C.IMPRESSION).select(C.USER_IDX, C.ITEM_IDX, C.IMPRESSION_ID).unique()
    if shown.height == 0:
        return None
    clicked = events.filter(pl.col(C.EVENT).is_in(list(data.config.positives))).select(
        C.ITEM_IDX, C.IMPRESSION_ID).unique().with_columns(pl.lit(1).alias("label"))
    rows = shown.join(clicked, on=[C.ITEM_IDX, C.IMPRESSION_ID], how="left").with_columns(
        pl.col("label").fill_null(0)).sort(C.USER_IDX)
    users, starts = np.unique(rows[C.USER_IDX].to_numpy(), return_index=True)
    item_idx = rows[C.ITEM_IDX].to_numpy()
    scores = np.empty(rows.height, dtype=np.float64)
    bounds = np.append(starts, rows.height)
    size = data.config.block_size
    for b in range(0, len(users), size):
        block = users[b:b + size]
        block_scores = model.score(block, data.test.history[block])
        lo, hi = bounds[b], bounds[min(b + size, len(users))]
        local = np.repeat(np.arange(len(block)), np.diff(bounds[b:b + len(block) + 1]))
        scores[lo:hi] = block_scores[local, item_idx[lo:hi]]
    return impression_metrics(scores, rows["label"].to_numpy(), rows[C.IMPRESSION_ID].to_numpy())


def cold_only_rows(window: Window) -> np.ndarray:
    """int: the positions, among ``window.users``, of the users with a new-item positive (the ``cold_only`` rows)."""
    truth = window.truth[window.users][:, window.cold_items].tocsr()
    truth.eliminate_zeros()
    return np.flatnonzero(np.diff(truth.indptr) > 0)


def _cold_only(name: str, model: Scorer, data: EvalData, show_progress: bool
               ) -> tuple[dict[str, np.ndarray] | None, np.ndarray | None]:
    """Rank only the cold items for users with a cold positive: how well new items are placed (metrics, lists)."""
    window = data.test
    users = window.users[cold_only_rows(window)]
    if len(users) == 0:
        return None, None
    topk = _lists(model, window, users, data.config.max_k, data, show_progress, f"{name} cold",
                  only=window.cold_items)
    cold_truth = window.truth[users].multiply(window.cold_items[None, :].astype(np.float32)).tocsr()
    return ranking_metrics(topk, cold_truth, data.config.ks), topk


def _slices(data: EvalData) -> dict[str, tuple[np.ndarray, sp.csr_matrix]]:
    """slice name -> (row mask over test users, truth restricted to the slice)."""
    window = data.test
    truth = window.truth[window.users].tocsr()
    cold = sp.diags(window.cold_items.astype(np.float32))
    out = {"all": (np.ones(len(window.users), bool), truth)}
    for name, mask in (("cold_items", cold), ("warm_items", sp.diags((~window.cold_items).astype(np.float32)))):
        restricted = (truth.astype(np.float32) @ mask).tocsr()
        restricted.eliminate_zeros()
        out[name] = (np.diff(restricted.indptr) > 0, restricted)
    n_hist = np.diff(window.history.indptr)[window.users]
    for name, lo, hi in HISTORY_BUCKETS:
        out[f"history_{name}"] = ((n_hist >= lo) & (n_hist <= hi), truth)
    events = data.test_events
    for event in data.config.positives:
        rows = events.filter(pl.col(C.EVENT) == event)
        coords = (rows[C.USER_IDX].to_numpy(), rows[C.ITEM_IDX].to_numpy())
        m = sp.csr_matrix((np.ones(rows.height, np.float32), coords), shape=window.truth.shape)[window.users]
        m = m.multiply(truth).tocsr()
        m.eliminate_zeros()
        out[f"event_{event}"] = (np.diff(m.indptr) > 0, m)
    return out


def _rows(result: ModelResult, data: EvalData, slices: dict[str, tuple[np.ndarray, sp.csr_matrix]]) -> list[dict]:
    cfg = data.config
    rows: list[dict] = []
    for name, (mask, truth) in slices.items():
        if not mask.any():
            continue
        per_user = result.per_user if name == "all" else ranking_metrics(result.topk[mask], truth[mask], cfg.ks)
        for metric, (value, low, high) in bootstrap_many(per_user, n_resamples=cfg.n_bootstrap, seed=cfg.seed).items():
            rows.append({"model": result.name, "slice": name, "metric": metric, "value": value, "ci_low": low,
                         "ci_high": high, "n_users": int(mask.sum())})
    popularity = np.diff(data.test.fit.interactions.tocsc().indptr).astype(np.float64)
    n_items, n_users = len(data.item_ids), data.test.fit.n_users
    for k in (10, 20):
        for metric, value in (("coverage", catalog_coverage(result.topk, n_items, k)),
                              ("novelty", novelty(result.topk, popularity, n_users, k)),
                              ("popularity", mean_popularity(result.topk, popularity, k)),
                              ("gini", gini(result.topk, n_items, k))):
            rows.append({"model": result.name, "slice": "all", "metric": f"{metric}@{k}", "value": value})
    if result.cold_only is not None:
        n = len(next(iter(result.cold_only.values())))
        for metric, (value, low, high) in bootstrap_many(result.cold_only, n_resamples=cfg.n_bootstrap,
                                                         seed=cfg.seed).items():
            rows.append({"model": result.name, "slice": "cold_only", "metric": metric, "value": value,
                         "ci_low": low, "ci_high": high, "n_users": n})
    if result.impressions is not None:
        imp = {k: v for k, v in result.impressions.items() if k != "group"}
        for metric, (value, low, high) in bootstrap_many(imp, n_resamples=cfg.n_bootstrap, seed=cfg.seed).items():
            rows.append({"model": result.name, "slice": "impressions", "metric": metric, "value": value,
                         "ci_low": low, "ci_high": high, "n_users": len(imp["auc"])})
    return rows


def _paired(results: list[ModelResult], reference: str, metrics: Sequence[str], cfg) -> pl.DataFrame:
    ref = next((r for r in results if r.name == reference), None)
    if ref is None:
        return pl.DataFrame()
    rows = []
    for r in results:
        if r.name == reference:
            continue
        pairs = [(metric, r.per_user[metric], ref.per_user[metric]) for metric in metrics]
        if r.cold_only is not None and ref.cold_only is not None:
            pairs += [(f"cold_only_{metric}", r.cold_only[metric], ref.cold_only[metric]) for metric in metrics]
        for metric, own, theirs in pairs:
            p = paired_bootstrap(own, theirs, n_resamples=cfg.n_bootstrap, seed=cfg.seed)
            rows.append({"model": r.name, "reference": reference, "metric": metric, "mean_diff": p.mean_diff,
                         "ci_low": p.low, "ci_high": p.high, "p_value": p.p_value})
    return pl.DataFrame(rows)


def summarise(data: EvalData, results: Sequence[ModelResult], *, reference: str = "popularity") -> EvalResult:
    """The run's table: every model's metrics per slice with bootstrap CIs over users, and paired differences.

    Args:
        data: the indexed dataset the results were scored on.
        results: :func:`score_model` outcomes, in table order.
        reference: model that the others are compared with by paired bootstrap (none when absent).

    Returns:
        The results, the tidy metrics table (model, slice, metric, value, ci_low, ci_high,
        n_users) and the paired differences against ``reference``.
    """
    results = list(results)
    slices = _slices(data)
    table = pl.DataFrame([row for r in results for row in _rows(r, data, slices)],
                         schema={"model": pl.String, "slice": pl.String, "metric": pl.String, "value": pl.Float64,
                                 "ci_low": pl.Float64, "ci_high": pl.Float64, "n_users": pl.Int64})
    paired = _paired(results, reference, PAIRED_METRICS, data.config)
    return EvalResult(data, results, table, paired)
