"""MLflow logging of an evaluation run: its config, every metric, the JSON, report and plots.

The tracking URI is always an explicit argument (the CLI resolves flag > ``MLFLOW_TRACKING_URI``
> the local default); nothing here reads the environment or sets global state at import.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict
from pathlib import Path

from recsys.evaluation.report import ReportFiles, metric_name
from recsys.evaluation.runner import EvalResult

__all__ = ["local_tracking_uri", "log_evaluation", "mlflow_metric_key", "experiment_id", "EXPERIMENT",
           "SLICE_METRICS"]

logger = logging.getLogger(__name__)

EXPERIMENT = "recsys-evaluate"
SLICE_METRICS = ("ndcg@10", "recall@20")
"""Metrics logged per slice (cold, history length, event...): the whole-catalogue slice ``all`` logs
every metric. Each MLflow metric costs a store round trip at logging and again when ``log_model``
links the run's metrics to the model (about 7 ms each on SQLite: 15,000 keys on the demo took
two minutes); the full table is the run's ``results.json``."""


def local_tracking_uri(root: str | Path = ".") -> str:
    """The default store: SQLite at ``ROOT/mlflow/mlflow.db`` (artifacts beside it)."""
    db = Path(root).resolve() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def mlflow_metric_key(model: str, slice_name: str, metric: str) -> str:
    """MLflow keys allow ``[A-Za-z0-9_\\-. :/]``: ``ease/cold_recall@20`` -> ``ease/cold_recall_at_20``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", f"{model}/{metric_name(slice_name, metric)}".replace("@", "_at_"))


def experiment_id(mlflow, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created (artifacts beside a local SQLite store) if missing."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        # Keep artifacts beside the local SQLite store instead of in ./mlruns of the cwd.
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def log_evaluation(result: EvalResult, files: ReportFiles, *, tracking_uri: str, experiment: str = EXPERIMENT,
                   run_name: str | None = None, dataset: str = "", run_id: str | None = None) -> str:
    """Log one evaluation as an MLflow run (a new one, or ``run_id`` resumed); returns the run id.

    Params: the resolved evaluation config and each model's chosen setting. Metrics: every metric
    of slice ``all`` and the :data:`SLICE_METRICS` of the other slices, each value with its CI
    bounds. Artifacts: the JSON (every row), the HTML report, the plots.
    """
    import mlflow  # heavy import, only when logging

    mlflow.set_tracking_uri(tracking_uri)
    cfg = result.data.config
    params = {f"split.{k}": v for k, v in cfg.split.describe().items()}
    params |= {k: v for k, v in asdict(cfg).items() if k not in ("split", "event_weights")}
    params |= {f"event_weight.{k}": w for k, w in cfg.event_weights}
    params |= {f"setting.{m.name}": str(m.setting) for m in result.models}
    params |= {"dataset": dataset, "n_test_users": len(result.data.test.users), "n_items": len(result.data.item_ids)}
    metrics: dict[str, float] = {}
    for r in result.table.iter_rows(named=True):
        if r["slice"] != "all" and r["metric"] not in SLICE_METRICS:
            continue
        key = mlflow_metric_key(r["model"], r["slice"], r["metric"])
        if r["value"] is not None and r["value"] == r["value"]:  # NaN is not loggable
            metrics[key] = r["value"]
            if r["ci_low"] is not None:
                metrics[f"{key}.ci_low"], metrics[f"{key}.ci_high"] = r["ci_low"], r["ci_high"]
    for m in result.models:
        metrics |= {f"{m.name}/{k}": v for k, v in m.seconds.items()}
        if m.peak_rss_mb is not None:
            metrics[f"{m.name}/peak_rss_mb"] = m.peak_rss_mb
    where = {"run_id": run_id} if run_id else {"experiment_id": experiment_id(mlflow, experiment, tracking_uri),
                                               "run_name": run_name}
    with mlflow.start_run(**where) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        for path in (files.json, files.html, *files.plots):
            mlflow.log_artifact(str(path))
        logger.debug("logged MLflow run %s (%d metrics) to %s", run.info.run_id, len(metrics), tracking_uri)
        return run.info.run_id
