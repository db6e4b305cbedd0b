"""``recsys train``: the training pipeline, tracked in MLflow (one parent run, a child per stage).

Stage ``all`` (the default) is the product: text tower, LightFM and EASE, candidates, polars
features and the LightGBM ranker (``training.fit_pipeline``), evaluated on the test window
against its ablations (no text, no CF, each tower alone), popularity and any baselines, with
the cold-exposure trade-off curve. Stage ``text`` fits the text tower alone beside its
zero-shot twin, so a run answers "did fine-tuning help, and by how much".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import polars as pl
import yaml

from features.split import SplitConfig
from recsys import contract as C
from recsys.config import flatten
from recsys.evaluation.eval_data import EvalConfig, EvalData, build_eval_data
from recsys.evaluation.report import ReportFiles, render_table, verdict, write_report
from recsys.evaluation.run import git_commit
from recsys.evaluation.runner import EvalResult
from recsys.fingerprint import data_fingerprint
from recsys.indexing import FitInput, fit_input
from recsys.io import DatasetPaths, load_dataset
from recsys.memory import frozen_heap, peak_rss_mb, release
from recsys.scorers import TextScorer
from recsys.scratch import mark_interrupted, owner_tags, run_temp_folder
from training.baseline_specs import (
    DEFAULT_BASELINES,
    LIGHTFM_EPOCHS,
    baseline_specs,
    ease_fits,
    fitting_baselines,
    memory_budget,
)
from training.blend import BlendRecommender, FitOnce
from training.fit_baselines import EASEConfig, EASERecommender
from training.fit_models import ModelSpec, evaluate_specs
from training.fit_pipeline import (
    NO_NEW_ITEMS,
    VARIANTS,
    ColdExposureView,
    PipelineConfig,
    PipelineRecommender,
    StageOne,
    StageView,
    check_epoch_grid,
    refit_for_shipping,
)
from training.fit_text import TextTowerRecommender, with_mode
from training.package import Registration, log_and_register, package_pipeline
from training.recipe import Recipe
from training.stage_logging import (
    cold_tradeoff,
    log_stages,
    merit_evidence,
    metric_dict,
    plot_cold_tradeoff,
    window_candidate_recall,
)
from training.text_tower import TextTowerConfig, tower_name
from training.warm_start import ParentView, UpdateConfig, WarmStart, parent_interactions, warm_start

__all__ = ["TrainConfig", "TrainResult", "train", "STAGES"]

logger = logging.getLogger(__name__)

STAGES = ("all", "text")
EXPERIMENT = "recsys-train"


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, split, the models, and what they are compared with."""

    data: str = "demo_data"
    """Dataset folder (``items.parquet``, ``interactions.parquet``)."""
    stage: Literal["all", "text"] = "all"
    """``all``: the ranked pipeline (text tower, LightFM, candidates, features, ranker); ``text``: the tower alone."""
    split: SplitConfig = field(default_factory=lambda: SplitConfig(mode="per-user", valid=0.1, test=0.2))
    """Temporal split of the interactions."""
    history: Literal["train", "train+valid"] = "train"
    """What models fit on and see at test time."""
    event_weights: tuple[tuple[str, float], ...] = tuple(C.DEFAULT_EVENT_WEIGHTS.items())
    """Weight of each event in the interaction matrices (summed per user and item): what EASE,
    item-kNN and ALS fit on, and LightFM too with ``pipeline.lightfm.use_weights``."""
    relevant: tuple[str, ...] | None = None
    """Events that are relevant: the valid and test windows' targets (``EvalConfig.relevant``; None: the
    positives). The recipe sets ``[purchase]`` on rated data; the ranker still learns from every positive."""
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    """The text tower (its ``finetune.mode`` is the fine-tuned model; zero-shot runs beside it)."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """LightFM, candidates, features and the ranker (stage ``all``)."""
    compare_zero_shot: bool = True
    """Also fit and evaluate the zero-shot encoder (the before of "before and after fine-tuning")."""
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    """Baselines evaluated in the same run, each tuned on the valid window (``training.baseline_specs``);
    those that would not fit in memory on this catalogue are left out, and the run says so."""
    baseline_lightfm_epochs: tuple[int, ...] = LIGHTFM_EPOCHS
    """The LightFM baselines' epoch grid (the recipe trims it on very large logs)."""
    baseline_threads: int = 1
    """Threads of the LightFM and ALS baselines (1: repeatable; the recipe gives large logs every core)."""
    blend_with_ease: bool = False
    """Stage ``text``: also evaluate ``text_ease_blend`` (the tower and EASE, weight chosen on valid)."""
    blend_weights: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
    """Text weights tried on the valid window for the blend."""
    blend_top: int | None = 20
    """The blend standardises each model by its top-N scores per user (None: the whole catalogue)."""
    compare_int8: bool = False
    """Stage ``text``: also evaluate the tower with int8 catalogue encoding (``<name>_int8``): its quality cost."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for the CIs."""
    max_eval_users: int | None = None
    """Evaluate (and tune the baselines) on at most this many users per window, a seeded sample;
    every model still fits on every user (``EvalConfig.max_users``). None = every user."""
    report_dir: str | None = None
    """Where the report goes; None = ``DATA/reports/train``."""
    from_model: str | None = None
    """Update this registered version (``models:/recsys@champion``) on ``data`` instead of training from
    scratch: warm-started text tower and LightFM, refit ranker (stage ``all``; see ``update``)."""
    update: UpdateConfig = field(default_factory=UpdateConfig)
    """Replay share, L2-SP weight and LightFM epochs of an update (``from_model``)."""
    memory_gb: float | None = None
    """Memory the run plans to stay within (None: 4 GiB, at most half the machine); EASE is left out
    where its dense item x item matrices would not fit."""
    ship: Literal["all", "evaluated"] = "all"
    """What gets registered: ``all`` refits the evaluated choices on every event, test window included
    (the evaluated figures are its estimate); ``evaluated`` registers the very model that was
    measured on the test window (an audit)."""
    register: str | None = "recsys"
    """Stage ``all`` with tracking: register the pipeline under this name (alias ``challenger``), then run
    the promotion gate to ``champion``; None = do not package or register."""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"Invalid stage {self.stage!r}. Must be one of {', '.join(STAGES)}")
        if self.from_model and self.stage != "all":
            raise ValueError("from_model (an update) needs stage 'all'")
        check_epoch_grid(self.baseline_lightfm_epochs, "baseline_lightfm_epochs")
        if self.baseline_threads < 1:
            raise ValueError(f"baseline_threads must be >= 1; got {self.baseline_threads}")


