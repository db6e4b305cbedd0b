"""``recsys data``: validate, import, split and generate datasets."""

from __future__ import annotations

import time
from pathlib import Path

import click

from recsys.cli.common import (
    PATH,
    Group,
    cli,
    echo_frame,
    make_config,
    split_config,
)
from recsys.errors import ConfigError, RecsysError
from recsys.io import check_own_folder, file_in_the_way

__all__ = ["data", "check_output", "check_dataset_folder", "MAX_SYNTH"]

MAX_SYNTH = 1_000_000
MAX_SCALE_USERS, MAX_SCALE_EVENTS = 10_000_000, 1_000_000_000
"""``data synth --events``: at most ten million users and a billion events (written in chunks, so memory is not
the limit; disk and time are: ~12 bytes an event on disk)."""
"""Most users or items ``data synth`` generates: its arrays grow with users x sessions x slate."""


def check_output(path: Path, option: str, *, folder: bool, example: str = "") -> None:
    """Refuse an output path nothing can be written to, before any work is done.

    Found when writing, after an import, a split or an evaluation, a folder given for a file
    (or a file for a folder, or a path under a file) ended in a traceback and the work was lost.

    Args:
        path: the output path as given.
        option: the flag it came from, named in the message.
        folder: the output is a folder (created if missing) rather than a file.
        example: a file name to suggest when a folder is given for a file.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise RecsysError(f"{option} {path} is a file; give a folder (it is created if missing)")
    if not folder and path.is_dir():
        raise RecsysError(f"{option} {path} is a folder; give a file name, e.g. {path / (example or 'out')}")
    if (blocker := file_in_the_way(path)) is not None:
        raise RecsysError(f"{option} {path}: {blocker} is a file, so nothing can be written under it; "
                          "give another path")


def check_dataset_folder(path: Path, option: str = "--out") -> None:
    """:func:`check_output` for a dataset folder, with the rule of ``recsys.io.write_dataset_folder``.

    A dataset replaces its folder as a whole, so the current, home and root folders are refused;
    checked here too so that the refusal comes before an import or a generation, not after it.
    """
    check_output(path, option, folder=True)
    check_own_folder(path, option)


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
    try:
        return ContractPolicy(names, drop_unknown_items, dedupe, drop_impression_only_users)
    except ValueError as exc:
        raise ConfigError(f"--events: {exc}") from exc


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

    check_dataset_folder(out)
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

    config = split_config(mode, valid, test)
    paths = DatasetPaths.from_dir(data_dir)
    target = out or data_dir / SPLIT_FILE
    check_output(target, "--out", folder=False, example=SPLIT_FILE)
    if target.resolve() in {p.resolve() for p in (paths.items, paths.interactions, paths.users) if p is not None}:
        raise RecsysError(f"--out {target} is one of the dataset's own tables; write the split to a file of its "
                          f"own (default: {data_dir / SPLIT_FILE})")
    summary, written = split_dataset(paths, config, target)
    echo_frame(summary)
    click.echo(f"wrote {written}")


@data.command("synth")
@click.option("--out", type=PATH, required=True, help="Folder to write the dataset to.")
@click.option("--users", "n_users", type=int, default=30, show_default=True)
@click.option("--items", "n_items", type=int, default=40, show_default=True)
@click.option("--events", "n_events", type=int, help="A log of this many clicks and purchases of any size, written "
              "in chunks of users (bounded memory: the scale benchmark's data); without it, a small log of simulated "
              "impressions.")
@click.option("--seed", type=int, default=0, show_default=True)
def synth_cmd(out, n_users, n_items, n_events, seed) -> None:
    """Generate a seeded synthetic dataset whose item text predicts clicks."""
    from recsys.synthetic import SyntheticConfig

    slate = 1 if n_events is not None else SyntheticConfig.slate_size
    users_cap = MAX_SCALE_USERS if n_events is not None else MAX_SYNTH
    for option, value, low, high in (("--users", n_users, 1, users_cap), ("--items", n_items, slate, MAX_SYNTH)):
        if not low <= value <= high:
            raise ConfigError(f"{option} must be between {low} and {high:,}; got {value}"
                              + (f" (the catalogue needs at least one slate of {slate} items)" if low > 1 else ""))
    if n_events is not None and not n_users <= n_events <= MAX_SCALE_EVENTS:
        raise ConfigError(f"--events must be between --users ({n_users:,}: every user has an event) and "
                          f"{MAX_SCALE_EVENTS:,}; got {n_events:,}")
    if seed < 0:  # NumPy's own refusal is a bare "expected non-negative integer"
        raise ConfigError(f"--seed must be a whole number >= 0; got {seed}")
    check_dataset_folder(out)
    if n_events is None:
        from recsys.datasets import write_synthetic

        paths = write_synthetic(out, make_config(SyntheticConfig, n_users=n_users, n_items=n_items, seed=seed))
        click.echo(f"wrote {paths.items} and {paths.interactions}")
        return
    from tqdm.auto import tqdm

    from recsys.console import bars
    from recsys.synthetic_scale import ScaleConfig, write_scale_dataset

    config = make_config(ScaleConfig, n_users=n_users, n_items=n_items, n_events=n_events, seed=seed)
    start = time.perf_counter()
    with tqdm(total=n_users, desc="synth", unit="user", disable=bars(True)) as bar:
        folder = write_scale_dataset(out, config, progress=bar.update)
    click.echo(f"wrote {n_items:,} items and {n_events:,} events of {n_users:,} users to {folder} in "
               f"{time.perf_counter() - start:.0f} s")
