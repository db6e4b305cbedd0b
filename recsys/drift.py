"""Drift report: has the data moved far enough from the model's training window to retrain?

``recsys drift --model URI --data NEW`` compares what a registered model was trained on (the
positive events, catalogue and text vectors its :class:`~recsys.bundle.ModelBundle` carries)
with a newer window of contract data, and measures four things:

* **newcomers**: the share of NEW's items and users the model does not know, and the share of
  NEW's positive events they account for (collaborative models know nothing about them);
* **popularity shift**: total variation and Jensen-Shannon distance between the item
  distributions of the two windows (distinct users per item, over the union of items), and the
  overlap of their top-100 items;
* **topic shift**: cosine distance between the mean text vector of the items interacted with in
  each window (new items encoded by the model's own text tower), overall and per returning user,
  and the same shift relative to the training window's spread (see ``centroid_shift``);
* **quality on NEW**: NDCG@k and Recall@2k of the model's lists for the users it knows (their
  histories are the model's own, i.e. before NEW; targets are NEW's positives they had not
  seen), with bootstrap CIs, against the model's test NDCG@10 and against NEW's own most
  popular items (an optimistic reference: it knows NEW's popularity).

A verdict, ``update_due``, lists every figure past its :class:`DriftThresholds` bound. Only
positive events (``bundle.positives``, click and purchase by default) count anywhere.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import contract as C
from recsys.bundle import ModelBundle
from recsys.drift_report import (
    EXPERIMENT,
    NAN,
    REFERENCE_METRIC,
    REPORT_JSON,
    REPORT_TEXT,
    TOP_N,
    DriftReport,
    DriftThresholds,
    pct,
)
from recsys.errors import RecsysError
from recsys.indexing import id_lookup
from recsys.io import Dataset, DatasetPaths, load_dataset
from recsys.scorers import TextScorer
from recsys.scoring import rank_users

__all__ = ["DriftThresholds", "DriftReport", "drift_report", "reference_ndcg", "log_drift", "run_drift",
           "EXPERIMENT", "TOP_N", "REFERENCE_METRIC"]

logger = logging.getLogger(__name__)

_BLOCK = 512
"""Users ranked together when measuring quality on NEW (memory ~ _BLOCK x n_items)."""

def drift_report(bundle: ModelBundle, new_data: str | Path | Dataset, *, k: int = 10,
                 thresholds: DriftThresholds = DriftThresholds(), reference: tuple[float, str] = (NAN, ""),
                 n_bootstrap: int = 1000, seed: int = 0, max_users: int = 20_000, model_uri: str = "",
                 label: str | None = None) -> DriftReport:
    """Compare the model's training window with the newer contract data in ``new_data``.

    Args:
        bundle: the model (``recsys.pyfunc_model.load_registered``).
        new_data: a dataset folder (``items`` and ``interactions`` in the data contract; the item table lists
            every item the interactions name, old or new) or an already loaded :class:`~recsys.io.Dataset`.
        k: NDCG@k and Recall@2k are reported; NDCG@10 is always computed for the comparison with the test metric.
        thresholds: when the verdict says an update is due.
        reference: the model's test NDCG@10 and where it came from (:func:`reference_ndcg`); NaN = unknown.
        n_bootstrap: bootstrap resamples of the quality CIs.
        seed: seed of the bootstrap and of the user sample.
        max_users: most users whose lists are scored for the quality figures (a seeded sample beyond that).
        model_uri: shown in the report.
        label: how the report names NEW (default: the folder).

    Raises:
        DataContractError: the folder is missing or breaks the data contract.
        RecsysError: NEW has no positive event, or ``k`` is out of range.
    """
    from recsys.topk import check_k

    k = check_k(k)
    if max_users < 1:
        raise ValueError(f"max_users must be >= 1; got {max_users}")
    label = label or (str(new_data) if not isinstance(new_data, Dataset) else "(dataset)")
    dataset = new_data if isinstance(new_data, Dataset) else load_dataset(DatasetPaths.from_dir(new_data))
    positives = list(bundle.positives)
    new = dataset.interactions.filter(pl.col(C.EVENT).is_in(positives)).select(C.USER_ID, C.ITEM_ID, C.TS)
    if new.height == 0:
        raise RecsysError(f"{label}: no positive events ({', '.join(positives)}); nothing to compare")
    known = pl.Series(C.ITEM_ID, bundle.item_ids.tolist(), dtype=pl.String)
    arrived = dataset.items.filter(~pl.col(C.ITEM_ID).is_in(known.implode()))
    ext = bundle.with_new_items(arrived)  # new items encoded by the model's text tower: vectors and candidates
    notes: list[str] = []

    lookup = id_lookup(ext.item_ids, C.ITEM_ID, C.ITEM_IDX)
    new = new.with_columns(pl.Series(C.USER_IDX, bundle.user_index(new[C.USER_ID].to_numpy()), dtype=pl.Int64)
                           ).join(lookup, on=C.ITEM_ID, how="left", maintain_order="left")
    old_item = pl.col(C.ITEM_IDX) < bundle.n_items
    old_user = pl.col(C.USER_IDX) >= 0
    shares = new.select(
        pl.col(C.ITEM_ID).filter(~old_item).n_unique().alias("unknown_items"),
        pl.col(C.ITEM_ID).n_unique().alias("items"),
        (~old_item).mean().alias("unknown_item_events"),
        pl.col(C.USER_ID).filter(~old_user).n_unique().alias("unknown_users"),
        pl.col(C.USER_ID).n_unique().alias("users"),
        (~old_user).mean().alias("unknown_user_events")).row(0, named=True)

    state = bundle.state
    train_pairs = state.events.select(C.USER_IDX, C.ITEM_IDX).unique()
    new_pairs = new.select(C.USER_ID, C.USER_IDX, C.ITEM_IDX).unique()
    p = np.bincount(train_pairs[C.ITEM_IDX].to_numpy(), minlength=ext.n_items).astype(np.float64)
    q = np.bincount(new_pairs[C.ITEM_IDX].to_numpy(), minlength=ext.n_items).astype(np.float64)
    tv, js = _distances(p, q)
    overlap, top_n = _top_overlap(p, q, TOP_N)

    vectors = _text_vectors(ext)
    centroid = user_centroid = NAN
    returning = 0
    train_matrix = _binary(train_pairs[C.USER_IDX].to_numpy(), train_pairs[C.ITEM_IDX].to_numpy(),
                           (bundle.n_users, ext.n_items))
    mine = new_pairs.filter(old_user)
    new_matrix = _binary(mine[C.USER_IDX].to_numpy(), mine[C.ITEM_IDX].to_numpy(), (bundle.n_users, ext.n_items))
    shift = user_shift = NAN
    if vectors is None:
        notes.append("the model has no text tower: the text centroid shift is not measured")
    else:
        before, after = p @ vectors / p.sum(), q @ vectors / q.sum()
        spread = 1.0 - float(before @ before)  # mean |v - c|^2 of unit vectors v around their mean c
        centroid = _cosine_distance(before, after)
        shift = float(np.sum((after - before) ** 2)) / spread if spread > 1e-12 else NAN
        both = np.flatnonzero((train_matrix.getnnz(axis=1) > 0) & (new_matrix.getnnz(axis=1) > 0))
        returning = len(both)
        if returning:
            a = np.asarray(train_matrix[both] @ vectors) / train_matrix[both].getnnz(axis=1)[:, None]
            b = np.asarray(new_matrix[both] @ vectors) / new_matrix[both].getnnz(axis=1)[:, None]
            user_centroid = float(np.mean(_cosine_distance(a, b)))
            user_shift = float(np.mean(np.sum((b - a) ** 2, axis=1))) / spread if spread > 1e-12 else NAN

    quality, popular, eval_users, eligible = _quality(ext, new_matrix, q, k, n_bootstrap, seed, max_users)
    if eligible > eval_users:
        notes.append(f"quality on NEW measured on a random sample of {eval_users} of the {eligible} known users "
                     "with unseen positives")
    ref_value, ref_source = reference
    drop = NAN
    if REFERENCE_METRIC in quality and math.isfinite(ref_value) and ref_value > 0:
        drop = 1.0 - quality[REFERENCE_METRIC][0] / ref_value
    if not math.isfinite(ref_value):
        notes.append(f"the model's test {REFERENCE_METRIC} was not found: the quality drop is not checked")
    elif 0 < eval_users < thresholds.min_eval_users:
        notes.append(f"only {eval_users} known users have unseen positives in NEW (fewer than "
                     f"{thresholds.min_eval_users}): the quality drop is not checked")
    if eval_users == 0:
        notes.append("no known user has positives in NEW that they had not seen: quality on NEW is not measured")

    times = state.events[C.TS]
    report = DriftReport(
        model=model_uri, data=label, k=k, train_window=(str(times.min()), str(times.max())),
        new_window=(str(new[C.TS].min()), str(new[C.TS].max())), train_pairs=train_pairs.height,
        new_events=new.height, new_users=shares["users"], new_items=shares["items"],
        unknown_item_share=shares["unknown_items"] / shares["items"],
        unknown_item_interactions=float(shares["unknown_item_events"]),
        unknown_user_share=shares["unknown_users"] / shares["users"],
        unknown_user_interactions=float(shares["unknown_user_events"]),
        popularity_tv=tv, popularity_js=js, top_overlap=overlap, top_n=top_n, centroid_distance=centroid,
        centroid_shift=shift, user_centroid_distance=user_centroid, user_centroid_shift=user_shift,
        returning_users=returning, eval_users=eval_users, quality=quality,
        popularity_quality=popular, reference_ndcg=ref_value, reference_source=ref_source, ndcg_drop=drop,
        notes=tuple(notes), thresholds=thresholds)
    reasons = _reasons(report)
    return replace(report, update_due=bool(reasons), reasons=tuple(reasons))


def _reasons(r: DriftReport) -> list[str]:
    t = r.thresholds
    out = []
    if r.unknown_item_interactions > t.new_item_interactions:
        out.append(f"new items: {pct(r.unknown_item_interactions)} of NEW's interactions are on items the model "
                   f"does not know (threshold {pct(t.new_item_interactions)})")
    if r.unknown_user_interactions > t.new_user_interactions:
        out.append(f"new users: {pct(r.unknown_user_interactions)} of NEW's interactions are by users the model "
                   f"does not know (threshold {pct(t.new_user_interactions)})")
    if r.popularity_tv > t.popularity_tv:
        out.append(f"popularity shift: total variation {r.popularity_tv:.3f} between the item distributions "
                   f"(threshold {t.popularity_tv:.2f}; top-{r.top_n} overlap {pct(r.top_overlap)})")
    if r.centroid_shift > t.centroid_shift:
        out.append(f"text centroid shift: the mean item vector moved {r.centroid_shift:.3f} of the training spread "
                   f"(threshold {t.centroid_shift:.2f}; cosine distance {r.centroid_distance:.4f}): "
                   "users moved to other topics")
    if r.ndcg_drop > t.ndcg_drop and r.eval_users >= t.min_eval_users:
        out.append(f"quality drop: {REFERENCE_METRIC} {r.quality[REFERENCE_METRIC][0]:.4f} on NEW vs "
                   f"{r.reference_ndcg:.4f} in test, {pct(r.ndcg_drop)} lower (threshold {pct(t.ndcg_drop)})")
    return out


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _distances(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """Total variation and Jensen-Shannon divergence (bits) of two count vectors over the same items."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(0.5 * np.abs(p - q).sum()), float(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def _top_overlap(p: np.ndarray, q: np.ndarray, n: int) -> tuple[float, int]:
    """Share of the shorter top-``n`` list (items with counts, ties by index) found in the other; and its length."""
    def top(counts: np.ndarray) -> np.ndarray:
        return np.argsort(-counts, kind="stable")[:min(n, int(np.count_nonzero(counts)))]

    a, b = top(p), top(q)
    size = min(len(a), len(b))
    return (len(np.intersect1d(a, b)) / size if size else NAN), size


