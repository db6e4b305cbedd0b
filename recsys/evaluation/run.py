"""An evaluation's outputs: the report files and the MLflow run of an :class:`EvalResult`, and the git commit.

What fits the models lives in ``training`` (``training.evaluate_baselines`` for ``recsys
evaluate``); this module only records a finished evaluation, so the core never imports training.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recsys.evaluation.report import ReportFiles, render_table, write_report
from recsys.evaluation.runner import EvalResult

__all__ = ["portable_command", "EvaluationRun", "record_run", "git_commit"]


@dataclass
class EvaluationRun:
    """What an evaluation produced: results, the terminal table, report files, MLflow run id."""

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


def portable_command(script: str, argv: list[str], root: Path) -> str:
    """The command line a result file records, without this machine's paths.

    Paths inside the checkout's parent become relative to the checkout (``../datasets/...``);
    any other absolute path (a scratch store, say) keeps at most its last two parts, never its
    top-level folder, behind ``<local>/``, so the file says what was run without naming a machine.
    """
    base = root.resolve().parent

    def rewrite(match: re.Match) -> str:
        text = match.group(0)
        lead = "///" if text.startswith("//") else ""  # sqlite:////abs/path keeps its URI form
        path = Path("/" + text.lstrip("/"))
        if path.is_relative_to(base):
            return lead + os.path.relpath(path, root)
        return lead + "<local>/" + "/".join(path.parts[max(2, len(path.parts) - 2):])

    return " ".join(["python", script, *(re.sub(r"(?<![\w.])/[^\s,]+", rewrite, arg) for arg in argv)])


def record_run(result: EvalResult, *, dataset: str, report_dir: Path | None = None, tracking_uri: str | None = None,
               command: str = "") -> EvaluationRun:
    """Write the report and log the run to MLflow, as asked.

    Args:
        result: the finished evaluation.
        dataset: the dataset's name, recorded in the JSON and the MLflow params.
        report_dir: where ``results.json``, ``report.html`` and the plots go (None: no files kept).
        tracking_uri: MLflow store to log the run to (None: not logged).
        command: the command line, recorded in the JSON.

    Returns:
        The result, its terminal table, the report files (None without ``report_dir``) and the
        MLflow run id (None without ``tracking_uri``).
    """
    files = run_id = None
    with tempfile.TemporaryDirectory() as scratch:
        target = report_dir if report_dir is not None else Path(scratch)  # MLflow needs files to attach
        if report_dir is not None or tracking_uri is not None:
            files = write_report(result, target, dataset=dataset, command=command, git_commit=git_commit())
        if tracking_uri is not None and files is not None:
            from recsys.evaluation.tracking import log_evaluation  # mlflow is heavy: only when logging

            run_id = log_evaluation(result, files, tracking_uri=tracking_uri, dataset=dataset)
    return EvaluationRun(result, render_table(result), files if report_dir is not None else None, run_id)
