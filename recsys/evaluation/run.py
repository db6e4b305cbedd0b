"""``recsys evaluate``: one call that loads, splits, evaluates, reports and logs to MLflow."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys.evaluation.report import ReportFiles, render_table, write_report
from recsys.evaluation.runner import EvalResult, evaluate_models
from recsys.evaluation.setup import EvalConfig, build_eval_data
from recsys.io import DatasetPaths, load_dataset

__all__ = ["EvaluationRun", "evaluate_run", "git_commit"]

logger = logging.getLogger(__name__)


@dataclass
class EvaluationRun:
    """What ``evaluate_run`` produced: results, the terminal table, report files, MLflow run id."""

    result: EvalResult
    table: str
    files: ReportFiles | None
    run_id: str | None


def git_commit(cwd: Path | None = None) -> str:
    """Short commit of the working tree (``unknown`` outside git); recorded with results."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=cwd,
                             check=False, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def evaluate_run(data_dir: Path, config: EvalConfig, *, baselines: Sequence[str], report_dir: Path | None = None,
                 tracking_uri: str | None = None, show_progress: bool = False, command: str = "") -> EvaluationRun:
    """Evaluate the named baselines on a dataset folder with the full-ranking protocol.

    Args:
        data_dir: folder with ``items.parquet`` and ``interactions.parquet`` (see ``recsys data import``).
        config: split, history, positives, cut-offs, bootstrap.
        baselines: names from ``training.baseline_specs.BASELINES``.
        report_dir: where ``results.json``, ``report.html`` and the plots go (None: no files).
        tracking_uri: MLflow store to log the run to (None: not logged).
        show_progress: progress bars while scoring.
        command: the command line, recorded in the JSON.
    """
    from training.baseline_specs import baseline_specs  # the CLI reaches training lazily

    if not baselines:
        raise ValueError("nothing to evaluate: name at least one baseline")
    specs = baseline_specs(baselines)
    data = build_eval_data(load_dataset(DatasetPaths.from_dir(data_dir)), config)
    logger.info("evaluating %d models on %d test users x %d items", len(specs), len(data.test.users),
                len(data.item_ids))
    result = evaluate_models(data, specs, show_progress=show_progress)
    files = run_id = None
    with tempfile.TemporaryDirectory() as scratch:
        target = report_dir if report_dir is not None else Path(scratch)  # MLflow needs files to attach
        if report_dir is not None or tracking_uri is not None:
            files = write_report(result, target, dataset=Path(data_dir).name, command=command,
                                 git_commit=git_commit())
        if tracking_uri is not None and files is not None:
            from recsys.evaluation.tracking import log_evaluation

            run_id = log_evaluation(result, files, tracking_uri=tracking_uri, dataset=Path(data_dir).name)
    return EvaluationRun(result, render_table(result), files if report_dir is not None else None, run_id)
