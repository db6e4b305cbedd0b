"""Packaging a trained pipeline: the bundle, the pyfunc model in the run, the registry version and the gate.

Called by ``recsys train`` (stage ``all``) after the evaluation: the model registered is the
one whose test metrics were just measured; its histories are then brought up to the whole
dataset (every event the run read), so online requests see each user's latest items.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys import contract as C
from recsys.bundle import ModelBundle
from recsys.evaluation.eval_data import EvalData
from recsys.evaluation.runner import EvalResult
from recsys.indexing import FitInput
from recsys.registry import (
    GATE_METRIC,
    METRIC_TAG,
    PARENT_PER_USER_ARTIFACT,
    PER_USER_ARTIFACT,
    WINDOW_TAG,
    GateResult,
    gate,
    register,
)
from recsys.scorers import binarize
from training.fit_pipeline import PipelineRecommender

__all__ = ["package_pipeline", "per_user_metrics", "Registration", "log_and_register"]

logger = logging.getLogger(__name__)


def package_pipeline(main: PipelineRecommender, data: EvalData, history: FitInput, meta: dict | None = None,
                     fit: FitInput | None = None, carried: pl.DataFrame | None = None) -> ModelBundle:
    """The fitted pipeline (every model already in its runtime form) with the id maps and every user's history.

    Args:
        main: the fitted pipeline: the evaluated one, or its refit on every event (``fit``).
        data: the run's indexed data (id maps, the fit window).
        history: every event the run read, as a fit input in the run's index (``all_events``): the
            bundle's histories. Indexed already, so packaging neither keeps nor re-joins the
            string-keyed log (at 20M events that copy held 3 GB all run); where ``main`` was refit on
            it, the same object, so its matrices are not built twice.
        fit: what ``main`` was fitted on (default: the test window's fit data).
        carried: contract interactions of users the run's data lacks (an update keeps its parent's histories).
    """
    if main.pipeline_ is None:
        raise ValueError("the pipeline is not fitted; run the evaluation first")
    pipeline = main.pipeline_
    fit = fit if fit is not None else data.test.fit
    config = data.config
    bundle = ModelBundle(pipeline, data.user_ids.astype(object), data.item_ids.astype(object), fit.interactions,
                         binarize(fit.interactions).getnnz(axis=0).astype(np.float32), tuple(config.positives),
                         {str(e): float(w) for e, w in config.event_weights},
                         {"relevant": list(config.relevance)} | (meta or {}))
    if carried is None:
        return bundle.with_fit(history)
    columns = [C.USER_IDX, C.ITEM_IDX, C.TS, C.EVENT]  # no model reads a history's impression ids
    earlier = bundle.index(carried)[0].select(columns)
    return bundle.with_indexed(pl.concat([earlier, history.events.select(columns)], how="vertical_relaxed"))


def per_user_metrics(result: EvalResult, model: str = "pipeline") -> pl.DataFrame:
    """``user_id`` and every per-user test metric of ``model``: the gate's evidence."""
    found = next((m for m in result.models if m.name == model), None)
    if found is None:
        raise ValueError(f"no model {model!r} in the evaluation")
    users = result.data.user_ids[result.data.test.users]
    return pl.DataFrame({C.USER_ID: users.astype(str)} | {k: np.asarray(v, np.float64)
                                                         for k, v in found.per_user.items()})


def _parent_metrics(result: EvalResult) -> pl.DataFrame | None:
    """An update run's evaluation of the previous version on the same test window (None otherwise)."""
    return per_user_metrics(result, "parent") if any(m.name == "parent" for m in result.models) else None


@dataclass(frozen=True)
class Registration:
    """Where the model went: the logged model, its registry version, and the gate's decision."""

    model_uri: str
    name: str
    version: str
    gate: GateResult


def log_and_register(mlflow, run_id: str, bundle: ModelBundle, result: EvalResult, *, name: str,
                     fingerprint: dict, git_commit: str, tracking_uri: str, force: bool = False,
                     tags: dict[str, str] | None = None) -> Registration:
    """Log the bundle as a pyfunc in run ``run_id``, register it as ``challenger``, run the promotion gate."""
    from recsys.pyfunc_model import log_bundle

    metrics = per_user_metrics(result)
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    split = result.data.config.split.describe() | {"history": result.data.config.history}
    window = hashlib.sha256(json.dumps([fingerprint, split], sort_keys=True, default=str).encode()).hexdigest()[:16]
    with tempfile.TemporaryDirectory() as scratch, mlflow.start_run(run_id=run_id):
        for frame, artifact in ((metrics, PER_USER_ARTIFACT), (_parent_metrics(result), PARENT_PER_USER_ARTIFACT)):
            if frame is not None:
                frame.write_parquet(Path(scratch) / artifact)
                mlflow.log_artifact(str(Path(scratch) / artifact))
        info = log_bundle(bundle, Path(scratch) / "bundle")
    mean = float(np.nanmean(metrics[GATE_METRIC].to_numpy())) if GATE_METRIC in metrics.columns else float("nan")
    version = register(info.model_uri, name, run_id=run_id, tracking_uri=tracking_uri,
                       tags={"git_commit": git_commit, "data_fingerprint": digest, WINDOW_TAG: window,
                             METRIC_TAG: f"{mean:.4f}"} | (tags or {}))
    decision = gate(name, version, force=force, tracking_uri=tracking_uri)
    return Registration(info.model_uri, name, version, decision)
