"""``recsys recommend --engine spark``: the same lists as the local engine, and bad input writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from recsys.cli import cli
from recsys.spark_export import spark_session

K = 5
KEYS = ["user_id", "rank"]


@pytest.fixture(scope="module")
def spark(registered_model: tuple[Path, str]):
    """One quiet local SparkSession for the module; the environment it sets is restored afterwards."""
    saved = dict(os.environ)
    session, _ = spark_session(registered_model[1], show_progress=False)
    yield session
    session.stop()
    os.environ.clear()
    os.environ.update(saved)


def _recommend(tmp: Path, registered_model: tuple[Path, str], engine: str, *extra: str):
    data, uri = registered_model
    out = tmp / f"{engine}.parquet"
    result = CliRunner().invoke(cli, ["recommend", "--engine", engine, "--model", "models:/recsys@champion",
                                      "--data", str(data), "--k", str(K), "--out", str(out), "--tracking-uri", uri,
                                      *extra])
    return result, out


def _assert_same(spark_out: Path, local_out: Path) -> pl.DataFrame:
    got, want = pl.read_parquet(spark_out), pl.read_parquet(local_out)
    assert got.schema == want.schema
    assert got.height == want.height
    # Users keep their input order in both engines; compare sorted anyway, as the contract says.
    got, want = got.sort(KEYS), want.sort(KEYS)
    assert got.select("user_id", "item_id", "rank", "fallback").equals(
        want.select("user_id", "item_id", "rank", "fallback"))
    assert (got["score"] - want["score"]).abs().max() <= 1e-6
    return got


def test_spark_export_equals_local_export(spark, registered_model, tmp_path: Path) -> None:
    # 150 users in blocks of 64: three partitions, so the order across part files is exercised too. Both
    # engines get the same blocks: the towers' float32 scores move in the last bits with the block's size.
    local, local_out = _recommend(tmp_path, registered_model, "local", "--block-size", "64")
    assert local.exit_code == 0, local.output
    result, out = _recommend(tmp_path, registered_model, "spark", "--block-size", "64")
    assert result.exit_code == 0, result.output
    assert "3 blocks" in result.output
    got = _assert_same(out, local_out)
    assert got["user_id"].n_unique() == 150
    assert pl.read_parquet(out)["user_id"].equals(pl.read_parquet(local_out)["user_id"])  # same user order
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.parquet", "spark.parquet"]  # no leftovers


def test_spark_export_of_listed_users_equals_local(spark, registered_model, tmp_path: Path) -> None:
    data, _ = registered_model
    users = pl.read_parquet(data / "interactions.parquet")["user_id"].unique().sort().to_list()
    picked = users[::7][::-1]  # a subset, not in sorted order
    listed = tmp_path / "users.txt"
    listed.write_text("\n".join(picked) + "\n")
    local, local_out = _recommend(tmp_path, registered_model, "local", "--users", str(listed), "--block-size", "8")
    assert local.exit_code == 0, local.output
    result, out = _recommend(tmp_path, registered_model, "spark", "--users", str(listed), "--block-size", "8")
    assert result.exit_code == 0, result.output
    got = _assert_same(out, local_out)
    assert set(got["user_id"]) == set(picked)
    assert pl.read_parquet(out)["user_id"].unique(maintain_order=True).to_list() == picked  # the file's order


def test_unknown_user_fails_clearly_and_writes_nothing(spark, registered_model, tmp_path: Path) -> None:
    listed = tmp_path / "users.txt"
    listed.write_text("no-such-user\n")
    result, out = _recommend(tmp_path, registered_model, "spark", "--users", str(listed))
    assert result.exit_code == 1
    assert "neither known to the model nor in the data" in result.output
    assert "no-such-user" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.txt"]