def _baselines(config: TrainConfig) -> list[ModelSpec]:
    """The run's baselines with their grids and threads (the comparison views and the pipeline run both read them)."""
    return baseline_specs(config.baselines, text_template=config.text.template, num_threads=config.baseline_threads,
                          lightfm_epochs=config.baseline_lightfm_epochs)


@dataclass
class TrainResult:
    """The evaluation of the run, its terminal table, report files and MLflow ids."""

    result: EvalResult
    table: str
    files: ReportFiles
    run_id: str | None
    stats: dict[str, dict[str, float]]
    cold_curve: pl.DataFrame | None = None
    """Stage ``all``: overall and new-item Recall@20 of new items on merit, per quota setting and without them
    (:func:`training.stage_logging.cold_tradeoff`)."""
    registration: Registration | None = None
    """Stage ``all`` with tracking and ``register``: the registry version and the gate's decision."""
    verdict: str = ""
    """The first line of the summary: the run's model against the best baseline, with the paired CI."""
    skipped_baselines: dict[str, str] = field(default_factory=dict)
    """Baselines left out, and why (too large for this machine's memory)."""


def _specs(config: TrainConfig, towers: dict[str, TextTowerRecommender], tracking: dict) -> list[ModelSpec]:
    """Zero-shot and fine-tuned towers, the baselines, and optionally the EASE blend.

    The fine-tuned tower is shared (``FitOnce``) with the blend, so it fits once per window.
    """
    def tower(text_config: TextTowerConfig) -> FitOnce:
        def make() -> TextTowerRecommender:
            model = TextTowerRecommender(text_config, logger_=tracking.pop(tower_name(text_config), None))
            towers.setdefault(model.name, model)  # the first fit is the test window's
            return model
        return FitOnce(make, tower_name(text_config))

    configs = [with_mode(config.text, "zero-shot")] if config.compare_zero_shot else []
    if config.text.finetune.mode != "zero-shot":
        configs.append(config.text)
    shared = {tower_name(c): tower(c) for c in configs}
    specs = [ModelSpec(name, lambda _, m=model: m) for name, model in shared.items()]
    specs += _baselines(config)
    if config.compare_int8:
        name = tower_name(config.text)
        fine = shared.get(name) or tower(config.text)
        specs.append(ModelSpec(f"{name}_int8", lambda _: Int8View(fine)))
    if config.blend_with_ease:
        text = shared.get(tower_name(config.text)) or tower(config.text)
        ease = FitOnce(lambda: EASERecommender(EASEConfig(l2=500.0)), "ease")
        specs.append(ModelSpec("text_ease_blend", lambda w: BlendRecommender(text, ease, w, "text_ease_blend",
                                                                             config.blend_top),
                               config.blend_weights))
    return specs


