"""The evaluation protocol: tune on valid, refit on the history, rank the whole catalogue on test.

For each model: every setting of its grid is fit on train and scored on the valid window
(train items excluded), the best by NDCG@10 is refit on the run's history (train, or
train + valid) and scored on the test window with exactly that history excluded. Scoring is
blocked: a block of users times the whole catalogue, then the top K of each row; memory is
bounded by ``block_size x n_items`` and there is no Python loop over users.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys import contract as C
from recsys.evaluation.bootstrap import bootstrap_many, paired_bootstrap
from recsys.evaluation.impressions import impression_metrics
from recsys.evaluation.metrics import catalog_coverage, gini, mean_popularity, novelty, ranking_metrics, top_k
from recsys.evaluation.setup import HISTORY_BUCKETS, EvalData, Window
from recsys.recommender import Recommender

__all__ = ["ModelSpec", "ModelResult", "EvalResult", "score_top_k", "evaluate_models", "TUNING_METRIC"]

logger = logging.getLogger(__name__)

TUNING_METRIC = "ndcg@10"


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: how to build it for each setting of its (small) tuning grid."""

    name: str
    build: Callable[[Any], Recommender]
    grid: tuple[Any, ...] = (None,)
    """Settings tried on the valid window; ``(None,)`` means nothing to tune."""


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


@dataclass
class EvalResult:
    """All models of a run, the tidy table with CIs, and paired comparisons."""

    data: EvalData
    models: list[ModelResult]
    table: pl.DataFrame
    """model, slice, metric, value, ci_low, ci_high, n_users."""
    paired: pl.DataFrame = field(default_factory=pl.DataFrame)


def score_top_k(model: Recommender, window: Window, users: np.ndarray, k: int, *, block_size: int = 1024,
                show_progress: bool = False, desc: str = "scoring", only: np.ndarray | None = None) -> np.ndarray:
    """Top-``k`` items of each user over the whole catalogue, the window's history excluded.

    Args:
        model: a fitted recommender.
        window: supplies the history (what the model sees and what is excluded).
        users: int [n] user indices.
        k: list length.
        block_size: users scored together (memory ~ block_size x n_items floats).
        only: bool [n_items]; when given, only these items are ranked (e.g. the cold items).

    Returns:
        int [n, k] item indices, best first, -1 padded.
    """
    out = np.empty((len(users), k), dtype=np.int64)
    starts = range(0, len(users), block_size)
    for start in tqdm(starts, desc=desc, unit="block", disable=not show_progress, leave=False):
        block = users[start:start + block_size]
        history = window.history[block]
        scores = model.score(block, history)
        if only is not None:
            scores = np.where(only[None, :], scores, -np.inf)
        out[start:start + len(block)] = top_k(scores, k, exclude=history)
    return out


def _tune(spec: ModelSpec, data: EvalData, show_progress: bool) -> tuple[Any, dict[str, float]]:
    window = data.valid
    scores: dict[str, float] = {}
    best, best_score = spec.grid[0], -np.inf
    if len(spec.grid) == 1:
        return best, scores
    if len(window.users) == 0:
        logger.warning("%s: the valid window has no relevant items; using the first setting %s", spec.name, best)
        return best, scores
    for setting in spec.grid:
        model = spec.build(setting).fit(window.fit)
        topk = score_top_k(model, window, window.users, 10, block_size=data.config.block_size,
                           show_progress=show_progress, desc=f"{spec.name} valid {setting}")
        value = float(np.nanmean(ranking_metrics(topk, window.truth[window.users], (10,))[TUNING_METRIC]))
        scores[str(setting)] = value
        logger.info("%s %s: valid %s %.4f", spec.name, setting, TUNING_METRIC, value)
        if value > best_score:
            best, best_score = setting, value
    return best, scores