def _text_vectors(bundle: ModelBundle) -> np.ndarray | None:
    """float [n_items, d] L2-normalised text vectors of the (extended) catalogue, or None without a text tower."""
    state = bundle.state
    if state.item_vectors is not None and state.item_vectors.shape[0] == bundle.n_items:
        return np.asarray(state.item_vectors, np.float64)
    text = next((m for m in state.models.values() if isinstance(m, TextScorer)), None)
    if text is None or text.item_vectors_.shape[0] != bundle.n_items:
        return None
    vectors = text.item_vectors_.numpy().astype(np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _cosine_distance(a: np.ndarray, b: np.ndarray):
    """1 - cosine of ``a`` and ``b`` (vectors, or rows of two matrices)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    norm = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    out = np.maximum(1.0 - np.sum(a * b, axis=1) / norm, 0.0)
    return float(out[0]) if out.size == 1 else out


def _quality(bundle: ModelBundle, new_matrix: sp.csr_matrix, new_counts: np.ndarray, k: int, n_bootstrap: int,
             seed: int, max_users: int) -> tuple[dict[str, tuple[float, float, float]], dict[str, float], int, int]:
    """The model's NDCG@k/Recall@2k (and NDCG@10) on NEW for known users with unseen positives; NEW-popular's.

    Returns the model's figures with CIs, the popularity reference's, the users evaluated and the users eligible
    (more than ``max_users``: a seeded random sample of them is evaluated).
    """
    from recsys.evaluation.bootstrap import bootstrap_many
    from recsys.evaluation.metrics import ranking_metrics
    from recsys.scorers.popularity import PopularityScorer

    seen = (bundle.history != 0).astype(np.float32)
    truth = (new_matrix - new_matrix.multiply(seen)).tocsr()
    truth.eliminate_zeros()
    users = np.flatnonzero(truth.getnnz(axis=1) > 0)
    eligible = len(users)
    if eligible == 0:
        return {}, {}, 0, 0
    if eligible > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    length = max(2 * k, 10)
    topk = rank_users(bundle.pipeline, users, bundle.history, length, block_size=_BLOCK)[0]
    ks = sorted({k, 2 * k, 10})
    names = {f"ndcg@{k}", f"recall@{2 * k}", REFERENCE_METRIC}
    target = truth[users]
    model = {m: v for m, v in ranking_metrics(topk, target, ks).items() if m in names}
    quality = bootstrap_many(model, n_resamples=n_bootstrap, seed=seed)
    popular = rank_users(PopularityScorer("new_popular", new_counts), users, seen, length, block_size=_BLOCK)[0]
    reference = {m: float(np.nanmean(v)) for m, v in ranking_metrics(popular, target, ks).items() if m in names}
    order = sorted(names, key=lambda m: (m != f"ndcg@{k}", m != f"recall@{2 * k}", m))
    return {m: quality[m] for m in order}, {m: reference[m] for m in order}, len(users), eligible


# ---- the model's own test metric, MLflow, the command -----------------------------------------
def reference_ndcg(model_uri: str, bundle: ModelBundle, tracking_uri: str | None) -> tuple[float, str]:
    """The model's test NDCG@10 and its source: the registry version's tag, the bundle's meta, or its run.

    Returns ``(nan, "")`` when none has it (the quality rule is then skipped, with a note).
    """
    from recsys.registry import METRIC_TAG, parse_model_uri

    found = parse_model_uri(model_uri)
    if found is not None:
        try:
            from recsys.registry import resolve_version

            version = resolve_version(*found, tracking_uri)
            value = _float(version.tags.get(METRIC_TAG))
            if value is not None:
                return value, f"version {version.version} tag {METRIC_TAG}"
        except Exception as exc:  # noqa: BLE001 - any store error: try the other sources
            logger.debug("no version tag for %s: %s", model_uri, exc)
    value = _float(bundle.meta.get(METRIC_TAG))
    if value is not None:
        return value, f"bundle meta {METRIC_TAG}"
    run_id = bundle.meta.get("run_id")
    if run_id and tracking_uri:
        try:
            from mlflow import MlflowClient

            from recsys.evaluation.tracking import mlflow_metric_key

            key = mlflow_metric_key(bundle.pipeline.name, "all", REFERENCE_METRIC)
            value = _float(MlflowClient(tracking_uri).get_run(run_id).data.metrics.get(key))
            if value is not None:
                return value, f"run {run_id} metric {key}"
        except Exception as exc:  # noqa: BLE001
            logger.debug("no run metric for %s: %s", run_id, exc)
    return NAN, ""


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def log_drift(report: DriftReport, tracking_uri: str, *, run_name: str | None = None) -> str:
    """Log the report as a run of the ``recsys-drift`` experiment; returns the run id.

    Params: model URI, data path, k and the thresholds. Metrics: :meth:`DriftReport.metrics`.
    Tags: ``update_due``. Artifacts: ``drift_report.json`` and ``drift_report.txt``.
    """
    import mlflow

    from recsys.evaluation.tracking import experiment_id

    mlflow.set_tracking_uri(tracking_uri)
    params = {"model_uri": report.model, "data": report.data, "k": report.k}
    params |= {f"threshold.{k}": v for k, v in asdict(report.thresholds).items()}
    with mlflow.start_run(experiment_id=experiment_id(mlflow, EXPERIMENT, tracking_uri),
                          run_name=run_name or f"drift-{Path(report.data).name}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(report.metrics())
        mlflow.set_tags({"update_due": str(report.update_due).lower(),
                         "reasons": "; ".join(r.split(":")[0] for r in report.reasons) or "none"})
        mlflow.log_dict(report.to_dict(), REPORT_JSON)
        mlflow.log_text(report.render(), REPORT_TEXT)
        logger.info("logged drift run %s to %s", run.info.run_id, tracking_uri)
        return run.info.run_id


def run_drift(model_uri: str, new_data: str | Path, *, tracking_uri: str | None, k: int = 10, log: bool = True,
              thresholds: DriftThresholds = DriftThresholds()) -> tuple[DriftReport, str | None]:
    """``recsys drift``: read NEW (fails fast), load the model, compare, log to MLflow unless ``log`` is False."""
    from recsys.pyfunc_model import load_registered
    from recsys.topk import check_k

    check_k(k)
    dataset = load_dataset(DatasetPaths.from_dir(new_data))
    bundle = load_registered(model_uri, tracking_uri)
    report = drift_report(bundle, dataset, k=k, thresholds=thresholds, model_uri=model_uri, label=str(new_data),
                          reference=reference_ndcg(model_uri, bundle, tracking_uri))
    run_id = log_drift(report, tracking_uri) if log and tracking_uri else None
    return report, run_id
