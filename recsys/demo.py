"""``recsys demo``: the main job, end to end, on the bundled (seeded, generated) demo data.

The demo data is ``recsys.synthetic.DEMO_CONFIG``: generated, not downloaded, so it is
license-clean and offline, and its item text carries the click signal (see
``recsys.synthetic``). The demo runs every stage that exists in this build (generate,
validate, split, evaluate the baselines) and says which ones are still to come, so it never
pretends to have trained what it has not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features.split import SplitConfig
from recsys.datasets import SPLIT_FILE, split_dataset, validate, write_synthetic
from recsys.errors import DataContractError
from recsys.evaluation.run import EvaluationRun, evaluate_run
from recsys.evaluation.setup import EvalConfig
from recsys.summary import DatasetSummary
from recsys.synthetic import DEMO_CONFIG, SyntheticConfig
from training.baseline_specs import BASELINES

__all__ = ["DemoResult", "run_demo", "DEMO_SPLIT", "PENDING_STAGES"]

logger = logging.getLogger(__name__)

DEMO_SPLIT = SplitConfig(mode="global", valid=0.1, test=0.1)
"""A leak-free time cut: the demo log is long and dense enough for the global mode."""

PENDING_STAGES = ("text tower", "candidates + features + LightGBM ranker", "MLflow model registration",
                  "batch export")
"""Pipeline stages this build does not have yet; the demo lists them instead of faking them."""


@dataclass
class DemoResult:
    """What the demo did: where the data is, its summary, the split, and the timings."""

    data_dir: Path
    summary: DatasetSummary
    split: pl.DataFrame
    split_file: Path
    evaluation: EvaluationRun
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(out: Path, config: SyntheticConfig = DEMO_CONFIG, split: SplitConfig = DEMO_SPLIT, *,
             tracking_uri: str | None = None) -> DemoResult:
    """Generate the demo data into ``out``, validate and split it, and evaluate the baselines.

    The evaluation (every baseline, full ranking, bootstrap CIs) writes its report to
    ``out/report`` and, when ``tracking_uri`` is given, logs an MLflow run there.
    """
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    logger.info("generating demo data (seed %d) into %s", config.seed, out)
    paths = write_synthetic(out, config)
    seconds["generate"] = time.perf_counter() - start
    start = time.perf_counter()
    checked = validate(paths)
    if checked.data is None or checked.summary is None:  # the generator broke its own contract: a bug
        raise DataContractError("demo data failed validation:\n" + checked.report.render())
    seconds["validate"] = time.perf_counter() - start
    start = time.perf_counter()
    windows, split_file = split_dataset(checked.data, split, out / SPLIT_FILE)
    seconds["split"] = time.perf_counter() - start
    start = time.perf_counter()
    evaluation = evaluate_run(out, EvalConfig(split=split), baselines=BASELINES, report_dir=out / "report",
                              tracking_uri=tracking_uri, command="recsys demo")
    seconds["evaluate"] = time.perf_counter() - start
    return DemoResult(out, checked.summary, windows, split_file, evaluation, seconds)