class Int8View:
    """The shared fine-tuned tower, scored through its int8 catalogue vectors (no refit)."""

    def __init__(self, tower: FitOnce) -> None:
        self.tower, self.name = tower, f"{tower.name}_int8"

    def fit(self, data: FitInput) -> TextScorer:
        """The tower fitted on ``data`` (once, shared), with its catalogue re-encoded in int8."""
        return self.tower.fit(data).estimator.quantized()


def _child_logger(mlflow, parent, name: str, tracking_uri: str):
    from pytorch_lightning.loggers import MLFlowLogger

    child = mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=name, nested=True,
                             parent_run_id=parent.info.run_id)
    mlflow.end_run()
    return MLFlowLogger(tracking_uri=tracking_uri, run_id=child.info.run_id)


def _pipeline_specs(config: TrainConfig, eval_config: EvalConfig, tracking: dict, show_progress: bool,
                    warm: WarmStart | None = None, data: EvalData | None = None
                    ) -> tuple[list[ModelSpec], StageOne, PipelineRecommender]:
    """The baselines, then the ranked pipeline, its ablations and cold-exposure settings and the zero-shot tower.

    Every variant shares one :class:`StageOne`, so the text tower fine-tunes once per run. The
    baselines come first: ``evaluate_specs`` records their tuned settings and valid scores into
    ``main.baselines``, and where the ranker loses its gate the best of them serves alone.
    """
    cfg = config.pipeline
    stage = StageOne(cfg, config.text, eval_config=eval_config, text_logger=tracking.pop("text_tower", None),
                     show_progress=show_progress, warm=warm)
    main = PipelineRecommender(stage, name="pipeline", cold=cfg.cold, gate=cfg.gate, baselines={},
                               frees_label_window=not cfg.ablations)  # the ablations train rankers after it
    specs = [*_baselines(config),
             ModelSpec("pipeline", lambda _: main)]
    if warm is not None:  # the previous version as it is: what the update must beat on the new window
        specs.append(ModelSpec("parent", lambda _: ParentView(warm, data)))
    if cfg.ablations:
        for name, without in VARIANTS.items():
            if name != "pipeline":
                specs.append(ModelSpec(name, lambda _, n=name, w=without: PipelineRecommender(
                    stage, name=n, without=w, new_items=n != NO_NEW_ITEMS)))
        specs += [ModelSpec(f"{m}_alone", lambda _, m=m: StageView(stage, m)) for m in ("text", "lightfm")
                  if m in cfg.sources]
    # the towers as stage one fitted them (before the label cut), whichever the text gate kept
    fine, zero = tower_name(config.text), tower_name(with_mode(config.text, "zero-shot"))
    if "text" in cfg.sources and fine != zero:
        specs.append(ModelSpec(fine, lambda _: StageView(stage, fine, name=fine)))
    if config.compare_zero_shot:
        if "text" in cfg.sources and (fine == zero or (cfg.text_gate and warm is None)):  # stage one fitted it
            specs.append(ModelSpec(zero, lambda _: StageView(stage, zero, name=zero)))
        else:
            zero_config = with_mode(config.text, "zero-shot")
            specs.append(ModelSpec(zero, lambda _: TextTowerRecommender(zero_config)))
    specs += [ModelSpec(f"pipeline_{c.label}", lambda _, c=c: ColdExposureView(main, c)) for c in cfg.cold_curve()]
    return specs, stage, main


def train(config: TrainConfig, *, tracking_uri: str | None = None, show_progress: bool = False,
          config_file: str | None = None, force_promote: bool = False, recipe: Recipe | None = None) -> TrainResult:
    """Fit the stage's models, evaluate them on the test window beside their baselines, track it all.

    Args:
        config: the run.
        tracking_uri: MLflow store; None = not tracked.
        show_progress: progress bars.
        config_file: the YAML file the config came from, saved as an artifact.
        force_promote: move ``champion`` to the new version even if the gate says no.
        recipe: the settings chosen from the data (``training.recipe``), logged as ``recipe.json``.
    """
    # the imports' objects outlive the run: the collections between stages skip them; temporary
    # files go to one folder a later run removes if this one is killed
    with frozen_heap(), run_temp_folder():
        return _train(config, tracking_uri=tracking_uri, show_progress=show_progress, config_file=config_file,
                      force_promote=force_promote, recipe=recipe)


