"""``rank_<x>`` columns of the ranking table: the compiled ranks against a polars window reference."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.ranks import ranks_by_user
from features.table import build_ranking_table
from recsys.contract import CUT, ITEM_IDX, TS, USER_IDX


def _reference_rank(score: str, dtype: pl.DataType) -> pl.Expr:
    """The polars window the compiled ranks replaced: highest first, ties to the lower item, null/NaN null."""
    value = pl.col(score)
    if dtype.is_float():
        value = value.fill_nan(None)
    order = pl.arg_sort_by([value, pl.col(ITEM_IDX)], descending=[True, False], nulls_last=True)
    rank = (order.arg_sort() + 1).over(USER_IDX).cast(pl.Int32)
    return pl.when(value.is_not_null()).then(rank).alias("want")


def _rows(seed: int, dtype: pl.DataType) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 3000
    users = np.sort(rng.integers(0, 60, n))
    frame = pl.DataFrame({USER_IDX: users, ITEM_IDX: rng.integers(0, 400, n)}).unique([USER_IDX, ITEM_IDX])
    frame = frame.sort(USER_IDX, ITEM_IDX)
    values = rng.integers(-4, 5, frame.height).astype(np.float64)  # few distinct values: many ties
    values[rng.random(frame.height) < 0.05] = np.nan
    values[rng.random(frame.height) < 0.05] = -0.0
    score = pl.Series("score", values, nan_to_null=False)
    if dtype.is_integer():
        score = score.fill_nan(0)
    score = score.cast(dtype)
    nulls = rng.random(frame.height) < 0.05
    return frame.with_columns(pl.when(pl.Series(nulls)).then(None).otherwise(score).alias("score"))


@pytest.mark.parametrize("dtype", [pl.Float32, pl.Float64, pl.Int64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_the_window_reference(seed: int, dtype: pl.DataType) -> None:
    frame = _rows(seed, dtype)
    want = frame.with_columns(_reference_rank("score", dtype))["want"]
    got = ranks_by_user(frame[USER_IDX].to_numpy(), frame["score"])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(np.where(want.is_null().to_numpy(), 0, want.fill_null(0).to_numpy()), got)


def test_ranks_of_a_single_user_and_of_no_rows() -> None:
    got = ranks_by_user(np.zeros(4, dtype=np.int64), pl.Series([0.5, 2.0, 0.5, None]))
    np.testing.assert_array_equal(got, [2, 1, 3, 0])
    assert ranks_by_user(np.zeros(0, dtype=np.int64), pl.Series([], dtype=pl.Float64)).size == 0


def test_the_table_ranks_every_score_column_per_user() -> None:
    """Through ``build_ranking_table``: candidates in any order get the reference ranks, Int32, nulls kept."""
    rng = np.random.default_rng(5)
    frame = _rows(7, pl.Float32).rename({"score": "score_text"})
    frame = frame.with_columns(pl.Series("score_lightfm", rng.normal(size=frame.height)))
    frame = frame.sample(fraction=1.0, shuffle=True, seed=3)  # the table sorts; ranks must not depend on input order
    users = frame[USER_IDX].unique()
    cut = pl.datetime(2024, 1, 1, time_unit="us")
    cuts = pl.DataFrame({USER_IDX: users}).with_columns(cut.alias(CUT))
    events = pl.DataFrame({USER_IDX: [0], ITEM_IDX: [0], TS: [None]},
                          schema={USER_IDX: pl.Int64, ITEM_IDX: pl.Int64, TS: pl.Datetime("us")}).head(0)
    items = pl.DataFrame({ITEM_IDX: np.arange(400), "category": ["a", "b"] * 200})
    table = build_ranking_table(frame, events, items, cuts)
    want = frame.sort(USER_IDX, ITEM_IDX).with_columns(
        _reference_rank("score_text", pl.Float32).alias("rank_text"),
        _reference_rank("score_lightfm", pl.Float64).alias("rank_lightfm"))
    assert table.schema["rank_text"] == pl.Int32 and table.schema["rank_lightfm"] == pl.Int32
    assert table["rank_text"].null_count() > 0
    assert_frame_equal(table.select(USER_IDX, ITEM_IDX, "rank_text", "rank_lightfm"),
                       want.select(USER_IDX, ITEM_IDX, "rank_text", "rank_lightfm"))
