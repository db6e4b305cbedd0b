"""``recsys evaluate --baselines``: load, split, fit and evaluate the baselines, report, log to MLflow.

It fits models, so it is training; the CLI imports it lazily. Recording the result (report
files, MLflow) is the core's :func:`recsys.evaluation.run.record_run`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.evaluation.run import EvaluationRun, record_run
from recsys.io import DatasetPaths, load_dataset
from training.baseline_specs import baseline_specs
from training.fit_models import evaluate_specs

__all__ = ["evaluate_baselines"]

logger = logging.getLogger(__name__)


def evaluate_baselines(data_dir: Path, config: EvalConfig, *, baselines: Sequence[str],
                       report_dir: Path | None = None, tracking_uri: str | None = None, show_progress: bool = False,
                       command: str = "") -> EvaluationRun:
    """Evaluate the named baselines on a dataset folder with the full-ranking protocol.

    Args:
        data_dir: folder with ``items.parquet`` and ``interactions.parquet`` (see ``recsys data import``).
        config: split, history, positives, cut-offs, bootstrap.
        baselines: names from :data:`training.baseline_specs.BASELINES`.
        report_dir: where ``results.json``, ``report.html`` and the plots go (None: no files).
        tracking_uri: MLflow store to log the run to (None: not logged).
        show_progress: progress bars while scoring.
        command: the command line, recorded in the JSON.

    Raises:
        ValueError: no baseline named, or an unknown one (the message lists the allowed names).
    """
    if not baselines:
        raise ValueError("nothing to evaluate: name at least one baseline")
    specs = baseline_specs(baselines)
    data = build_eval_data(load_dataset(DatasetPaths.from_dir(data_dir)), config)
    logger.info("evaluating %d models on %d test users x %d items", len(specs), len(data.test.users),
                len(data.item_ids))
    result = evaluate_specs(data, specs, show_progress=show_progress)
    return record_run(result, dataset=Path(data_dir).name, report_dir=report_dir, tracking_uri=tracking_uri,
                      command=command)
