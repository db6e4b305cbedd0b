"""``recsys demo``: the main job, end to end, on the bundled (seeded, generated) demo data.

The demo data is ``recsys.synthetic.DEMO_CONFIG``: generated, not downloaded, so it is
license-clean and offline, and its item text carries the click signal (see
``recsys.synthetic``). The demo runs every stage that exists in this build: generate,
validate, split, then ``recsys train``'s whole pipeline (the text tower fine-tuned on a sample
of the impressions, LightFM, EASE, candidates, features, the LightGBM ranker), evaluated
against its ablations, the zero-shot encoder and every baseline, tracked in MLflow. It lists
the stages still to come, so it never pretends to have done what it has not.
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
from recsys.export import ExportConfig, recommend_to_file
from recsys.summary import DatasetSummary
from recsys.synthetic import DEMO_CONFIG, SyntheticConfig
from training.baseline_specs import BASELINES
from training.encoder_modes import FineTuneConfig
from training.pipeline import TrainConfig, train
from training.text_tower import TextTowerConfig

__all__ = ["DemoResult", "run_demo", "DEMO_SPLIT", "PENDING_STAGES", "DEMO_K"]

logger = logging.getLogger(__name__)

DEMO_SPLIT = SplitConfig(mode="global", valid=0.1, test=0.1)
"""A leak-free time cut: the demo log is long and dense enough for the global mode."""

PENDING_STAGES: tuple[str, ...] = ()
"""Pipeline stages this build does not have yet; the demo lists them instead of faking them."""
DEMO_K = 20
"""List length of the demo's batch export."""


@dataclass
class DemoResult:
    """What the demo did: where the data is, its summary, the split, and the timings."""

    data_dir: Path
    summary: DatasetSummary
    split: pl.DataFrame
    split_file: Path
    training: object
    """``training.pipeline.TrainResult``: the ranked pipeline against its ablations and the baselines."""
    seconds: dict[str, float] = field(default_factory=dict)
    export: object | None = None
    """``recsys.export.ExportSummary`` of the batch export from the registered champion (None without MLflow)."""


def run_demo(out: Path, config: SyntheticConfig = DEMO_CONFIG, split: SplitConfig = DEMO_SPLIT, *,
             tracking_uri: str | None = None, text_model: str | None = None, text_mode: str = "freeze:5"
             ) -> DemoResult:
    """Generate the demo data into ``out``, validate and split it, train and evaluate.

    The text tower (``text_model``, default all-MiniLM-L6-v2) is fine-tuned (``text_mode``,
    default: only the top of its 6 layers trains) on a sample of 4,000 impressions; LightFM,
    EASE, candidates, features and the ranker follow (``training.pipeline.train``, stage
    ``all``), evaluated beside the ablations, zero-shot and every baseline (full ranking,
    bootstrap CIs); the report goes to ``out/report`` and, when ``tracking_uri`` is given,
    everything is logged to MLflow.
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
    text = TextTowerConfig(model=text_model, finetune=FineTuneConfig(mode=text_mode), max_train_examples=4000,
                           max_epochs=1, batch_size=32, lr=3e-4)
    result = train(TrainConfig(data=str(out), split=split, history="train+valid", text=text, baselines=BASELINES,
                               report_dir=str(out / "report")), tracking_uri=tracking_uri)
    seconds["train_and_evaluate"] = time.perf_counter() - start
    export = None
    if result.registration is not None:  # the registry needs MLflow: export from what was just registered
        start = time.perf_counter()
        export = recommend_to_file(f"models:/{result.registration.name}@champion", out, out / "recs.parquet",
                                   ExportConfig(k=DEMO_K), tracking_uri=tracking_uri, show_progress=False)
        seconds["batch_export"] = time.perf_counter() - start
    return DemoResult(out, checked.summary, windows, split_file, result, seconds, export)
