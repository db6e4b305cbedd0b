"""``recsys data``: validate, import, split and generate datasets."""

from __future__ import annotations

from pathlib import Path

import click

from recsys.cli.common import (
    PATH,
    Group,
    cli,
    echo_frame,
    split_config,
)
from recsys.errors import RecsysError


@cli.group(cls=Group)
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
        click.option("--data", "data_dir", type=PATH, help="Folder with items.parquet and interactions.parquet."),
        click.option("--items", type=PATH, help="Item table (Parquet, CSV/TSV or JSON Lines)."),
        click.option("--interactions", type=PATH, help="Interaction table (Parquet, CSV/TSV or JSON Lines)."),
        click.option("--users", type=PATH, help="Optional user feature table."),
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
@click.argument("dataset", type=click.Choice(["movielens", "mind", "amazon", "microlens"]))
@click.argument("src", type=PATH)
@click.option("--out", type=PATH, required=True, help="Folder to write the contract Parquet files to.")
@click.option("--purchase-threshold", type=float, help="MovieLens: rating >= this is a purchase (default 4.0).")
@click.option("--min-rating", type=float, help="MovieLens: drop ratings below this.")
@click.option("--tmdb", type=PATH, help="MovieLens: TMDB metadata CSV with overviews (default: found beside SRC).")
@click.option("--category", help="Amazon: which category to import when SRC holds several.")
def import_cmd(dataset, src, out, purchase_threshold, min_rating, tmdb, category) -> None:
    """Convert a public dataset (MovieLens, MIND, Amazon reviews, MicroLens) to the data contract."""
    from recsys.importers import import_dataset

    options = {"movielens": {"purchase_threshold": purchase_threshold, "min_rating": min_rating, "tmdb": tmdb},
               "mind": {}, "amazon": {"category": category, "show_progress": True}, "microlens": {}}[dataset]
    click.echo(import_dataset(dataset, src, out, **options).render())


@data.command("split")
@click.option("--data", "data_dir", type=PATH, required=True, help="Dataset folder.")
@click.option("--mode", type=click.Choice(["global", "per-user"]), default="global", show_default=True)
@click.option("--valid", type=float, default=0.1, show_default=True, help="Valid fraction.")
@click.option("--test", type=float, default=0.1, show_default=True, help="Test fraction.")
@click.option("--out", type=PATH, help="Output file (default: DATA/split.parquet).")
def split_cmd(data_dir, mode, valid, test, out) -> None:
    """Split interactions in time into train / valid / test and mark cold items and users."""
    from recsys.datasets import SPLIT_FILE, split_dataset
    from recsys.io import DatasetPaths

    summary, written = split_dataset(DatasetPaths.from_dir(data_dir), split_config(mode, valid, test),
                                     out or data_dir / SPLIT_FILE)
    echo_frame(summary)
    click.echo(f"wrote {written}")


@data.command("synth")
@click.option("--out", type=PATH, required=True, help="Folder to write the dataset to.")
@click.option("--users", "n_users", type=int, default=30, show_default=True)
@click.option("--items", "n_items", type=int, default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth_cmd(out, n_users, n_items, seed) -> None:
    """Generate a seeded synthetic dataset whose item text predicts clicks."""
    from recsys.datasets import write_synthetic
    from recsys.synthetic import SyntheticConfig

    paths = write_synthetic(out, SyntheticConfig(n_users=n_users, n_items=n_items, seed=seed))
    click.echo(f"wrote {paths.items} and {paths.interactions}")
