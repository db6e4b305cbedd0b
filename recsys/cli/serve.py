"""``recsys recommend | explain | inspect | drift | registry``: the apps of a registered model."""

from __future__ import annotations

import click
import polars as pl

from recsys import contract as C
from recsys.cli.common import (
    PATH,
    Group,
    cli,
    echo_frame,
    make_config,
    tracking_uri_of,
)
from recsys.errors import RecsysError


@cli.command("recommend")
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/recsys@champion.")
@click.option("--data", "data_dir", type=PATH, required=True,
              help="Dataset folder: whose users get lists, and the histories they are built from.")
@click.option("--k", type=int, default=100, show_default=True, help="Items per user.")
@click.option("--out", type=PATH, required=True, help="Output Parquet file (user_id, item_id, score, rank, fallback).")
@click.option("--users", "users_file", type=PATH, help="Only these users: a table with user_id, or one id per line.")
@click.option("--new-items", type=PATH, help="Items that arrived after training (contract item table): encoded now.")
@click.option("--resume", is_flag=True, help="Continue an interrupted export from its last finished block.")
@click.option("--include-seen", is_flag=True, help="Do not exclude the items a user has already interacted with.")
@click.option("--block-size", type=int, default=512, show_default=True, help="Users scored together.")
@click.option("--cold-slots", type=int,
              help="New-item slots at the end of the first 20 positions (default: the model's setting).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Blocks scored at once (threads; each holds a block's memory). The lists do not depend on it.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="local: this machine, streaming blocks; spark: Apache Spark (mapInPandas).")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
def recommend_cmd(model_uri, data_dir, k, out, users_file, new_items, resume, include_seen, block_size, cold_slots,
                  workers, engine, tracking_uri) -> None:
    """Batch top-k export for every user of --data (or the --users), from a registered model."""
    from recsys.export import ExportConfig, recommend_to_file

    uri = tracking_uri_of(tracking_uri, False, existing=True)
    config = make_config(ExportConfig, k=k, block_size=block_size, exclude_seen=not include_seen, cold_slots=cold_slots,
                         workers=workers)
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
@click.option("--data", "data_dir", type=PATH,
              help="Dataset folder whose histories the lists are built from (default: the model's own).")
@click.option("--include-seen", is_flag=True, help="Do not exclude the items a user has already interacted with.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
def explain_cmd(model_uri, user_ids, item_ids, k, data_dir, include_seen, tracking_uri) -> None:
    """Why each of a user's top-k items (or the --item) is recommended: sources, similar history item, ranker."""
    from recsys.explain import explain
    from recsys.export import prepare_bundle
    from recsys.pyfunc_model import load_registered
    from recsys.topk import check_k

    check_k(k)
    bundle = load_registered(model_uri, tracking_uri_of(tracking_uri, False, existing=True))
    if data_dir is not None:
        bundle, _ = prepare_bundle(bundle, data_dir)
    frame = explain(bundle, list(user_ids), k, items=list(item_ids) or None, exclude_seen=not include_seen)
    _echo_explained(frame.select(C.USER_ID, "rank", C.ITEM_ID, "title", "score", "sources", "because_title",
                                 "reason"))


@cli.command("inspect")
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/recsys@champion.")
@click.option("--data", "data_dir", type=PATH, required=True,
              help="Dataset folder: the user's history, and the histories the lists are built from.")
@click.option("--user", "user_id", required=True, help="The user to inspect.")
@click.option("--k", type=int, default=10, show_default=True, help="Items in the list.")
@click.option("--history", "n_history", type=int, default=20, show_default=True,
              help="How many of the user's latest clicks and purchases to show.")
@click.option("--html", "html_file", type=PATH, help="Also write the inspection as a self-contained HTML page.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
def inspect_cmd(model_uri, data_dir, user_id, k, n_history, html_file, tracking_uri) -> None:
    """One user's recent history and their explained top-k (text, and optionally an HTML page)."""
    from recsys.inspect_page import inspect_user, write_page
    from recsys.pyfunc_model import load_registered
    from recsys.topk import check_k

    check_k(k)
    if html_file is not None:
        from recsys.inspect_page import check_page_path

        check_page_path(html_file)  # before the work, not after it
    if n_history < 0:
        raise RecsysError(f"--history must be >= 0; got {n_history}")
    bundle = load_registered(model_uri, tracking_uri_of(tracking_uri, False, existing=True))
    found = inspect_user(bundle, data_dir, user_id, k=k, history=n_history, model=model_uri)
    click.echo(found.note)
    click.echo(f"\nrecent history ({found.history.height} latest clicks and purchases of {found.n_events} events):")
    echo_frame(found.history.select(pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M").alias("when"), "event",
                                     C.ITEM_ID, "title"))
    click.echo(f"\ntop {found.recommendations.height}:")
    _echo_explained(found.recommendations.select("rank", C.ITEM_ID, "title", "score", "sources", "reason"))
    if html_file is not None:
        click.echo(f"wrote {write_page(found, html_file)}")


def _echo_explained(frame: pl.DataFrame) -> None:
    """A table whose long text cells (reasons) wrap instead of being cut."""
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=1000, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, float_precision=4):
        click.echo(str(frame))


@cli.command("drift")
@click.option("--model", "model_uri", required=True, help="Model URI, e.g. models:/recsys@champion.")
@click.option("--data", "data_dir", type=PATH, required=True,
              help="Newer dataset folder (contract items and interactions) to compare with the model's training data.")
@click.option("--k", type=int, default=10, show_default=True, help="Quality on the newer data: NDCG@k and Recall@2k.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.option("--no-mlflow", is_flag=True,
              help="Do not log the report to MLflow (the model is still read from the registry).")
def drift_cmd(model_uri, data_dir, k, tracking_uri, no_mlflow) -> None:
    """Compare newer data with the model's training window: new items/users, popularity, topics, quality; verdict."""
    from recsys.drift import EXPERIMENT, run_drift

    uri = tracking_uri_of(tracking_uri, False, existing=True)
    report, run_id = run_drift(model_uri, data_dir, tracking_uri=uri, k=k, log=not no_mlflow)
    click.echo(report.render())
    if run_id:
        click.echo(f"MLflow run {run_id} (experiment {EXPERIMENT}) in {uri}")


@cli.group(cls=Group)
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow/mlflow.db).")
@click.pass_context
def registry(ctx: click.Context, tracking_uri: str | None) -> None:
    """Registered models: versions, aliases, promotion."""
    ctx.obj["tracking_uri"] = tracking_uri_of(tracking_uri, False, existing=True)


@registry.command("list")
@click.pass_context
def registry_list(ctx: click.Context) -> None:
    """Every registered model with its versions and aliases."""
    from recsys.registry import list_models

    echo_frame(list_models(ctx.obj["tracking_uri"]))


@registry.command("show")
@click.argument("name")
@click.pass_context
def registry_show(ctx: click.Context, name: str) -> None:
    """The versions of one model: aliases, test metric, git commit, data fingerprint, run."""
    from recsys.registry import show_model

    echo_frame(show_model(name, ctx.obj["tracking_uri"]))


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
