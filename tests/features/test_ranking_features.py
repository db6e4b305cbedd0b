"""Tests of the ranking feature table (``features.table``, ``popularity``, ``history``, ``catalogue``).

A literal log of 10 events on 4 items by 3 users, with one cut per user, and every feature
value worked out by hand below. Then the leakage checks: events at or after a cut must not
change a row, and one event before a cut must.

Log (day d = 2024-01-d, 00:00; u = user_idx, i = item_idx)::

    day  1  u1 i10      day  8  u1 i10      day 12  u2 i10
    day  2  u2 i10      day  9  u2 i11      day 20  u3 i11
    day  3  u1 i11      day 10  u1 i12
    day  5  u2 i10      day 11  u2 i12

Cuts: u1 day 10, u2 day 15, u3 day 5 (u3's only event is after it). Catalogue: i10 news,
published 2023-12-25, described; i11 sport, no date, blank description; i12 no category,
published day 12, no description; i13 news, published day 1, described, no events (cold).
Config: windows (3, 7) days, recent_n = 2.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.catalogue import add_item_attributes
from features.history import UserEvents, add_user_history
from features.popularity import ItemTimeline, _first_keys, add_item_popularity
from features.table import FeatureConfig, build_ranking_table, feature_columns
from recsys import contract as C

_CONFIG = FeatureConfig(windows_days=(3, 7), recent_n=2)
_NAN = float("nan")


def _d(day: int, month: int = 1, year: int = 2024) -> datetime:
    return datetime(year, month, day)


def _events(rows: list[tuple[int, int, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"user_idx": pl.Int64, "item_idx": pl.Int64, C.TS: C.DATETIME}, orient="row")


_EVENTS = _events([(1, 10, _d(1)), (2, 10, _d(2)), (1, 11, _d(3)), (2, 10, _d(5)), (1, 10, _d(8)),
                   (2, 11, _d(9)), (1, 12, _d(10)), (2, 12, _d(11)), (2, 10, _d(12)), (3, 11, _d(20))])
_CUTS = pl.DataFrame({"user_idx": [1, 2, 3], "cut": [_d(10), _d(15), _d(5)]},
                     schema={"user_idx": pl.Int64, "cut": C.DATETIME})
_ITEMS = pl.DataFrame({
    "item_idx": [10, 11, 12, 13],
    C.CATEGORY: ["news", "sport", None, "news"],
    C.PUBLISHED_AT: [_d(25, 12, 2023), None, _d(12), _d(1)],
    C.DESCRIPTION: ["a", "  ", None, "x"],
}, schema={"item_idx": pl.Int64, C.CATEGORY: pl.String, C.PUBLISHED_AT: C.DATETIME, C.DESCRIPTION: pl.String})

# Candidates, deliberately not in (user, item) order. score_text ties (u1: i10 and i12 at 0.5,
# u3: both at 0.2), a null (u1 i13) and a NaN (u2 i11).
# fmt: off
_CANDIDATES = pl.DataFrame(
    [
        # user item score_text score_lightfm src_text label
        (2,    12,  0.3,       -3.0,         1,       1.0),
        (1,    10,  0.5,        1.0,         1,       1.0),
        (1,    11,  0.9,        2.0,         1,       0.0),
        (3,    11,  0.2,        5.0,         0,       1.0),
        (1,    12,  0.5,        3.0,         0,       0.0),
        (1,    13,  None,       4.0,         0,       0.0),
        (2,    10,  0.1,       -1.0,         1,       0.0),
        (2,    11,  _NAN,      -2.0,         0,       1.0),
        (3,    10,  0.2,        5.0,         1,       0.0),
    ],
    schema={"user_idx": pl.Int64, "item_idx": pl.Int64, "score_text": pl.Float32, "score_lightfm": pl.Float64,
            "src_text": pl.Int8, "label": pl.Float32},
    orient="row",
)

# Expected, in output order (user_idx, item_idx). None = null.
# pop_3d / pop_7d count [cut - w, cut): u1 i11's 7-day window [day 3, day 10) includes day 3.
# pop_trend = pop_7d / (pop_all + 1). The event at day 10 on i12 is at u1's cut: not counted.
_EXPECTED = {
    #                      u1 i10  u1 i11  u1 i12  u1 i13  u2 i10  u2 i11  u2 i12  u3 i10  u3 i11
    "pop_all":            [4,      2,      0,      0,      5,      2,      2,      2,      1],
    "pop_3d":             [1,      1,      0,      0,      1,      0,      0,      1,      1],
    "pop_7d":             [2,      2,      0,      0,      2,      1,      2,      2,      1],
    "pop_users":          [2,      2,      0,      0,      2,      2,      2,      2,      1],
    "pop_trend":          [2 / 5,  2 / 3,  0,      0,      2 / 6,  1 / 3,  2 / 3,  2 / 3,  1 / 2],
    "pop_age_days":       [9,      7,      None,   None,   14,     12,     5,      4,      2],
    "pop_last_days":      [2,      1,      None,   None,   3,      6,      4,      3,      2],
    # u1 before day 10: news, sport, news. u2 before day 15: news, news, sport, (none), news. u3: none.
    "hist_n_events":      [3,      3,      3,      3,      5,      5,      5,      0,      0],
    "hist_days_since_last": [2,    2,      2,      2,      3,      3,      3,      None,   None],
    "hist_span_days":     [7,      7,      7,      7,      10,     10,     10,     None,   None],
    "hist_cat_share":     [2 / 3,  1 / 3,  None,   2 / 3,  3 / 5,  1 / 5,  None,   None,   None],
    # Last 2 events: u1 sport, news; u2 (no category), news.
    "hist_cat_recent_share": [1 / 2, 1 / 2, None,  1 / 2,  1 / 2,  0,      None,   None,   None],
    # i12 is published on day 12, after u1's cut: null, not -2.
    "item_published_age_days": [16, None,  None,   9,      21,     None,   3,      11,     None],
    "item_has_description": [1,    0,      0,      1,      1,      0,      0,      1,      0],
    "rank_text":          [2,      1,      3,      None,   2,      None,   1,      1,      2],
    "rank_lightfm":       [4,      3,      2,      1,      1,      2,      3,      1,      2],
}
# fmt: on


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return build_ranking_table(_CANDIDATES, _EVENTS, _ITEMS, _CUTS, config=_CONFIG)


def _approx(values: list) -> list:
    return [None if v is None else pytest.approx(v, rel=1e-6) for v in values]


def test_keys_order_and_passthrough(table: pl.DataFrame) -> None:
    assert table.select("user_idx", "item_idx").rows() == [(1, 10), (1, 11), (1, 12), (1, 13), (2, 10), (2, 11),
                                                           (2, 12), (3, 10), (3, 11)]
    expected = _CANDIDATES.sort("user_idx", "item_idx")
    assert_frame_equal(table.select(expected.columns), expected)
    assert table["cut"].to_list() == [_d(10)] * 4 + [_d(15)] * 3 + [_d(5)] * 2


@pytest.mark.parametrize("column", list(_EXPECTED))
def test_feature_values_by_hand(table: pl.DataFrame, column: str) -> None:
    assert table[column].to_list() == _approx(_EXPECTED[column])


def test_feature_dtypes(table: pl.DataFrame) -> None:
    for column in _EXPECTED:
        assert table.schema[column] in (pl.Float32, pl.Int32, pl.Int64), column


def test_feature_columns_are_numeric_inputs_without_keys_or_label(table: pl.DataFrame) -> None:
    assert feature_columns(table) == ["score_text", "score_lightfm", "src_text", *_EXPECTED]


def test_same_item_different_cuts_gives_different_popularity(table: pl.DataFrame) -> None:
    on_i10 = table.filter(pl.col("item_idx") == 10).sort("user_idx")
    assert on_i10["pop_all"].to_list() == [4, 5, 2]  # one global count would give one value


# --- leakage -------------------------------------------------------------------------------------

def _future_events(since: dict[int, datetime], users: list[int]) -> pl.DataFrame:
    """Many events of ``users`` on every candidate (and a cold) item, at or after ``since[user]``."""
    offsets = [timedelta(0), timedelta(microseconds=1), timedelta(days=1), timedelta(days=400)]
    rows = [(u, i, since[u] + off) for u in users for i in (10, 11, 12, 13, 14) for off in offsets for _ in range(5)]
    rows += [(u, i, datetime(9999, 12, 31)) for u in users for i in (10, 11, 12, 13)]
    return _events(rows)


def test_events_after_every_cut_change_nothing(table: pl.DataFrame) -> None:
    last_cut = _CUTS["cut"].max()
    users = [1, 2, 3, 99]  # 99 has no candidates: another user's future events
    future = _future_events(dict.fromkeys(users, last_cut), users)
    rebuilt = build_ranking_table(_CANDIDATES, pl.concat([future, _EVENTS]), _ITEMS, _CUTS, config=_CONFIG)
    assert_frame_equal(rebuilt, table)


@pytest.mark.parametrize("user", [1, 2, 3])
def test_events_at_or_after_a_users_cut_leave_that_users_rows_unchanged(table: pl.DataFrame, user: int) -> None:
    # Other users' rows may change (their cuts can be later), this user's rows must not.
    cut = _CUTS.filter(pl.col("user_idx") == user)["cut"][0]
    future = _future_events(dict.fromkeys([1, 2, 3, 99], cut), [1, 2, 3, 99])
    rebuilt = build_ranking_table(_CANDIDATES, pl.concat([_EVENTS, future]), _ITEMS, _CUTS, config=_CONFIG)
    mine = pl.col("user_idx") == user
    assert_frame_equal(rebuilt.filter(mine), table.filter(mine))


def test_one_event_before_a_cut_does_change_the_table(table: pl.DataFrame) -> None:
    earlier = _events([(3, 13, _d(9, 1))])  # before u1's cut (day 10), on the cold item 13
    rebuilt = build_ranking_table(_CANDIDATES, pl.concat([_EVENTS, earlier]), _ITEMS, _CUTS, config=_CONFIG)
    row = pl.col("user_idx").eq(1) & pl.col("item_idx").eq(13)
    assert table.filter(row)["pop_all"].item() == 0
    assert rebuilt.filter(row)["pop_all"].item() == 1
    assert rebuilt.filter(row)["pop_last_days"].item() == pytest.approx(1.0)
    assert_frame_equal(rebuilt.filter(~row), table.filter(~row))


# --- single families -----------------------------------------------------------------------------

def test_popularity_merges_ties_keeps_row_order_and_default_windows() -> None:
    events = _events([(1, 5, _d(2)), (2, 5, _d(2)), (2, 5, _d(2)), (3, 5, _d(4, 2))])
    pairs = pl.LazyFrame({"item_idx": [5, 5, 6], "cut": [_d(20), _d(2), _d(3)]},
                         schema={"item_idx": pl.Int64, "cut": C.DATETIME})
    out = add_item_popularity(pairs, events.lazy())
    assert isinstance(out, pl.LazyFrame)
    got = out.collect()
    assert got["cut"].to_list() == [_d(20), _d(2), _d(3)]
    # Three events at one instant, all counted; none at a cut equal to that instant.
    assert got["pop_all"].to_list() == [3, 0, 0]
    assert got["pop_users"].to_list() == [2, 0, 0]
    assert got["pop_7d"].to_list() == [0, 0, 0]  # [Jan 13, Jan 20) misses Jan 2
    assert got["pop_30d"].to_list() == [3, 0, 0]
    assert got["pop_trend"].to_list() == _approx([3 / 4, 0, 0])


def test_history_without_catalogue_categories_gives_null_shares() -> None:
    pairs = pl.LazyFrame({"user_idx": [1], "item_idx": [10], "cut": [_d(30)]},
                         schema={"user_idx": pl.Int64, "item_idx": pl.Int64, "cut": C.DATETIME})
    items = pl.LazyFrame({"item_idx": [11]}, schema={"item_idx": pl.Int64}).with_columns(
        pl.lit(None, dtype=pl.String).alias(C.CATEGORY))
    got = add_user_history(pairs, _EVENTS.lazy(), items).collect()
    assert got["hist_n_events"].to_list() == [4]
    assert got["hist_cat_share"].to_list() == [None]


def test_catalogue_without_optional_columns_gives_nulls() -> None:
    pairs = pl.LazyFrame({"item_idx": [10], "cut": [_d(10)]}, schema={"item_idx": pl.Int64, "cut": C.DATETIME})
    got = add_item_attributes(pairs, _ITEMS.lazy().select("item_idx", C.CATEGORY)).collect()
    assert got.row(0, named=True) == {"item_idx": 10, "cut": _d(10), "item_published_age_days": None,
                                      "item_has_description": None}


def test_rank_columns_without_scores_are_absent(table: pl.DataFrame) -> None:
    plain = build_ranking_table(_CANDIDATES.select("user_idx", "item_idx"), _EVENTS, _ITEMS, _CUTS, config=_CONFIG)
    assert not [c for c in plain.columns if c.startswith("rank_")]
    assert_frame_equal(plain, table.select(plain.columns))


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"windows_days": ()}, "windows_days"),
    ({"windows_days": (0, 7)}, "windows_days"),
    ({"windows_days": (7, 7)}, "windows_days"),
    ({"windows_days": (7.5,)}, "windows_days"),
    ({"windows_days": 7}, "windows_days"),
    ({"recent_n": 0}, "recent_n"),
    ({"recent_n": True}, "recent_n"),
])
def test_feature_config_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"FeatureConfig\.{field}"):
        FeatureConfig(**kwargs)


def test_feature_config_takes_a_list_of_windows() -> None:
    assert FeatureConfig(windows_days=[30, 7]).windows_days == (30, 7)


def test_duplicate_candidates_are_named() -> None:
    doubled = pl.concat([_CANDIDATES, _CANDIDATES.filter(pl.col("item_idx") == 11)])
    with pytest.raises(ValueError, match=r"candidates: 3 duplicate .*\(1, 11\), \(2, 11\), \(3, 11\)"):
        build_ranking_table(doubled, _EVENTS, _ITEMS, _CUTS)


def test_cut_problems_are_reported() -> None:
    with pytest.raises(ValueError, match=r"have no cut, e.g. \[3\]"):
        build_ranking_table(_CANDIDATES, _EVENTS, _ITEMS, _CUTS.filter(pl.col("user_idx") != 3))
    with pytest.raises(ValueError, match=r"cuts: 1 duplicate .*\(2,\)"):
        build_ranking_table(_CANDIDATES, _EVENTS, _ITEMS, pl.concat([_CUTS, _CUTS.filter(pl.col("user_idx") == 2)]))


def test_duplicate_catalogue_items_are_named() -> None:
    with pytest.raises(ValueError, match=r"items: 1 duplicate \(item_idx\) keys, e.g. \(12,\)"):
        build_ranking_table(_CANDIDATES, _EVENTS, pl.concat([_ITEMS, _ITEMS.filter(pl.col("item_idx") == 12)]), _CUTS)


def test_family_functions_check_their_arguments() -> None:
    pairs = _CANDIDATES.join(_CUTS, on="user_idx").lazy()
    with pytest.raises(ValueError, match="windows_days"):
        add_item_popularity(pairs, _EVENTS.lazy(), windows_days=(7, -1))
    with pytest.raises(ValueError, match="recent_n"):
        add_user_history(pairs, _EVENTS.lazy(), _ITEMS.lazy(), recent_n=0)


def test_nan_is_not_a_top_score(table: pl.DataFrame) -> None:
    row = table.filter(pl.col("user_idx").eq(2) & pl.col("item_idx").eq(11))
    assert math.isnan(row["score_text"].item()) and row["rank_text"].item() is None


# --- against a naive loop --------------------------------------------------------------------------

def _naive_row(user: int, item: int, cut: datetime, events: list[tuple], category: dict, recent_n: int) -> dict:
    """Every feature of one row, straight from the definitions (a scan over all events)."""
    day = timedelta(days=1)
    on_item = [(u, t) for u, i, t in events if i == item and t < cut]
    mine = sorted((t, i) for u, i, t in events if u == user and t < cut)
    cat = category.get(item)

    def share(rows: list[tuple]) -> float | None:
        return None if not rows or cat is None else sum(category.get(i) == cat for _, i in rows) / len(rows)

    return {
        "pop_all": len(on_item),
        "pop_2d": sum(t >= cut - 2 * day for _, t in on_item),
        "pop_5d": sum(t >= cut - 5 * day for _, t in on_item),
        "pop_users": len({u for u, _ in on_item}),
        "pop_age_days": (cut - min(t for _, t in on_item)) / day if on_item else None,
        "pop_last_days": (cut - max(t for _, t in on_item)) / day if on_item else None,
        "hist_n_events": len(mine),
        "hist_days_since_last": (cut - mine[-1][0]) / day if mine else None,
        "hist_span_days": (mine[-1][0] - mine[0][0]) / day if mine else None,
        "hist_cat_share": share(mine),
        "hist_cat_recent_share": share(mine[-recent_n:]),
    }


def test_matches_a_naive_loop_on_random_data() -> None:
    rng = random.Random(7)
    start = datetime(2024, 3, 1)
    # Whole hours on a small range, so that ties in time (and ties at the cut) are frequent.
    events = [(rng.randrange(6), rng.randrange(8), start + timedelta(hours=rng.randrange(240))) for _ in range(300)]
    category = {i: rng.choice(["a", "b", "c", None]) for i in range(8)}
    cuts = {u: start + timedelta(hours=rng.randrange(260)) for u in range(7)}  # user 6 has no events
    pairs = [(u, i) for u in range(7) for i in rng.sample(range(9), 5)]  # item 8 is in no event
    config = FeatureConfig(windows_days=(2, 5), recent_n=3)

    table = build_ranking_table(
        pl.DataFrame(pairs, schema={"user_idx": pl.Int64, "item_idx": pl.Int64}, orient="row"),
        _events(events),
        pl.DataFrame({"item_idx": list(category), C.CATEGORY: list(category.values())},
                     schema={"item_idx": pl.Int64, C.CATEGORY: pl.String}),
        pl.DataFrame({"user_idx": list(cuts), "cut": list(cuts.values())},
                     schema={"user_idx": pl.Int64, "cut": C.DATETIME}),
        config=config)
    for row in table.iter_rows(named=True):
        want = _naive_row(row["user_idx"], row["item_idx"], row["cut"], events, category, config.recent_n)
        got = {k: row[k] for k in want}
        assert got == {k: v if v is None else pytest.approx(v, rel=1e-5) for k, v in want.items()}, row


def test_a_timeline_built_once_gives_every_block_the_same_popularity() -> None:
    """A scoring process indexes the log once (``ItemTimeline``) and reads it for every block of users."""
    rng = random.Random(3)
    start = datetime(2024, 3, 1)
    events = _events([(rng.randrange(9), rng.randrange(12), start + timedelta(minutes=rng.randrange(20_000)))
                      for _ in range(400)])
    timeline = ItemTimeline.from_events(events)
    pairs = pl.DataFrame({"item_idx": [rng.randrange(14) for _ in range(60)],  # 12, 13: no event, counts 0
                          "cut": [start + timedelta(minutes=rng.randrange(21_000)) for _ in range(60)]},
                         schema={"item_idx": pl.Int64, "cut": C.DATETIME})
    want = add_item_popularity(pairs.lazy(), events.lazy(), windows_days=(1, 3)).collect()
    got = add_item_popularity(pairs, timeline, windows_days=(1, 3)).collect()
    assert got.equals(want)
    unknown = got.filter(pl.col("item_idx") >= 12)
    assert unknown.height and (unknown["pop_all"] == 0).all() and unknown["pop_age_days"].is_null().all()
    # exact to the microsecond: an event at the cut is not before it, one a microsecond earlier is
    at = events.sort(C.TS).row(0, named=True)
    edge = pl.DataFrame({"item_idx": [at["item_idx"]] * 2, "cut": [at[C.TS], at[C.TS] + timedelta(microseconds=1)]},
                        schema={"item_idx": pl.Int64, "cut": C.DATETIME})
    counts = add_item_popularity(edge, timeline).collect()["pop_all"].to_list()
    assert counts[1] - counts[0] == events.filter((pl.col("item_idx") == at["item_idx"])
                                                  & (pl.col(C.TS) == at[C.TS])).height


def test_an_index_of_events_by_user_gives_every_block_the_same_history_features() -> None:
    """A scoring process indexes the log by user once (``UserEvents``); a block slices its users' events."""
    index = UserEvents.from_events(_EVENTS.sample(fraction=1.0, shuffle=True, seed=1))
    got = build_ranking_table(_CANDIDATES, _EVENTS, _ITEMS, _CUTS, config=_CONFIG, by_user=index)
    assert_frame_equal(got, build_ranking_table(_CANDIDATES, _EVENTS, _ITEMS, _CUTS, config=_CONFIG))
    block = index.of([3, 1, 1, 7, -1])  # repeated, unknown and out-of-range users: each known user's events once
    want = _EVENTS.filter(pl.col("user_idx").is_in([1, 3]))
    assert_frame_equal(block.sort(C.TS), want.sort(C.TS))
    assert index.of([]).height == 0 and UserEvents.from_events(_EVENTS.head(0)).of([1]).height == 0


@pytest.mark.parametrize("stride_fits", [True, False])
def test_each_pairs_first_event_key_matches_grouping_by_pair(stride_fits):
    """``user_keys`` (distinct users) by sorting equals the group-by it replaced; the lexsort path too."""
    rng = np.random.default_rng(3)
    n = 4000
    users, items = rng.integers(0, 60, n), rng.integers(0, 40, n)
    ranks = rng.integers(0, 300, n)  # repeated instants, also within a pair
    stride = 301 if stride_fits else np.iinfo(np.int64).max // 50  # too wide for one key: the lexsort
    firsts = (pl.DataFrame({"u": users, "i": items, "r": ranks}).group_by("u", "i").agg(pl.col("r").min()))
    expected = np.sort(firsts["i"].to_numpy() * stride + firsts["r"].to_numpy())
    np.testing.assert_array_equal(_first_keys(users, items, ranks, stride), expected)
    assert _first_keys(users[:0], items[:0], ranks[:0], stride).shape == (0,)
