"""``recsys demo | train | evaluate``: the commands that fit models, added to the ``recsys`` CLI as a plugin.

They live here, not in ``recsys/cli``, so the runtime never imports training: ``recsys.cli``
adds every command registered under the ``recsys.commands`` entry-point group (pyproject.toml),
and a serving-only install simply has none of these. The training modules themselves are
imported inside each command, so ``recsys --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import polars as pl

from recsys import contract as C
from recsys.cli.common import (
    PATH,
    csv_values,
    echo_evaluation,
    echo_frame,
    echo_next_steps,
    echo_registration,
    make_config,
    split_config,
    tracking_uri_of,
)
from recsys.cli.data import check_dataset_folder, check_output
from recsys.errors import ConfigError
from recsys.registry import remote_scheme

logger = logging.getLogger(__name__)

MAX_BUDGET_MINUTES = 7 * 24 * 60
"""The longest ``--budget-minutes`` (a week): the recipe plans epochs and grids from it, so more is a typo."""


def _check_budget(minutes: float) -> None:
    if not 0 < minutes <= MAX_BUDGET_MINUTES:  # written so that NaN fails too
        raise ConfigError(f"--budget-minutes must be more than 0 and at most {MAX_BUDGET_MINUTES} (a week); "
                          f"got {minutes}")


def _check_from(model_uri: str) -> None:
    """Refuse a remote ``--from`` before the recipe reads the data.

    MLflow would try it after that work and fail without a usable message: ``s3://`` needs
    botocore, which is not installed, and ``http://`` breaks inside its URI parser.
    """
    if (scheme := remote_scheme(model_uri)) is not None:
        raise ConfigError(f"--from {model_uri}: {scheme}:// model URIs are not supported; give a registered model, "
                          "models:/NAME@ALIAS or models:/NAME/VERSION (e.g. models:/recsys@champion)")


def _cutoffs(text: str) -> tuple[int, ...]:
    """``--k`` as whole numbers (their range is ``EvalConfig``'s to check); ``a,b`` or ``5.5`` named, not int()'s."""
    values = csv_values(text)
    for value in values:
        if not value.isdecimal():  # what int() reads: "a", "5.5", "-1" and "²" are named here
            raise ConfigError(f"--k: {value!r} is not a cut-off (a whole number >= 1); give e.g. --k 5,10,20")
    return tuple(int(v) for v in values)


@click.command("demo")
@click.option("--out", type=PATH, default=Path("demo_data"), show_default=True, help="Where the demo data goes.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Do not log the run to MLflow.")
@click.option("--text-model", help="Local Hugging Face model folder (default: all-MiniLM-L6-v2, bundled).")
@click.option("--text-mode", default="freeze:5", show_default=True, help="Fine-tuning mode of the text tower.")
def demo_cmd(out, tracking_uri, no_mlflow, text_model, text_mode) -> None:
    """Run the main job end to end on the bundled demo data."""
    from recsys.text_encoder import resolve_model_path
    from training.demo import PENDING_STAGES, run_demo
    from training.encoder_modes import FineTuneConfig

    check_dataset_folder(out)  # what the demo would find wrong only after generating its data
    try:
        FineTuneConfig(mode=text_mode)
    except ValueError as exc:
        raise ConfigError(f"--text-mode: {exc}") from exc
    if text_model is not None:
        try:
            resolve_model_path(text_model)
        except ConfigError as exc:
            raise ConfigError(f"--text-model: {exc}") from exc
    uri = tracking_uri_of(tracking_uri, no_mlflow)
    result = run_demo(out, tracking_uri=uri, text_model=text_model, text_mode=text_mode)
    click.echo(f"demo data: {result.data_dir}\n\n{result.summary.render()}\n\nsplit (global 80/10/10):")
    echo_frame(result.split)
    click.echo(f"labelled interactions: {result.split_file}\n\n"
               "ranked pipeline vs its ablations, the towers alone and the baselines, test window:")
    echo_evaluation(result.training, uri)
    echo_registration(result.training)
    if result.export is not None:
        click.echo(f"batch export of the champion: {result.export.render()}")
        recs = pl.read_parquet(result.export.out)
        first = recs[C.USER_ID][0]
        click.echo(f"top 5 of user {first}:")
        echo_frame(recs.filter(pl.col(C.USER_ID) == first).head(5))
    else:
        click.echo("batch export skipped: it reads the model from the MLflow registry (run without --no-mlflow)")
    click.echo("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items()))
    if PENDING_STAGES:
        click.echo("not in this build yet: " + "; ".join(PENDING_STAGES))
    echo_next_steps(result.training, uri, result.data_dir)


@click.command("train")
@click.option("--config", "config_file", type=PATH, help="YAML file mirroring training.pipeline.TrainConfig.")
@click.option("--set", "overrides", multiple=True, help="Override one key, e.g. --set text.max_epochs=2.")
@click.option("--stage", type=click.Choice(["all", "text"]),
              help="all (default): the ranked pipeline and its ablations; text: the text tower alone.")
@click.option("--data", "data_dir", type=PATH, help="Dataset folder (overrides the config's data).")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Do not track the run in MLflow.")
@click.option("--force", "force_promote", is_flag=True,
              help="Make the new version the champion even if the promotion gate says no.")
@click.option("--from", "from_model", help="Update this registered model (e.g. models:/recsys@champion) on --data: "
              "warm-started text tower and LightFM; see update.replay and update.l2sp.")
@click.option("--budget-minutes", type=float, default=15.0, show_default=True,
              help="Wall time the default recipe plans the run for (text tower examples, epochs, grids).")
@click.option("--no-recipe", is_flag=True, help="Use the config's values as they are instead of choosing settings "
              "from the data (the recipe's choices never override a config file or --set).")
def train_cmd(config_file, overrides, stage, data_dir, tracking_uri, no_mlflow, force_promote, from_model,
              budget_minutes, no_recipe) -> None:
    """Train every stage (text tower, LightFM, candidates, features, ranker), evaluate, track, register.

    With no config, settings are chosen from the data and --budget-minutes (printed first).
    """
    from recsys.config import load_config
    from recsys.io import DatasetPaths
    from training.pipeline import TrainConfig, train
    from training.recipe import choose, measure

    _check_budget(budget_minutes)
    if from_model:
        _check_from(from_model)
    extra = ([f"stage={stage}"] if stage else []) + ([f"data={data_dir}"] if data_dir else []) + (
        [f"from_model={from_model}"] if from_model else [])
    file = str(config_file) if config_file else None
    config = load_config(TrainConfig, file, (*overrides, *extra))
    if config.report_dir:
        check_output(Path(config.report_dir), "report_dir", folder=True)
    recipe = None
    if not no_recipe:
        recipe = choose(measure(DatasetPaths.from_dir(config.data)), budget_minutes, model=config.text.model,
                        memory_gb=config.memory_gb)
        click.echo(recipe.render())
        config = load_config(TrainConfig, file, (*overrides, *extra), base=recipe.overrides())
    uri = tracking_uri_of(tracking_uri, no_mlflow)
    result = train(config, tracking_uri=uri, show_progress=True, config_file=file, force_promote=force_promote,
                   recipe=recipe)
    click.echo(result.verdict)
    for name, why in result.skipped_baselines.items():
        click.echo(f"left out: {name} ({why})")
    echo_evaluation(result, uri)
    if result.cold_curve is not None:
        click.echo("new items (whole catalogue ranked): on merit (the ranker's own order), with slots guaranteed in "
                   "the first page, and without them:")
        echo_frame(result.cold_curve)
        if line := merit_line(result.stats.get("new_items", {})):
            click.echo(line)
    for name, stats in result.stats.items():  # every figure is in the MLflow run too; -v prints them here
        logger.debug("%s: %s", name, ", ".join(f"{k}={v:.4g}" for k, v in stats.items()))
    echo_registration(result)
    echo_next_steps(result, uri, config.data)


def merit_line(evidence: dict[str, float]) -> str:
    """One sentence on what the ranker did with new items (:func:`training.stage_logging.merit_evidence`)."""
    if "page_end_hit_rate" not in evidence:
        return ""
    placed = (f"{evidence['users_with_new']:.0%} of first pages held a new item ({evidence['new_per_list']:.2f} a "
              f"list)" if evidence["new_per_list"] else "no first page held a new item")
    best = (f"; each user's best new item was chosen by {evidence['best_new_hit_rate']:.2%} of users"
            if "best_new_hit_rate" in evidence else "")
    return (f"on merit {placed}{best}, the items at positions 16-20 {evidence['page_end_hit_rate']:.2%} of the "
            "time")


@click.command("evaluate")
@click.option("--data", "data_dir", type=PATH, required=True, help="Dataset folder (recsys data import).")
@click.option("--baselines", is_flag=True,
              help="Evaluate every baseline (random, popularity, item-kNN, LightFM, EASE, ALS, TF-IDF and "
              "LightFM on text features: the new-item peers of --split-mode items).")
@click.option("--models", help="Comma-separated subset of baselines instead of all of them.")
@click.option("--k", "ks", default="5,10,20,50,100", show_default=True, help="Metric cut-offs.")
@click.option("--split-mode", type=click.Choice(["global", "per-user", "items"]), default="per-user", show_default=True,
              help="Cut in time (global, per-user), or by item: a seeded --test share of items becomes new "
              "(items; the cold_only columns rank only them).")
@click.option("--valid", type=float, default=0.1, show_default=True)
@click.option("--test", type=float, default=0.2, show_default=True)
@click.option("--history", type=click.Choice(["train", "train+valid"]), default="train", show_default=True,
              help="What models fit on and see at test time; exactly these items are excluded.")
@click.option("--positives", default="click,purchase", show_default=True,
              help="Events models learn from (and the history excluded from rankings).")
@click.option("--relevant", help="Events that count as relevant, some of the positives (default: all of them; "
              "'purchase' judges rated data on what users liked).")
@click.option("--bootstrap", "n_bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", "report_dir", type=PATH, help="Folder for results.json, report.html and plots.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Do not log the run to MLflow.")
def evaluate_cmd(data_dir, baselines, models, ks, split_mode, valid, test, history, positives, relevant, n_bootstrap,
                 seed, report_dir, tracking_uri, no_mlflow) -> None:
    """Rank the whole catalogue for every test user and compare models with bootstrap CIs."""
    from recsys.evaluation.eval_data import EvalConfig
    from training.baseline_specs import BASELINES
    from training.evaluate_baselines import evaluate_baselines  # fitting is training: reached lazily

    names = csv_values(models) if models else (BASELINES if baselines else ())
    if not names:
        raise click.UsageError("nothing to evaluate: pass --baselines or --models a,b")
    for name in names:
        if name not in BASELINES:
            raise ConfigError(f"--models: {name!r} is not a baseline; must be among {', '.join(BASELINES)}")
    config = make_config(EvalConfig, split=split_config(split_mode, valid, test), history=history,
                         positives=csv_values(positives), relevant=csv_values(relevant) if relevant else None,
                         ks=_cutoffs(ks), n_bootstrap=n_bootstrap, seed=seed)
    if report_dir is not None:
        check_output(report_dir, "--report", folder=True)
    uri = tracking_uri_of(tracking_uri, no_mlflow)
    run = evaluate_baselines(data_dir, config, baselines=names, report_dir=report_dir, tracking_uri=uri,
                             show_progress=True, command="recsys " + " ".join(sys.argv[1:]))
    echo_evaluation(run, uri)


__all__ = ["demo_cmd", "train_cmd", "evaluate_cmd"]
