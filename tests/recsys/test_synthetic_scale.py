"""The scale log generator (``recsys data synth --events``): exact sizes, the story it tells, chunks, atomic writes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from recsys import contract as C
from recsys.cli import cli
from recsys.io import DatasetPaths, load_dataset
from recsys.synthetic_scale import ScaleConfig, scale_event_chunks, scale_items, write_scale_dataset

CONFIG = ScaleConfig(n_users=3_000, n_items=1_200, n_events=60_000, chunk_users=1_000, seed=3)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[pl.DataFrame, pl.DataFrame]:
    folder = write_scale_dataset(tmp_path_factory.mktemp("scale") / "data", CONFIG)
    data = load_dataset(DatasetPaths.from_dir(folder))  # the contract's own validation
    return data.items, data.interactions


def test_sizes_are_exact_and_every_user_has_an_event(written):
    items, events = written
    assert items.height == CONFIG.n_items and items[C.ITEM_ID].n_unique() == CONFIG.n_items
    assert events.height == CONFIG.n_events and events[C.USER_ID].n_unique() == CONFIG.n_users
    assert set(events[C.EVENT].unique()) == {C.CLICK, C.PURCHASE}
    assert 0.07 < (events[C.EVENT] == C.PURCHASE).mean() < 0.13


def test_no_event_precedes_its_items_publication_and_new_items_arrive(written):
    items, events = written
    joined = events.join(items.select(C.ITEM_ID, C.PUBLISHED_AT), on=C.ITEM_ID)
    assert joined.filter(pl.col(C.TS) < pl.col(C.PUBLISHED_AT)).height == 0
    start = events[C.TS].min()
    new = items.filter(pl.col(C.PUBLISHED_AT) > start)
    assert 0.15 < new.height / items.height < 0.25
    on_new = joined.filter(pl.col(C.PUBLISHED_AT) > start)
    assert on_new.height > 0.05 * events.height
    # fresh events: a good share of what new items get comes in their first week, as with releases
    first_week = on_new.filter(pl.col(C.TS) - pl.col(C.PUBLISHED_AT) < pl.duration(days=7)).height
    assert first_week / on_new.height > 0.3


def test_popularity_is_skewed_and_users_stick_to_their_topics(written):
    _, events = written
    per_item = events.group_by(C.ITEM_ID).len().sort("len", descending=True)["len"].to_numpy()
    assert per_item[: len(per_item) // 100].sum() > 0.1 * events.height  # the top 1% of items: over a tenth
    _, catalogue = scale_items(CONFIG)
    topic = catalogue.topic[events[C.ITEM_ID].str.slice(1).cast(pl.Int64).to_numpy()]
    frame = pl.DataFrame({"user": events[C.USER_ID], "topic": topic})
    share = (frame.group_by("user", "topic").len().group_by("user")
             .agg((pl.col("len").max() / pl.col("len").sum()).alias("top"), pl.col("len").sum().alias("n"))
             .filter(pl.col("n") >= 20))
    assert share["top"].mean() > 0.4  # 16 topics: 1/16 if taste did not matter; text then carries the signal


def test_chunks_bound_the_users_in_memory_and_the_seed_fixes_the_log():
    _, catalogue = scale_items(CONFIG)
    chunks = list(scale_event_chunks(CONFIG, catalogue))
    assert len(chunks) == 3 and all(c[C.USER_ID].n_unique() <= CONFIG.chunk_users for c in chunks)
    again = pl.concat(scale_event_chunks(CONFIG, scale_items(CONFIG)[1]))
    assert pl.concat(chunks).equals(again)
    other = ScaleConfig(**{**CONFIG.__dict__, "seed": 4})
    assert not pl.concat(scale_event_chunks(other, scale_items(other)[1])).equals(again)


def test_a_failed_write_keeps_the_old_dataset(tmp_path):
    folder = write_scale_dataset(tmp_path / "data", ScaleConfig(n_users=50, n_items=20, n_events=200))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def killed(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_scale_dataset(folder, ScaleConfig(n_users=500, n_items=20, n_events=2_000, chunk_users=100), killed)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging folder left behind


def test_cli_writes_a_scale_log_and_names_a_bad_size(tmp_path):
    out = tmp_path / "big"
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--users", "400", "--items", "100",
                                      "--events", "5000", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 100 items and 5,000 events of 400 users" in result.output
    assert pl.read_parquet(out / C.INTERACTIONS_FILE).height == 5000
    bad = CliRunner().invoke(cli, ["data", "synth", "--out", str(tmp_path / "x"), "--users", "400", "--events", "10"])
    assert bad.exit_code != 0 and "--events must be between --users (400" in bad.output
    assert not Path(tmp_path / "x").exists()


@pytest.mark.parametrize("field,value", [("n_events", 5), ("taste", 0.95), ("zipf", -1.0), ("n_items", 0)])
def test_config_refuses_what_cannot_be_drawn(field, value):
    with pytest.raises(ValueError, match=field):
        ScaleConfig(**{**dict(n_users=10, n_items=10, n_events=100), field: value})