def _train(config: TrainConfig, *, tracking_uri: str | None, show_progress: bool, config_file: str | None,
           force_promote: bool, recipe: Recipe | None) -> TrainResult:
    start = time.perf_counter()
    if config.relevant is not None and config.text.relevant is None:  # item terms aim where lists are judged
        config = replace(config, text=replace(config.text, relevant=config.relevant))
    paths = DatasetPaths.from_dir(config.data)
    eval_config = EvalConfig(split=config.split, history=config.history, n_bootstrap=config.n_bootstrap,
                             max_users=config.max_eval_users, relevant=config.relevant,
                             event_weights=tuple((str(e), float(w)) for e, w in config.event_weights))
    previous = None
    if config.from_model:  # before anything is written: an unknown model or alias fails here
        from recsys.pyfunc_model import load_registered

        previous = load_registered(config.from_model, tracking_uri)
    data = build_eval_data(load_dataset(paths), eval_config,
                           extra_users=previous.user_ids.astype(str) if previous else ())
    release()  # the string-keyed log is gone: every later step reads the indexed windows
    warm = warm_start(previous, data, config.update) if previous is not None else None
    budget = memory_budget(config.memory_gb)
    baselines, skipped = fitting_baselines(config.baselines, len(data.item_ids), budget)
    config = replace(config, baselines=baselines)
    if config.pipeline.ease_l2 > 0 and not ease_fits(len(data.item_ids), budget):
        config = replace(config, pipeline=replace(config.pipeline, ease_l2=0.0))
        skipped["EASE in the pipeline"] = f"too large for the {budget / 2**30:.1f} GiB memory budget"
    split_s = time.perf_counter() - start
    report_dir = Path(config.report_dir or Path(config.data) / "reports" / "train")
    towers: dict[str, TextTowerRecommender] = {}
    tracking: dict = {}
    run_id = parent = mlflow = registration = None
    if tracking_uri is not None:
        import mlflow

        from recsys.evaluation.tracking import experiment_id

        mlflow.set_tracking_uri(tracking_uri)
        experiment = experiment_id(mlflow, EXPERIMENT, tracking_uri)
        mark_interrupted(mlflow.MlflowClient(), [experiment])  # runs a killed train left RUNNING
        parent = mlflow.start_run(experiment_id=experiment, tags=owner_tags(),
                                  run_name=f"train-{config.stage}-{config.text.finetune.mode}")
        run_id = parent.info.run_id
        mlflow.log_params({f"train.{k}": str(v)[:500] for k, v in flatten(asdict(config)).items()})
        mlflow.set_tags({"git_commit": git_commit(), "stage": config.stage}
                        | ({"parent_model": config.from_model} if config.from_model else {}))
        mlflow.log_text(yaml.safe_dump(_plain(asdict(config)), sort_keys=False), "config.yaml")
        fingerprint = data_fingerprint(paths)
        mlflow.log_dict(fingerprint, "data_fingerprint.json")
        if recipe is not None:
            mlflow.log_dict(recipe.as_dict(), "recipe.json")
        mlflow.end_run()
        if config.text.finetune.mode != "zero-shot":  # zero-shot has no training curves to track
            key = "text_tower" if config.stage == "all" else tower_name(config.text)
            tracking[key] = _child_logger(mlflow, parent, "text_tower" if config.stage == "all" else key,
                                          tracking_uri)
    if config.stage == "all":
        specs, stage_one, main = _pipeline_specs(config, eval_config, tracking, show_progress, warm, data)
        reference = "pipeline"
    else:
        # the stage is about the tower: every other model (zero-shot, the text peers) is paired against it
        specs, stage_one, main, reference = _specs(config, towers, tracking), None, None, tower_name(config.text)
    result = evaluate_specs(data, specs, reference=reference, show_progress=show_progress,
                            tuned=main.baselines if main is not None else None)
    # the cold-exposure settings have their own table (and plot), not rows of the model table
    cold_views = ({f"pipeline_{c.label}" for c in config.pipeline.cold_curve()} if config.stage == "all"
                  else set())
    files = write_report(result, report_dir, dataset=Path(config.data).name, command="recsys train",
                         git_commit=git_commit(), skip=cold_views)
    stats = {name: model.stats_ for name, model in towers.items()}
    curve = None
    if main is not None:
        stats |= {name: dict(values) for name, values in stage_one.stats.items()}
        stats["ranker"] = dict(main.stats_)
        stats["candidates"] = window_candidate_recall(main, result)
        curve = cold_tradeoff(result)
        stats["new_items"] = merit_evidence(result)
        _save_figure(plot_cold_tradeoff(curve, _reference_recall(result, config.baselines)),
                     report_dir / "cold_tradeoff.png")
        _save_csv(curve, report_dir / "cold_tradeoff.csv")
    stats["run"] = {"split_s": split_s, "wall_s": time.perf_counter() - start}
    if mlflow is not None and run_id is not None:
        from recsys.evaluation.tracking import log_evaluation

        log_evaluation(result, files, tracking_uri=tracking_uri, run_id=run_id)
        if main is not None:
            log_stages(mlflow, parent, stage_one, main, stats["candidates"], split_s)
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metric_dict({f"{n}/{k}": v for n, s in stats.items() for k, v in s.items()}))
            if curve is not None:
                mlflow.log_artifact(str(report_dir / "cold_tradeoff.png"))
                mlflow.log_artifact(str(report_dir / "cold_tradeoff.csv"))
            if config_file:
                mlflow.log_artifact(config_file)
        if main is not None and config.register:
            start_package = time.perf_counter()
            shipped, fit, every = main, None, all_events(data, eval_config)
            if config.ship == "all":  # learn from everything: the test window's events too
                fit = every
                main.release_evaluated()  # the evaluation is over: its models and windows make way for the refit
                release()
                shipped = refit_for_shipping(main, fit)
                stats["ship"] = {"seconds": time.perf_counter() - start_package, "peak_rss_mb": peak_rss_mb()}
            meta = {"run_id": run_id, "data": str(config.data), "git_commit": git_commit(),
                    "fitted_on": "every event" if config.ship == "all" else f"the evaluation's {config.history}",
                    "serves": shipped.kept_}
            # users without new events keep the previous version's history
            carried = parent_interactions(previous) if previous is not None else None
            bundle = package_pipeline(shipped, data, every, meta=meta, fit=fit, carried=carried)
            del every
            registration = log_and_register(mlflow, run_id, bundle, result, name=config.register,
                                            fingerprint=fingerprint, git_commit=git_commit(),
                                            tracking_uri=tracking_uri, force=force_promote,
                                            tags=_parent_tags(config.from_model, tracking_uri))
            stats["package"] = {"seconds": time.perf_counter() - start_package, "peak_rss_mb": peak_rss_mb()}
            with mlflow.start_run(run_id=run_id):  # shipping and packaging come after the run's other metrics
                mlflow.log_metrics(metric_dict({f"{n}/{k}": v for n in ("ship", "package") for k, v in
                                                stats.get(n, {}).items()}))
    serves = main.fallback_.name if main is not None and main.fallback_ is not None else None
    headline = verdict(result, reference if config.stage == "all" else tower_name(config.text), config.baselines,
                       serves=serves)
    table = render_table(result, skip=cold_views)
    return TrainResult(result, table, files, run_id, stats, curve, registration, headline, skipped)


