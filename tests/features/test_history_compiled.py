"""The compiled history features equal the polars as-of joins they replaced, value for value and null for null.

``_reference_add_user_history`` is that implementation, kept verbatim: random logs with ties in
time, users without events, cuts before, between and after a user's events, one user's rows at
several cuts, null and missing categories and users with more than ``recent_n`` events are scored
by both and compared exactly (dtypes, nulls, Float32 bits and row order).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.catalogue import days_between
from features.history import UserEvents, add_user_history
from recsys import contract as C
from recsys.contract import CUT, ITEM_IDX, USER_IDX

# --- the polars implementation, as it was -----------------------------------------------------

_ROW = "_hist_row"
_POS = "_hist_pos"
_CAT = "_hist_cat"
_K = "hist_n_events"


def _numbered(events: pl.LazyFrame, items: pl.LazyFrame) -> pl.LazyFrame:
    """Each user's events with their 1-based position in time order and the item's category."""
    return (events.select(USER_IDX, ITEM_IDX, C.TS)
            .join(items, on=ITEM_IDX, how="left")
            .sort(USER_IDX, C.TS, ITEM_IDX)
            .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(USER_IDX).alias(_POS)))


def _category_count(left: pl.LazyFrame, by_cat: pl.LazyFrame, at: pl.Expr, name: str) -> pl.LazyFrame:
    """Events of the row's category among the user's first ``at`` events (0 when none)."""
    return (left.with_columns(at.alias("_hist_at")).sort("_hist_at")
            .join_asof(by_cat.rename({"_hist_catcum": name}), left_on="_hist_at", right_on=_POS,
                       by=[USER_IDX, _CAT], strategy="backward", check_sortedness=False)
            .with_columns(pl.col(name).fill_null(0))
            .drop("_hist_at", _POS, strict=False))


def _reference_add_user_history(pairs: pl.LazyFrame, events: pl.LazyFrame, items: pl.LazyFrame, *,
                                recent_n: int = 20) -> pl.LazyFrame:
    """``features.history.add_user_history`` before the compiled loop: strict as-of joins on time and position."""
    cats = items.select(ITEM_IDX, pl.col(C.CATEGORY).alias(_CAT))
    numbered = _numbered(events, cats)
    by_time = (numbered.group_by(USER_IDX, C.TS).agg(pl.col(_POS).max().cast(pl.Int32).alias(_K))
               .sort(C.TS).with_columns(pl.col(C.TS).alias("_hist_last")))
    firsts = numbered.group_by(USER_IDX).agg(pl.col(C.TS).min().alias("_hist_first"))
    by_cat = (numbered.filter(pl.col(_CAT).is_not_null()).select(USER_IDX, _CAT, _POS)
              .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(USER_IDX, _CAT).alias("_hist_catcum"))
              .sort(_POS))

    rows = (pairs.with_row_index(_ROW).join(cats, on=ITEM_IDX, how="left", maintain_order="left")
            .sort(CUT)
            .join_asof(by_time, left_on=CUT, right_on=C.TS, by=USER_IDX, strategy="backward",
                       allow_exact_matches=False, check_sortedness=False)
            .drop(C.TS)
            .with_columns(pl.col(_K).fill_null(0)))
    rows = _category_count(rows, by_cat, pl.col(_K).cast(pl.Int64), "_hist_in_all")
    rows = _category_count(rows, by_cat, pl.col(_K).cast(pl.Int64) - recent_n, "_hist_before_recent")

    k = pl.col(_K)
    known = (k > 0) & pl.col(_CAT).is_not_null()
    recent = pl.col("_hist_in_all") - pl.col("_hist_before_recent")
    return (rows.join(firsts, on=USER_IDX, how="left")
            .sort(_ROW)
            .with_columns(
                days_between(pl.col("_hist_last"), pl.col(CUT)).alias("hist_days_since_last"),
                pl.when(k > 0).then(days_between(pl.col("_hist_first"), pl.col("_hist_last"))).alias("hist_span_days"),
                pl.when(known).then(pl.col("_hist_in_all") / k).cast(pl.Float32).alias("hist_cat_share"),
                pl.when(known).then(recent / pl.min_horizontal(k, recent_n)).cast(pl.Float32)
                .alias("hist_cat_recent_share"))
            .drop(_ROW, _CAT, "_hist_last", "_hist_first", "_hist_in_all", "_hist_before_recent"))


# --- random logs ---------------------------------------------------------------------------------

_T0 = datetime(2024, 1, 1)
_N_ITEMS = 60
"""Events and candidates name items ``0 .. _N_ITEMS + 9``; the catalogue lacks some of them."""


def _case(seed: int, *, shuffled: bool) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Random ``pairs``, ``events`` and ``items``, with every corner the history features have."""
    rng = np.random.default_rng(seed)
    listed = np.sort(rng.choice(_N_ITEMS + 10, _N_ITEMS, replace=False))  # 10 items missing from the catalogue
    categories = np.array(["news", "sport", "tech", "food", "", None], dtype=object)  # "" is a category, not null
    items = pl.DataFrame({ITEM_IDX: listed, C.CATEGORY: categories[rng.integers(0, len(categories), len(listed))]},
                         schema={ITEM_IDX: pl.Int64, C.CATEGORY: pl.String})

    events, pairs = [], []
    for user in range(40):
        # none, a few, or more than any recent_n tested; times on a coarse grid, so ties are common
        n = [0, 0, 1, 2, 5, 8, 30, 70][rng.integers(0, 8)]
        hours = np.sort(rng.integers(0, 24 * 6, n) * 3)  # 3-hour grid over 18 days
        for hour in hours:
            events.append((user, int(rng.integers(0, _N_ITEMS + 10)), _T0 + timedelta(hours=int(hour))))
        if n and rng.random() < 0.2:
            events.append(events[-1])  # an exact duplicate event
        # one cut for the user (the usual case) or one per row; before, at, between and after the events
        spots = [-10, 0, 3, 1500] + ([int(hours[0]), int(hours[-1]), int(hours[-1]) + 3] if n else [])
        spots += [int(h) + d for h in hours[: 5] for d in (-1, 0, 1)]
        shared = spots[rng.integers(0, len(spots))]
        per_row = rng.random() < 0.3
        for item in rng.choice(_N_ITEMS + 10, int(rng.integers(1, 12)), replace=False):
            hour = spots[rng.integers(0, len(spots))] if per_row else shared
            pairs.append((user, int(item), _T0 + timedelta(hours=hour, microseconds=int(rng.integers(0, 2)))))
    pairs = pl.DataFrame(pairs, schema={USER_IDX: pl.Int64, ITEM_IDX: pl.Int64, CUT: C.DATETIME}, orient="row")
    pairs = pairs.with_columns(score=pl.Series(rng.random(pairs.height), dtype=pl.Float32),
                               tag=pl.Series([f"r{i}" for i in range(pairs.height)]))
    if shuffled:
        pairs = pairs.sample(fraction=1.0, shuffle=True, seed=seed)
    events = pl.DataFrame(events, schema={USER_IDX: pl.Int64, ITEM_IDX: pl.Int64, C.TS: C.DATETIME}, orient="row")
    return pairs, events.sample(fraction=1.0, shuffle=True, seed=seed), items


