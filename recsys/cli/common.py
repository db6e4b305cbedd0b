"""What every ``recsys`` command shares: the root group, the error boundary, logging and echo helpers.

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

__all__ = ["cli", "PATH", "tracking_uri_of", "echo_frame", "echo_evaluation", "echo_registration", "make_config",
           "split_config", "csv_values", "Group", "echo_next_steps"]

PATH = click.Path(path_type=Path)


class Group(click.Group):
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
    from recsys.console import quiet_environment

    quiet_environment()  # again: a host program (a notebook, a test) may have imported transformers before recsys
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr, force=True)
    for noisy in ("matplotlib", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group(cls=Group)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging, and tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """recsys: a text-aware recommendation engine."""
    ctx.obj = {"verbose": verbose}
    _setup_logging(verbose)


def tracking_uri_of(flag: str | None, disabled: bool, *, existing: bool = False) -> str | None:
    """Flag beats $MLFLOW_TRACKING_URI beats the local store under ./mlflow/; checked before any work.

    ``existing``: the command reads models or runs, so the store must exist (a mistyped SQLite
    path is an error, not a new empty store); a server must answer either way.
    """
    from recsys.evaluation.tracking import local_tracking_uri
    from recsys.registry import check_store

    if disabled:
        return None
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri()
    check_store(uri, existing=existing)
    return uri


def echo_evaluation(run, uri: str | None) -> None:
    click.echo(run.table)
    if run.files:
        click.echo(f"report: {run.files.html}\njson:   {run.files.json}")
    if run.run_id:
        click.echo(f"MLflow run {run.run_id} in {uri}; browse with: mlflow ui --backend-store-uri {uri}")


def echo_registration(result) -> None:
    if result.registration is not None:
        reg = result.registration
        click.echo(f"registered models:/{reg.name}/{reg.version} (alias challenger) from {reg.model_uri}")
        click.echo(reg.gate.render())


def echo_next_steps(result, uri: str | None, data_dir: Path | str) -> None:
    """The run's last lines: what it registered and how it did, where its report is, and the commands that
    open, use and serve the model."""
    lines = []
    reg = result.registration
    if reg is not None:
        alias = ", now the champion" if reg.gate.promoted else f", not promoted ({reg.gate.reason.rstrip(';')})"
        lines.append(("registered", f"models:/{reg.name}/{reg.version}{alias}"))
    if getattr(result, "verdict", ""):
        lines.append(("result", result.verdict))
    if result.files:
        lines.append(("report", str(result.files.html)))
    if uri:
        lines.append(("runs", f"mlflow ui --backend-store-uri {uri}"))
    if reg is not None:
        model = f"models:/{reg.name}@champion" if reg.gate.promoted else f"models:/{reg.name}/{reg.version}"
        env = f"MLFLOW_TRACKING_URI={uri} " if uri else ""
        lines.append(("top-k lists", f"{env}recsys recommend --model {model} --data {data_dir} --k 20 "
                                     "--out recs.parquet"))
        lines.append(("serve", f"{env}mlflow models serve -m {model} --env-manager local"))
    if lines:
        width = max(len(name) for name, _ in lines)
        click.echo("summary:\n" + "\n".join(f"  {name:<{width}}  {text}" for name, text in lines))


def csv_values(text: str, cast=str) -> tuple:
    return tuple(cast(v.strip()) for v in text.split(",") if v.strip())


def split_config(mode: str, valid: float, test: float):
    from features.split import SplitConfig
    from recsys.errors import ConfigError

    try:
        return SplitConfig(mode=mode, valid=valid, test=test)
    except ValueError as exc:
        raise ConfigError(f"--mode/--valid/--test: {exc}") from exc


def make_config(cls, **kwargs):
    from recsys.errors import ConfigError

    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def echo_frame(frame: pl.DataFrame) -> None:
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=160, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        click.echo(str(frame))