def all_events(data: EvalData, config: EvalConfig) -> FitInput:
    """Every event of the run's data (train, valid and test windows) as one fit input, in the run's index."""
    window = data.test.fit
    later = [data.test_events] + ([data.valid_events] if config.history == "train" and data.valid_events is not None
                                  else [])
    rows = pl.concat([window.events, *(f.select(window.events.columns) for f in later)], how="vertical_relaxed")
    return fit_input(rows, (window.n_users, window.n_items), config, window.item_features, window.items)


def _parent_tags(from_model: str | None, tracking_uri: str) -> dict[str, str]:
    """``parent_version``: the registered version an update grew from (its number, when the URI names one)."""
    if not from_model:
        return {}
    from recsys.registry import PARENT_TAG, parse_model_uri, resolve_version

    found = parse_model_uri(from_model)
    if found is None:
        return {"parent_model": from_model}
    version = resolve_version(*found, tracking_uri)
    return {"parent_model": from_model, PARENT_TAG: str(version.version)}


def _reference_recall(result: EvalResult, baselines: Sequence[str]) -> dict[str, float]:
    """Recall@20 of the towers alone and of the best baseline (on the test window): the marks on the trade-off plot."""
    rows = result.table.filter((pl.col("slice") == "all") & (pl.col("metric") == "recall@20"))
    values = dict(zip(rows["model"].to_list(), rows["value"].to_list(), strict=True))
    marks = {m: values[m] for m in ("text_alone", "lightfm_alone") if m in values}
    scored = [b for b in baselines if b in values]
    if scored:
        best = max(scored, key=values.get)
        marks[best] = values[best]
    return marks


def _save_figure(figure, path: Path) -> None:
    """PNG written beside the report, atomically (temp file, then rename)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    tmp.replace(path)


def _save_csv(frame: pl.DataFrame, path: Path) -> None:
    """CSV written beside the report, atomically (temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_csv(tmp)
    tmp.replace(path)


def _plain(value):
    """Tuples -> lists, recursively, so the resolved config dumps as plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