@pytest.mark.parametrize("recent_n", [1, 3, 20])
@pytest.mark.parametrize("seed", range(6))
def test_compiled_history_equals_the_as_of_joins(seed: int, recent_n: int) -> None:
    pairs, events, items = _case(seed, shuffled=seed % 2 == 1)
    got = add_user_history(pairs.lazy(), events.lazy(), items.lazy(), recent_n=recent_n)
    assert isinstance(got, pl.LazyFrame)
    want = _reference_add_user_history(pairs.lazy(), events.lazy(), items.lazy(), recent_n=recent_n).collect()
    assert_frame_equal(got.collect(), want, check_exact=True)
    assert want["hist_cat_share"].null_count() < want.height  # the case is not all nulls


@pytest.mark.parametrize("recent_n", [1, 3, 20])
@pytest.mark.parametrize("seed", range(3))
def test_a_blocks_slice_of_the_user_index_gives_the_same_features(seed: int, recent_n: int) -> None:
    """As ``features.table`` passes them: the block's users' events, sliced from :class:`UserEvents`."""
    pairs, events, items = _case(seed + 100, shuffled=True)
    block = pairs.filter(pl.col(USER_IDX) < 25)
    sliced = UserEvents.from_events(events).of(block[USER_IDX].to_numpy())
    got = add_user_history(block.lazy(), sliced.lazy(), items.lazy(), recent_n=recent_n).collect()
    want = _reference_add_user_history(block.lazy(), events.lazy(), items.lazy(), recent_n=recent_n).collect()
    assert_frame_equal(got, want, check_exact=True)