def _impressions(model: Recommender, data: EvalData) -> dict[str, np.ndarray] | None:
    """MIND protocol: rank only the items shown in each test impression."""
    events = data.test_events.filter(pl.col(C.IMPRESSION_ID).is_not_null())
    shown = events.filter(pl.col(C.EVENT) == C.IMPRESSION).select("user_idx", "item_idx", C.IMPRESSION_ID).unique()
    if shown.height == 0:
        return None
    clicked = events.filter(pl.col(C.EVENT).is_in(list(data.config.positives))).select(
        "item_idx", C.IMPRESSION_ID).unique().with_columns(pl.lit(1).alias("label"))
    rows = shown.join(clicked, on=["item_idx", C.IMPRESSION_ID], how="left").with_columns(
        pl.col("label").fill_null(0)).sort("user_idx")
    users, starts = np.unique(rows["user_idx"].to_numpy(), return_index=True)
    item_idx = rows["item_idx"].to_numpy()
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


def _evaluate(spec: ModelSpec, data: EvalData, show_progress: bool) -> ModelResult:
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    setting, tuning = _tune(spec, data, show_progress)
    seconds["tune_s"] = time.perf_counter() - start
    start = time.perf_counter()
    model = spec.build(setting).fit(data.test.fit)
    seconds["fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    window = data.test
    topk = score_top_k(model, window, window.users, data.config.max_k, block_size=data.config.block_size,
                       show_progress=show_progress, desc=f"{spec.name} test")
    seconds["score_s"] = time.perf_counter() - start
    seconds["users_per_s"] = len(window.users) / max(seconds["score_s"], 1e-9)
    per_user = ranking_metrics(topk, window.truth[window.users], data.config.ks)
    result = ModelResult(spec.name, setting, topk, per_user, tuning, seconds, _impressions(model, data))
    result.cold_only = _cold_only(model, data, show_progress)
    return result


def _cold_only(model: Recommender, data: EvalData, show_progress: bool) -> dict[str, np.ndarray] | None:
    """Rank only the cold items for users with a cold positive: how well new items are placed."""
    window = data.test
    truth = window.truth[window.users][:, window.cold_items]
    users = window.users[np.diff(truth.tocsr().indptr) > 0]
    if len(users) == 0:
        return None
    topk = score_top_k(model, window, users, data.config.max_k, block_size=data.config.block_size,
                       show_progress=show_progress, desc=f"{model.name} cold", only=window.cold_items)
    cold_truth = window.truth[users].multiply(window.cold_items[None, :].astype(np.float32)).tocsr()
    return ranking_metrics(topk, cold_truth, data.config.ks)


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
        coords = (rows["user_idx"].to_numpy(), rows["item_idx"].to_numpy())
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
        for metric in metrics:
            p = paired_bootstrap(r.per_user[metric], ref.per_user[metric], n_resamples=cfg.n_bootstrap, seed=cfg.seed)
            rows.append({"model": r.name, "reference": reference, "metric": metric, "mean_diff": p.mean_diff,
                         "ci_low": p.low, "ci_high": p.high, "p_value": p.p_value})
    return pl.DataFrame(rows)


def evaluate_models(data: EvalData, specs: Sequence[ModelSpec], *, reference: str = "popularity",
                    show_progress: bool = False) -> EvalResult:
    """Run the protocol for every model on the same split, history and catalogue.

    Args:
        data: the indexed dataset (``build_eval_data``).
        specs: the models and their tuning grids.
        reference: model that the others are compared with by paired bootstrap.
        show_progress: tqdm bars over blocks of users.

    Returns:
        Per-model results, the tidy metrics table (with bootstrap CIs over users, per slice)
        and the paired differences against ``reference``.
    """
    if len(data.test.users) == 0:
        raise ValueError("the test window has no user with a relevant item outside their history")
    results = []
    for spec in specs:
        logger.info("evaluating %s", spec.name)
        results.append(_evaluate(spec, data, show_progress))
    slices = _slices(data)
    table = pl.DataFrame([row for r in results for row in _rows(r, data, slices)],
                         schema={"model": pl.String, "slice": pl.String, "metric": pl.String, "value": pl.Float64,
                                 "ci_low": pl.Float64, "ci_high": pl.Float64, "n_users": pl.Int64})
    paired = _paired(results, reference, ("ndcg@10", "recall@20"), data.config)
    return EvalResult(data, results, table, paired)
