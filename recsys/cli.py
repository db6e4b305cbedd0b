"""The ``recsys`` command line: thin click commands, one library call each.

Every error caused by data or settings is a ``RecsysError``: printed without a traceback
(``--verbose`` shows one) with exit code 1. Logging is configured here and only here.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import click
import polars as pl

from recsys.errors import RecsysError

__all__ = ["main", "cli"]

_PATH = click.Path(path_type=Path)


class _Group(click.Group):
    """Turns a ``RecsysError`` anywhere below into a clean message and exit code 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RecsysError as exc:
            if (ctx.obj or {}).get("verbose"):
                traceback.print_exc()
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(1)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr, force=True)
    for noisy in ("matplotlib", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group(cls=_Group)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging, and tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """recsys: a text-aware recommendation engine."""
    ctx.obj = {"verbose": verbose}
    _setup_logging(verbose)


@cli.group(cls=_Group)
def data() -> None:
    """Validate, import, split and generate datasets."""


def _paths(data_dir: Path | None, items: Path | None, interactions: Path | None, users: Path | None):
    from recsys.io import DatasetPaths

    if data_dir is not None:
        found = DatasetPaths.from_dir(data_dir)
        return DatasetPaths(items or found.items, interactions or found.interactions, users or found.users)
    if items is None or interactions is None:
        raise click.UsageError("give --items and --interactions, or --data DIR")
    return DatasetPaths(items, interactions, users)


def _policy(events: str | None, drop_unknown_items: bool, dedupe: bool, drop_impression_only_users: bool):
    from recsys.validation import ContractPolicy

    names = tuple(e.strip() for e in events.split(",")) if events else ContractPolicy().events
    return ContractPolicy(names, drop_unknown_items, dedupe, drop_impression_only_users)


def _policy_options(f):
    for option in reversed((
        click.option("--events", help="Allowed event names, comma-separated (default: impression,click,purchase)."),
        click.option("--drop-unknown-items", is_flag=True,
                     help="Drop interactions whose item is not in the catalogue."),
        click.option("--dedupe", is_flag=True, help="Drop exact duplicate interaction rows."),
        click.option("--drop-impression-only-users", is_flag=True, help="Drop users who never clicked or bought."),
    )):
        f = option(f)
    return f


def _data_options(f):
    for option in reversed((
        click.option("--data", "data_dir", type=_PATH, help="Folder with items.parquet and interactions.parquet."),
        click.option("--items", type=_PATH, help="Item table (Parquet, CSV/TSV or JSON Lines)."),
        click.option("--interactions", type=_PATH, help="Interaction table (Parquet, CSV/TSV or JSON Lines)."),
        click.option("--users", type=_PATH, help="Optional user feature table."),
    )):
        f = option(f)
    return f


@data.command("validate")
@_data_options
@_policy_options
def validate_cmd(data_dir, items, interactions, users, events, drop_unknown_items, dedupe,
                 drop_impression_only_users) -> None:
    """Check a dataset against the data contract; list every problem, or print a summary."""
    from recsys.datasets import validate

    checked = validate(_paths(data_dir, items, interactions, users),
                       _policy(events, drop_unknown_items, dedupe, drop_impression_only_users))
    if checked.report.problems:
        click.echo(checked.report.render(), err=checked.summary is None)
    if checked.summary is None:
        raise RecsysError("validation failed: fix the problems above (or use the explicit --drop/--dedupe options)")
    click.echo(checked.summary.render())


@data.command("import")
@click.argument("dataset", type=click.Choice(["movielens", "mind", "amazon"]))
@click.argument("src", type=_PATH)
@click.option("--out", type=_PATH, required=True, help="Folder to write the contract Parquet files to.")
@click.option("--purchase-threshold", type=float, help="MovieLens: rating >= this is a purchase (default 4.0).")
@click.option("--min-rating", type=float, help="MovieLens: drop ratings below this.")
@click.option("--tmdb", type=_PATH, help="MovieLens: TMDB metadata CSV with overviews (default: found beside SRC).")
@click.option("--category", help="Amazon: which category to import when SRC holds several.")
def import_cmd(dataset, src, out, purchase_threshold, min_rating, tmdb, category) -> None:
    """Convert a public dataset (MovieLens, MIND, Amazon reviews) to the data contract."""
    from recsys.importers import import_dataset

    options = {"movielens": {"purchase_threshold": purchase_threshold, "min_rating": min_rating, "tmdb": tmdb},
               "mind": {}, "amazon": {"category": category, "show_progress": True}}[dataset]
    click.echo(import_dataset(dataset, src, out, **options).render())


@data.command("split")
@click.option("--data", "data_dir", type=_PATH, required=True, help="Dataset folder.")
@click.option("--mode", type=click.Choice(["global", "per-user"]), default="global", show_default=True)
@click.option("--valid", type=float, default=0.1, show_default=True, help="Valid fraction.")
@click.option("--test", type=float, default=0.1, show_default=True, help="Test fraction.")
@click.option("--out", type=_PATH, help="Output file (default: DATA/split.parquet).")
def split_cmd(data_dir, mode, valid, test, out) -> None:
    """Split interactions in time into train / valid / test and mark cold items and users."""
    from recsys.datasets import SPLIT_FILE, split_dataset
    from recsys.io import DatasetPaths

    summary, written = split_dataset(DatasetPaths.from_dir(data_dir), _split_config(mode, valid, test),
                                     out or data_dir / SPLIT_FILE)
    _echo_frame(summary)
    click.echo(f"wrote {written}")


def _split_config(mode: str, valid: float, test: float):
    from features.split import SplitConfig
    from recsys.errors import ConfigError

    try:
        return SplitConfig(mode=mode, valid=valid, test=test)
    except ValueError as exc:
        raise ConfigError(f"--mode/--valid/--test: {exc}") from exc


@data.command("synth")
@click.option("--out", type=_PATH, required=True, help="Folder to write the dataset to.")
@click.option("--users", "n_users", type=int, default=30, show_default=True)
@click.option("--items", "n_items", type=int, default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth_cmd(out, n_users, n_items, seed) -> None:
    """Generate a seeded synthetic dataset whose item text predicts clicks."""
    from recsys.datasets import write_synthetic
    from recsys.synthetic import SyntheticConfig

    paths = write_synthetic(out, SyntheticConfig(n_users=n_users, n_items=n_items, seed=seed))
    click.echo(f"wrote {paths.items} and {paths.interactions}")


@cli.command("demo")
@click.option("--out", type=_PATH, default=Path("demo_data"), show_default=True, help="Where the demo data goes.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Do not log the run to MLflow.")
@click.option("--text-model", help="Local Hugging Face model folder (default: all-MiniLM-L6-v2, bundled).")
@click.option("--text-mode", default="freeze:5", show_default=True, help="Fine-tuning mode of the text tower.")
def demo_cmd(out, tracking_uri, no_mlflow, text_model, text_mode) -> None:
    """Run the main job end to end on the bundled demo data."""
    from recsys.demo import PENDING_STAGES, run_demo

    uri = _tracking_uri(tracking_uri, no_mlflow)
    result = run_demo(out, tracking_uri=uri, text_model=text_model, text_mode=text_mode)
    click.echo(f"demo data: {result.data_dir}\n\n{result.summary.render()}\n\nsplit (global 80/10/10):")
    _echo_frame(result.split)
    click.echo(f"labelled interactions: {result.split_file}\n\n"
               "ranked pipeline vs its ablations, the towers alone and the baselines, test window:")
    _echo_evaluation(result.training, uri)
    _echo_registration(result.training)
    if result.export is not None:
        click.echo(f"batch export of the champion: {result.export.render()}")
        recs = pl.read_parquet(result.export.out)
        first = recs["user_id"][0]
        click.echo(f"top 5 of user {first}:")
        _echo_frame(recs.filter(pl.col("user_id") == first).head(5))
        click.echo(f"serve it: MLFLOW_TRACKING_URI={uri} mlflow models serve -m models:/recsys@champion "
                   "--env-manager local")
    else:
        click.echo("batch export skipped: it reads the model from the MLflow registry (run without --no-mlflow)")
    click.echo("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items()))
    if PENDING_STAGES:
        click.echo("not in this build yet: " + "; ".join(PENDING_STAGES))


def _tracking_uri(flag: str | None, disabled: bool) -> str | None:
    """Flag beats $MLFLOW_TRACKING_URI beats the local store under ./mlflow/."""
    from recsys.evaluation.tracking import local_tracking_uri

    return None if disabled else (flag or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri())


def _echo_evaluation(run, uri: str | None) -> None:
    click.echo(run.table)
    if run.files:
        click.echo(f"report: {run.files.html}\njson:   {run.files.json}")
    if run.run_id:
        click.echo(f"MLflow run {run.run_id} in {uri}; browse with: mlflow ui --backend-store-uri {uri}")


@cli.command("train")
@click.option("--config", "config_file", type=_PATH, help="YAML file mirroring training.pipeline.TrainConfig.")
@click.option("--set", "overrides", multiple=True, help="Override one key, e.g. --set text.max_epochs=2.")
@click.option("--stage", type=click.Choice(["all", "text"]),
              help="all (default): the ranked pipeline and its ablations; text: the text tower alone.")
@click.option("--data", "data_dir", type=_PATH, help="Dataset folder (overrides the config's data).")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Do not track the run in MLflow.")
@click.option("--force", "force_promote", is_flag=True,
              help="Make the new version the champion even if the promotion gate says no.")
@click.option("--from", "from_model", help="Update this registered model (e.g. models:/recsys@champion) on --data: "
              "warm-started text tower and LightFM; see update.replay and update.l2sp.")
def train_cmd(config_file, overrides, stage, data_dir, tracking_uri, no_mlflow, force_promote, from_model) -> None:
    """Train every stage (text tower, LightFM, candidates, features, ranker), evaluate, track, register."""
    from recsys.config import load_config
    from training.pipeline import TrainConfig, train

    extra = ([f"stage={stage}"] if stage else []) + ([f"data={data_dir}"] if data_dir else []) + (
        [f"from_model={from_model}"] if from_model else [])
    config = load_config(TrainConfig, str(config_file) if config_file else None, (*overrides, *extra))
    uri = _tracking_uri(tracking_uri, no_mlflow)
    result = train(config, tracking_uri=uri, show_progress=True, config_file=str(config_file) if config_file else None,
                   force_promote=force_promote)
    _echo_evaluation(result, uri)
    if result.cold_curve is not None:
        click.echo("cold exposure (slots: new items guaranteed in the first page; 0 = the ranker's own order):")
        _echo_frame(result.cold_curve)
    for name, stats in result.stats.items():
        click.echo(f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in stats.items()))
    _echo_registration(result)


def _echo_registration(result) -> None:
    if result.registration is not None:
        reg = result.registration
        click.echo(f"registered models:/{reg.name}/{reg.version} (alias challenger) from {reg.model_uri}")
        click.echo(reg.gate.render())


def _csv(text: str, cast=str) -> tuple:
    return tuple(cast(v.strip()) for v in text.split(",") if v.strip())


@cli.command("evaluate")
@click.option("--data", "data_dir", type=_PATH, required=True, help="Dataset folder (recsys data import).")
@click.option("--baselines", is_flag=True,
              help="Evaluate every baseline (random, popularity, item-kNN, LightFM, EASE, ALS).")
@click.option("--models", help="Comma-separated subset of baselines instead of all of them.")
@click.option("--k", "ks", default="5,10,20,50,100", show_default=True, help="Metric cut-offs.")
@click.option("--split-mode", type=click.Choice(["global", "per-user"]), default="per-user", show_default=True)
@click.option("--valid", type=float, default=0.1, show_default=True)
@click.option("--test", type=float, default=0.2, show_default=True)
@click.option("--history", type=click.Choice(["train", "train+valid"]), default="train", show_default=True,
              help="What models fit on and see at test time; exactly these items are excluded.")
@click.option("--positives", default="click,purchase", show_default=True, help="Events that count as relevant.")
@click.option("--bootstrap", "n_bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--report", "report_dir", type=_PATH, help="Folder for results.json, report.html and plots.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.option("--no-mlflow", is_flag=True, help="Do not log the run to MLflow.")
def evaluate_cmd(data_dir, baselines, models, ks, split_mode, valid, test, history, positives, n_bootstrap, seed,
                 report_dir, tracking_uri, no_mlflow) -> None:
    """Rank the whole catalogue for every test user and compare models with bootstrap CIs."""
    from recsys.errors import ConfigError
    from recsys.evaluation.run import evaluate_run
    from recsys.evaluation.setup import EvalConfig
    from training.baseline_specs import BASELINES

    names = _csv(models) if models else (BASELINES if baselines else ())
    if not names:
        raise click.UsageError("nothing to evaluate: pass --baselines or --models a,b")
    for name in names:
        if name not in BASELINES:
            raise ConfigError(f"--models: {name!r} is not a baseline; must be among {', '.join(BASELINES)}")
    config = _config(EvalConfig, split=_split_config(split_mode, valid, test), history=history,
                     positives=_csv(positives), ks=_csv(ks, int), n_bootstrap=n_bootstrap, seed=seed)
    uri = _tracking_uri(tracking_uri, no_mlflow)
    run = evaluate_run(data_dir, config, baselines=names, report_dir=report_dir, tracking_uri=uri,
                       show_progress=True, command="recsys " + " ".join(sys.argv[1:]))
    _echo_evaluation(run, uri)


@cli.command("recommend")
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/recsys@champion.")
@click.option("--data", "data_dir", type=_PATH, required=True,
              help="Dataset folder: whose users get lists, and the histories they are built from.")
@click.option("--k", type=int, default=100, show_default=True, help="Items per user.")
@click.option("--out", type=_PATH, required=True, help="Output Parquet file (user_id, item_id, score, rank, fallback).")
@click.option("--users", "users_file", type=_PATH, help="Only these users: a table with user_id, or one id per line.")
@click.option("--new-items", type=_PATH, help="Items that arrived after training (contract item table): encoded now.")
@click.option("--resume", is_flag=True, help="Continue an interrupted export from its last finished block.")
@click.option("--include-seen", is_flag=True, help="Do not exclude the items a user has already interacted with.")
@click.option("--block-size", type=int, default=1024, show_default=True, help="Users scored together.")
@click.option("--cold-slots", type=int,
              help="New-item slots at the end of the first 20 positions (default: the model's setting).")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="local: this machine, streaming blocks; spark: Apache Spark (mapInPandas).")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
def recommend_cmd(model_uri, data_dir, k, out, users_file, new_items, resume, include_seen, block_size, cold_slots,
                  engine, tracking_uri) -> None:
    """Batch top-k export for every user of --data (or the --users), from a registered model."""
    from recsys.export import ExportConfig, recommend_to_file

    uri = _tracking_uri(tracking_uri, False)
    config = _config(ExportConfig, k=k, block_size=block_size, exclude_seen=not include_seen, cold_slots=cold_slots)
    if engine == "spark":
        from recsys.spark_export import spark_recommend_to_file

        summary = spark_recommend_to_file(model_uri, data_dir, out, config, users_file=users_file,
                                          new_items=new_items, tracking_uri=uri)
    else:
        summary = recommend_to_file(model_uri, data_dir, out, config, users_file=users_file, new_items=new_items,
                                    resume=resume, tracking_uri=uri)
    click.echo(summary.render())


@cli.command("explain")
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/recsys@champion.")
@click.option("--user", "user_ids", required=True, multiple=True, help="User to explain (repeatable).")
@click.option("--item", "item_ids", multiple=True,
              help="Explain only this item (repeatable), even if it is not in the top k.")
@click.option("--k", type=int, default=10, show_default=True, help="Items per user.")
@click.option("--data", "data_dir", type=_PATH,
              help="Dataset folder whose histories the lists are built from (default: the model's own).")
@click.option("--include-seen", is_flag=True, help="Do not exclude the items a user has already interacted with.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
def explain_cmd(model_uri, user_ids, item_ids, k, data_dir, include_seen, tracking_uri) -> None:
    """Why each of a user's top-k items (or the --item) is recommended: sources, similar history item, ranker."""
    from recsys.explain import explain
    from recsys.export import prepare_bundle
    from recsys.pyfunc_model import check_k, load_registered

    check_k(k)
    bundle = load_registered(model_uri, _tracking_uri(tracking_uri, False))
    if data_dir is not None:
        bundle, _ = prepare_bundle(bundle, data_dir)
    frame = explain(bundle, list(user_ids), k, items=list(item_ids) or None, exclude_seen=not include_seen)
    _echo_explained(frame.select("user_id", "rank", "item_id", "title", "score", "sources", "because_title",
                                 "reason"))


@cli.command("inspect")
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/recsys@champion.")
@click.option("--data", "data_dir", type=_PATH, required=True,
              help="Dataset folder: the user's history, and the histories the lists are built from.")
@click.option("--user", "user_id", required=True, help="The user to inspect.")
@click.option("--k", type=int, default=10, show_default=True, help="Items in the list.")
@click.option("--history", "n_history", type=int, default=20, show_default=True,
              help="How many of the user's latest clicks and purchases to show.")
@click.option("--html", "html_file", type=_PATH, help="Also write the inspection as a self-contained HTML page.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
def inspect_cmd(model_uri, data_dir, user_id, k, n_history, html_file, tracking_uri) -> None:
    """One user's recent history and their explained top-k (text, and optionally an HTML page)."""
    from recsys.inspect_page import inspect_user, write_page
    from recsys.pyfunc_model import check_k, load_registered

    check_k(k)
    if n_history < 0:
        raise RecsysError(f"--history must be >= 0; got {n_history}")
    bundle = load_registered(model_uri, _tracking_uri(tracking_uri, False))
    found = inspect_user(bundle, data_dir, user_id, k=k, history=n_history, model=model_uri)
    click.echo(found.note)
    click.echo(f"\nrecent history ({found.history.height} latest clicks and purchases of {found.n_events} events):")
    _echo_frame(found.history.select(pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M").alias("when"), "event",
                                     "item_id", "title"))
    click.echo(f"\ntop {found.recommendations.height}:")
    _echo_explained(found.recommendations.select("rank", "item_id", "title", "score", "sources", "reason"))
    if html_file is not None:
        click.echo(f"wrote {write_page(found, html_file)}")


def _echo_explained(frame: pl.DataFrame) -> None:
    """A table whose long text cells (reasons) wrap instead of being cut."""
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=1000, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, float_precision=4):
        click.echo(str(frame))


@cli.command("drift")
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/recsys@champion.")
@click.option("--data", "data_dir", type=_PATH, required=True,
              help="Newer dataset folder (contract items and interactions) to compare with the model's training data.")
@click.option("--k", type=int, default=10, show_default=True, help="Quality on the newer data: NDCG@k and Recall@2k.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.option("--no-mlflow", is_flag=True,
              help="Do not log the report to MLflow (the model is still read from the registry).")
def drift_cmd(model_uri, data_dir, k, tracking_uri, no_mlflow) -> None:
    """Compare newer data with the model's training window: new items/users, popularity, topics, quality; verdict."""
    from recsys.drift import EXPERIMENT, run_drift

    uri = _tracking_uri(tracking_uri, False)
    report, run_id = run_drift(model_uri, data_dir, tracking_uri=uri, k=k, log=not no_mlflow)
    click.echo(report.render())
    if run_id:
        click.echo(f"MLflow run {run_id} (experiment {EXPERIMENT}) in {uri}")


@cli.group(cls=_Group)
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.pass_context
def registry(ctx: click.Context, tracking_uri: str | None) -> None:
    """Registered models: versions, aliases, promotion."""
    ctx.obj["tracking_uri"] = _tracking_uri(tracking_uri, False)


@registry.command("list")
@click.pass_context
def registry_list(ctx: click.Context) -> None:
    """Every registered model with its versions and aliases."""
    from recsys.registry import list_models

    _echo_frame(list_models(ctx.obj["tracking_uri"]))


@registry.command("show")
@click.argument("name")
@click.pass_context
def registry_show(ctx: click.Context, name: str) -> None:
    """The versions of one model: aliases, test metric, git commit, data fingerprint, run."""
    from recsys.registry import show_model

    _echo_frame(show_model(name, ctx.obj["tracking_uri"]))


@registry.command("promote")
@click.argument("name")
@click.argument("version")
@click.argument("alias")
@click.option("--force", is_flag=True, help="champion: skip the promotion gate.")
@click.pass_context
def registry_promote(ctx: click.Context, name: str, version: str, alias: str, force: bool) -> None:
    """Point ALIAS at VERSION; champion only when the version beats the champion (paired bootstrap)."""
    from recsys.registry import promote

    result = promote(name, version, alias, force=force, tracking_uri=ctx.obj["tracking_uri"])
    click.echo(result.render() if result is not None else f"{name}: alias {alias} -> version {version}")
    if result is not None and not result.promoted and result.reason != "already the champion;":
        ctx.exit(3)


def _config(cls, **kwargs):
    from recsys.errors import ConfigError

    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _echo_frame(frame: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=160, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        click.echo(str(frame))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="recsys")


if __name__ == "__main__":
    main()