def test_the_user_index_keeps_each_users_events_in_time_then_item_order() -> None:
    _, events, _ = _case(7, shuffled=True)
    index = UserEvents.from_events(events.lazy())
    assert_frame_equal(index.events, events.sort(USER_IDX, C.TS, ITEM_IDX))
    assert_frame_equal(index.of(np.array([5, 3, 5])), events.filter(pl.col(USER_IDX).is_in([3, 5]))
                       .sort(USER_IDX, C.TS, ITEM_IDX))


def test_null_users_cuts_and_items_read_as_the_as_of_joins_read_them() -> None:
    """A row without a user or a cut sees no event; an item that is null (in a row or an event) has no category."""
    pairs, events, items = _case(3, shuffled=True)
    rng = np.random.default_rng(3)

    def holes(frame: pl.DataFrame, column: str) -> pl.Expr:
        return pl.when(pl.Series(rng.random(frame.height) < 0.2)).then(None).otherwise(pl.col(column)).alias(column)

    pairs = pairs.with_columns(holes(pairs, USER_IDX), holes(pairs, CUT), holes(pairs, ITEM_IDX))
    events = events.with_columns(holes(events, ITEM_IDX))
    got = add_user_history(pairs.lazy(), events.lazy(), items.lazy(), recent_n=3).collect()
    want = _reference_add_user_history(pairs.lazy(), events.lazy(), items.lazy(), recent_n=3).collect()
    assert_frame_equal(got, want, check_exact=True)

def test_empty_inputs() -> None:
    pairs, events, items = _case(0, shuffled=False)
    for p, e, i in [(pairs.head(0), events, items), (pairs, events.head(0), items), (pairs, events, items.head(0))]:
        got = add_user_history(p.lazy(), e.lazy(), i.lazy()).collect()
        assert_frame_equal(got, _reference_add_user_history(p.lazy(), e.lazy(), i.lazy()).collect(), check_exact=True)


def test_days_keep_polars_float32_rounding_over_long_spans() -> None:
    """Microsecond gaps from one to years: ``days_between``'s float64 product, rounded once to Float32."""
    rng = np.random.default_rng(11)
    gaps = np.unique(np.concatenate([rng.integers(1, 10**9, 300), rng.integers(10**9, 10**14, 300)]))
    cut = _T0 + timedelta(days=4000)
    events = pl.DataFrame({USER_IDX: np.arange(len(gaps)), ITEM_IDX: np.zeros(len(gaps), dtype=np.int64),
                           C.TS: [cut - timedelta(microseconds=int(g)) for g in gaps]},
                          schema={USER_IDX: pl.Int64, ITEM_IDX: pl.Int64, C.TS: C.DATETIME})
    events = pl.concat([events, events.with_columns(pl.col(C.TS) - timedelta(days=900))])
    pairs = pl.DataFrame({USER_IDX: np.arange(len(gaps)), ITEM_IDX: np.zeros(len(gaps), dtype=np.int64),
                          CUT: [cut] * len(gaps)}, schema={USER_IDX: pl.Int64, ITEM_IDX: pl.Int64, CUT: C.DATETIME})
    items = pl.DataFrame({ITEM_IDX: [0], C.CATEGORY: ["news"]}, schema={ITEM_IDX: pl.Int64, C.CATEGORY: pl.String})
    got = add_user_history(pairs.lazy(), events.lazy(), items.lazy()).collect()
    assert_frame_equal(got, _reference_add_user_history(pairs.lazy(), events.lazy(), items.lazy()).collect(),
                       check_exact=True)
