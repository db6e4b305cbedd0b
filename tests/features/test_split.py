"""Tests of ``features.split``: labels on a literal log computed by hand, and naive reference loops.

The literal log has 18 rows, 4 users, 6 items and 11 units (an impression is one unit, at the
time of its first row; every event without an impression id is a unit of its own). The unit
start times are 01:00 .. 10:00 on the hour, so there are 10 distinct start times (u1's click f
and u4's click a both start at 10:00).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.split import SPLIT_MODES, SplitConfig, split_summary, temporal_split
from recsys import contract as C

_KEYS = [C.USER_ID, C.ITEM_ID, C.TS, C.EVENT]


def _t(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 1, 1, hour, minute)


# Expected labels, by hand:
# * global 20/20: distinct starts 01..10 (n=10); cut_valid = quantile(0.6, "higher") -> index
#   ceil(0.6 * 9) = 6 -> 07:00; cut_test = quantile(0.8, "higher") -> index ceil(7.2) = 8 -> 09:00.
# * dates: valid_start 05:30, test_start 08:00 (a unit starting exactly at 08:00 is test).
# * per-user 25/50: u1 has 4 units -> floor(2.0) = 2 test, floor(1.0) = 1 valid; u2 and u3 have 3
#   -> 1 test, floor(0.75) = 0 valid; u4 has 1 -> all train.
# fmt: off
_LOG = [
    # user  item  time     event         impression  global 20/20  dates    per-user 25/50
    ("u1", "a", _t(1),     C.IMPRESSION, "i1",       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u1", "b", _t(1),     C.IMPRESSION, "i1",       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u1", "a", _t(1, 1),  C.CLICK,      "i1",       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u2", "c", _t(2),     C.CLICK,      None,       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u2", "a", _t(3),     C.IMPRESSION, "i2",       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u2", "c", _t(3),     C.IMPRESSION, "i2",       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u2", "c", _t(3, 1),  C.CLICK,      "i2",       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u3", "b", _t(4),     C.PURCHASE,   None,       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u3", "a", _t(5),     C.IMPRESSION, "i3",       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u3", "d", _t(5),     C.IMPRESSION, "i3",       C.TRAIN,      C.TRAIN, C.TRAIN),
    ("u1", "d", _t(6),     C.CLICK,      None,       C.TRAIN,      C.VALID, C.VALID),
    ("u1", "c", _t(7),     C.IMPRESSION, "i4",       C.VALID,      C.VALID, C.TEST),
    ("u1", "e", _t(7),     C.IMPRESSION, "i4",       C.VALID,      C.VALID, C.TEST),
    # i4's click comes after the 09:00 test cut; the impression stays whole, in valid.
    ("u1", "e", _t(9, 30), C.CLICK,      "i4",       C.VALID,      C.VALID, C.TEST),
    ("u2", "e", _t(8),     C.CLICK,      None,       C.VALID,      C.TEST,  C.TEST),
    ("u3", "f", _t(9),     C.CLICK,      None,       C.TEST,       C.TEST,  C.TEST),
    ("u1", "f", _t(10),    C.CLICK,      None,       C.TEST,       C.TEST,  C.TEST),
    ("u4", "a", _t(10),    C.CLICK,      None,       C.TEST,       C.TEST,  C.TRAIN),
]
# fmt: on
_GLOBAL, _DATES, _PER_USER = 5, 6, 7
_GLOBAL_20_20 = SplitConfig(mode="global", valid=0.2, test=0.2)
_DATES_CFG = SplitConfig(mode="global", valid_start=_t(5, 30), test_start=_t(8))
_PER_USER_25_50 = SplitConfig(mode="per-user", valid=0.25, test=0.5)


def _frame(rows: list[tuple]) -> pl.DataFrame:
    """Interactions in the full contract schema from (user, item, ts, event, impression, ...) rows."""
    frame = pl.DataFrame([r[:5] for r in rows], schema=_KEYS + [C.IMPRESSION_ID], orient="row")
    return frame.with_columns(
        pl.col(C.TS).cast(pl.Datetime("us")),
        pl.lit(None, pl.Float64).alias(C.RATING),
        pl.lit(False).alias(C.FROM_HISTORY),
    ).select(list(C.INTERACTION_SCHEMA))


@pytest.fixture
def log() -> pl.DataFrame:
    return _frame(_LOG)


def _labels(out: pl.DataFrame) -> list[str]:
    """Split labels in the order of ``_LOG`` (its (user, item, ts, event) keys are unique)."""
    order = _frame(_LOG).select(_KEYS).with_row_index("_i")
    return out.join(order, on=_KEYS).sort("_i")[C.SPLIT].to_list()


@pytest.mark.parametrize(("config", "column"), [
    (_GLOBAL_20_20, _GLOBAL), (_DATES_CFG, _DATES), (_PER_USER_25_50, _PER_USER),
], ids=["global-fractions", "global-dates", "per-user"])
def test_every_row_gets_the_hand_computed_label(log, config, column):
    out = temporal_split(log, config).collect()
    assert out.height == len(_LOG)
    assert _labels(out) == [row[column] for row in _LOG]


def test_global_valid_zero_puts_everything_before_the_test_cut_in_train(log):
    out = temporal_split(log, SplitConfig(valid=0.0, test=0.2)).collect()
    expected = [C.TRAIN if row[_GLOBAL] == C.VALID else row[_GLOBAL] for row in _LOG]
    assert _labels(out) == expected


def test_output_keeps_the_input_columns_and_adds_the_split_columns_sorted_by_time(log):
    out = temporal_split(log, _GLOBAL_20_20).collect()
    assert out.columns == [*C.INTERACTION_SCHEMA, C.SPLIT, C.IS_COLD_ITEM, C.IS_COLD_USER]
    assert_frame_equal(out, out.sort(C.TS, C.USER_ID, C.ITEM_ID, C.EVENT))


@pytest.mark.parametrize("config", [_GLOBAL_20_20, _DATES_CFG, _PER_USER_25_50])
def test_an_impression_is_never_cut_even_when_its_click_is_after_the_cut(log, config):
    out = temporal_split(log, config).collect()
    per_impression = out.drop_nulls(C.IMPRESSION_ID).group_by(C.IMPRESSION_ID).agg(pl.col(C.SPLIT).n_unique())
    assert per_impression[C.SPLIT].to_list() == [1] * 4
    i4 = out.filter(pl.col(C.IMPRESSION_ID) == "i4")
    assert i4[C.TS].max() == _t(9, 30)  # the click is later than the 09:00 cut...
    assert i4[C.SPLIT].unique().to_list() == [C.VALID if config.mode == "global" else C.TEST]


@pytest.mark.parametrize(("config", "cold_items", "cold_users"), [
    (_GLOBAL_20_20, {"e", "f"}, {"u4"}),
    (_DATES_CFG, {"e", "f"}, {"u4"}),  # d is clicked only in valid but was shown in train (i3)
    (_PER_USER_25_50, {"e", "f"}, set()),
])
def test_cold_flags_on_the_literal_log(log, config, cold_items, cold_users):
    out = temporal_split(log, config).collect()
    items = dict(out.group_by(C.ITEM_ID).agg(pl.col(C.IS_COLD_ITEM).first()).iter_rows())
    users = dict(out.group_by(C.USER_ID).agg(pl.col(C.IS_COLD_USER).first()).iter_rows())
    assert {k for k, cold in items.items() if cold} == cold_items
    assert {k for k, cold in users.items() if cold} == cold_users
    # the flag is a property of the item / user, identical on all its rows
    assert out.group_by(C.ITEM_ID).agg(pl.col(C.IS_COLD_ITEM).n_unique())[C.IS_COLD_ITEM].max() == 1


def test_cold_means_no_train_row_of_any_event():
    rows = [
        ("u1", "shown", _t(1), C.IMPRESSION, "s1"), ("u1", "x", _t(1), C.IMPRESSION, "s1"),
        ("u1", "x", _t(1, 1), C.CLICK, "s1"),
        ("u1", "shown", _t(2), C.CLICK, None),  # test: clicked only in test, but shown in train
        ("u1", "only_test", _t(3), C.CLICK, None),
        ("u2", "x", _t(4), C.CLICK, None),  # u2 exists only in test
    ]
    out = temporal_split(_frame(rows), SplitConfig(valid=0.0, test=0.7)).collect()
    # starts 01, 02, 03, 04 -> cut = quantile(0.3, "higher") -> index ceil(0.9) = 1 -> 02:00
    assert out.filter(pl.col(C.SPLIT) == C.TRAIN)[C.IMPRESSION_ID].to_list() == ["s1"] * 3
    assert _split_by(out, C.ITEM_ID, C.IS_COLD_ITEM) == {"shown": False, "x": False, "only_test": True}
    assert _split_by(out, C.USER_ID, C.IS_COLD_USER) == {"u1": False, "u2": True}


def _split_by(out: pl.DataFrame, key: str, flag: str) -> dict[str, bool]:
    return dict(out.group_by(key).agg(pl.col(flag).first()).iter_rows())


def test_per_user_ties_in_time_are_broken_by_impression_id_not_row_order():
    rows = [("u9", "a", _t(11), C.IMPRESSION, "k0"), ("u9", "b", _t(12), C.IMPRESSION, "k2"),
            ("u9", "c", _t(12), C.IMPRESSION, "k1"), ("u9", "c", _t(12, 5), C.CLICK, "k1")]
    config = SplitConfig(mode="per-user", valid=0.0, test=0.34)  # 3 units -> 1 test unit
    for rows_in in (rows, rows[::-1]):
        out = temporal_split(_frame(rows_in), config).collect()
        assert dict(out.group_by(C.IMPRESSION_ID).agg(pl.col(C.SPLIT).first()).iter_rows()) == {
            "k0": C.TRAIN, "k1": C.TRAIN, "k2": C.TEST}


@pytest.mark.parametrize("config", [_GLOBAL_20_20, _DATES_CFG, _PER_USER_25_50])
def test_shuffled_input_gives_identical_output(log, config):
    reference = temporal_split(log, config).collect()
    assert_frame_equal(temporal_split(log, config).collect(), reference)
    for seed in range(5):
        shuffled = log.sample(fraction=1.0, shuffle=True, seed=seed)
        assert_frame_equal(temporal_split(shuffled.lazy(), config).collect(), reference)


@pytest.mark.parametrize("mode", SPLIT_MODES)
def test_rows_tied_on_time_user_item_and_event_come_out_in_the_same_order(mode):
    # The same item shown to the same user at the same instant in two impressions: the rows
    # differ only by impression id. "Deterministic ... never by row order" must hold for them too.
    rows = [("u1", "a", _t(1), C.IMPRESSION, "i1"), ("u1", "a", _t(1), C.IMPRESSION, "i2"),
            ("u1", "b", _t(1), C.IMPRESSION, "i1"), ("u1", "b", _t(1), C.IMPRESSION, "i2"),
            ("u1", "c", _t(2), C.CLICK, None), ("u1", "d", _t(3), C.CLICK, None),
            ("u1", "e", _t(3), C.CLICK, None), ("u1", "f", _t(3), C.CLICK, "i3")]
    config = SplitConfig(mode=mode, valid=0.25, test=0.25)
    reference = temporal_split(_frame(rows), config).collect()
    for seed in range(10):
        shuffled = _frame(rows).sample(fraction=1.0, shuffle=True, seed=seed)
        assert_frame_equal(temporal_split(shuffled, config).collect(), reference)


def test_split_summary_counts_and_window_order(log):
    summary = split_summary(temporal_split(log, _GLOBAL_20_20))
    assert summary.columns == [C.SPLIT, "rows", "users", "items", "positives", "cold_items",
                               "users_with_train_history", "first", "last"]
    assert summary.rows() == [
        # rows users items positives cold_items users_with_train_history first last
        (C.TRAIN, 11, 3, 4, 5, 0, 3, _t(1), _t(6)),
        (C.VALID, 4, 2, 2, 2, 1, 2, _t(7), _t(9, 30)),  # cold: e; first/last are row times
        (C.TEST, 3, 3, 2, 3, 1, 2, _t(9), _t(10)),  # cold: f; u4 has no train history
    ]
    shuffled = temporal_split(log.sample(fraction=1.0, shuffle=True, seed=7), _GLOBAL_20_20).collect()
    assert_frame_equal(split_summary(shuffled.sample(fraction=1.0, shuffle=True, seed=8)), summary)


def test_per_user_counts_a_users_first_unit_even_when_the_previous_user_ended_on_the_same_event():
    # u1's only event and u2's first are the same (item, event, time): u2 still has 2 units, so 1 is test
    rows = [("u1", "a", _t(5), C.CLICK, None), ("u2", "a", _t(5), C.CLICK, None), ("u2", "b", _t(6), C.CLICK, None)]
    out = temporal_split(_frame(rows), SplitConfig(mode="per-user", valid=0.0, test=0.5)).collect()
    labels = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.SPLIT] for r in out.to_dicts()}
    assert labels == {("u1", "a"): C.TRAIN, ("u2", "a"): C.TRAIN, ("u2", "b"): C.TEST}


@pytest.mark.parametrize("config", [_GLOBAL_20_20, _PER_USER_25_50, SplitConfig(mode="items", valid=0.2, test=0.2)])
def test_integer_ids_in_sorted_order_split_as_the_ids_do(config):
    # build_eval_data splits indices given in the ids' sorted order: the labels must not move
    events = _random_log(seed=3)
    by_id = temporal_split(events, config).collect()
    codes = {c: {v: i for i, v in enumerate(sorted(events[c].unique().to_list()))} for c in (C.USER_ID, C.ITEM_ID)}
    coded = events.with_columns(pl.col(c).replace_strict(codes[c], return_dtype=pl.UInt32) for c in codes)
    by_index = temporal_split(coded, config).collect()
    back = {c: dict(enumerate(sorted(codes[c]))) for c in codes}
    restored = by_index.with_columns(pl.col(c).replace_strict(back[c], return_dtype=pl.String) for c in codes)
    assert_frame_equal(restored, by_id)


# --- naive reference loops on a larger random log -------------------------------------------


def _random_log(seed: int) -> pl.DataFrame:
    """~400 rows: 60 impressions (1 to 4 shown items, some clicked later) and 80 single events.

    Times are on a coarse grid so that many units start at the same instant.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(60):
        user, start = f"u{rng.integers(8)}", _t(0) + timedelta(minutes=10 * int(rng.integers(50)))
        for item in rng.choice(30, size=int(rng.integers(1, 5)), replace=False):
            rows.append((user, f"i{item}", start, C.IMPRESSION, f"imp{k}"))
            if rng.random() < 0.4:
                rows.append((user, f"i{item}", start + timedelta(minutes=int(rng.integers(1, 90))), C.CLICK, f"imp{k}"))
    for _ in range(80):
        at = _t(0) + timedelta(minutes=10 * int(rng.integers(50)))
        rows.append((f"u{rng.integers(8)}", f"i{rng.integers(30)}", at, str(rng.choice([C.CLICK, C.PURCHASE])), None))
    return _frame(rows).unique(subset=_KEYS + [C.IMPRESSION_ID], keep="first", maintain_order=True)


def _unit_starts(rows: list[dict]) -> list[datetime]:
    """Start time of each row's unit, by a plain loop."""
    def unit(r: dict) -> tuple:
        return (r[C.USER_ID], "imp", r[C.IMPRESSION_ID]) if r[C.IMPRESSION_ID] is not None else (
            r[C.USER_ID], "event", r[C.ITEM_ID], r[C.EVENT], r[C.TS])
    start: dict[tuple, datetime] = {}
    for r in rows:
        start[unit(r)] = min(start.get(unit(r), r[C.TS]), r[C.TS])
    return [start[unit(r)] for r in rows]


@pytest.mark.parametrize(("valid", "test"), [(0.25, 0.25), (0.1, 0.3), (0.0, 0.5)])
def test_global_split_matches_a_naive_reference(valid, test):
    events = _random_log(seed=1)
    out = temporal_split(events, SplitConfig(valid=valid, test=test)).collect()
    rows = out.to_dicts()
    starts = _unit_starts(rows)
    distinct = sorted(set(starts))
    cut_valid = distinct[math.ceil((1 - valid - test) * (len(distinct) - 1))]
    cut_test = distinct[math.ceil((1 - test) * (len(distinct) - 1))]
    expected = [C.TEST if s >= cut_test else C.VALID if s >= cut_valid else C.TRAIN for s in starts]
    assert out[C.SPLIT].to_list() == expected
    # leak-free: no train unit starts at or after the first cut
    assert max(s for s, r in zip(starts, rows, strict=True) if r[C.SPLIT] == C.TRAIN) < cut_valid
    assert {C.TRAIN, C.TEST} <= set(expected)


@pytest.mark.parametrize(("valid", "test"), [(0.25, 0.25), (0.1, 0.2), (0.0, 0.5)])
def test_per_user_split_matches_a_naive_reference(valid, test):
    events = _random_log(seed=2)
    out = temporal_split(events, SplitConfig(mode="per-user", valid=valid, test=test)).collect()
    rows = out.to_dicts()
    starts = _unit_starts(rows)
    units: dict[str, dict[tuple, tuple[datetime, str]]] = {}
    for r, s in zip(rows, starts, strict=True):
        key = r[C.IMPRESSION_ID] or (r[C.ITEM_ID], r[C.EVENT], r[C.TS])
        seen = units.setdefault(r[C.USER_ID], {}).setdefault(key, (s, r[C.SPLIT]))
        assert seen == (s, r[C.SPLIT]), "rows of one unit carry different labels"
    for user, by_unit in units.items():
        n = len(by_unit)
        labels = [label for _, label in sorted(by_unit.values(), key=lambda v: v[0])]
        n_test, n_valid = math.floor(n * test), math.floor(n * valid)
        assert labels.count(C.TEST) == n_test, user
        assert labels.count(C.VALID) == n_valid, user
        # each user's windows follow each other in time: train, then valid, then test
        start_of = {label: [s for s, lab in by_unit.values() if lab == label] for label in (C.TRAIN, C.VALID, C.TEST)}
        if start_of[C.VALID]:
            assert max(start_of[C.TRAIN]) <= min(start_of[C.VALID]), user
        if start_of[C.TEST]:
            assert max(start_of[C.TRAIN] + start_of[C.VALID]) <= min(start_of[C.TEST]), user
    assert not out[C.IS_COLD_USER].any()  # valid + test < 1 leaves every user at least one train unit


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "weekly"}, r"Invalid split mode 'weekly'\. Must be one of global, per-user"),
    ({"valid": -0.1}, r"0 <= valid, 0 < test and valid \+ test < 1; got valid=-0\.1, test=0\.1"),
    ({"test": 0.0}, r"got valid=0\.1, test=0\.0"),
    ({"test": 1.0}, r"got valid=0\.1, test=1\.0"),
    ({"valid": 0.5, "test": 0.5}, r"valid \+ test < 1; got valid=0\.5, test=0\.5"),
    ({"mode": "per-user", "valid_start": _t(1), "test_start": _t(2)}, r"cut dates of the global mode"),
    ({"valid_start": _t(1)}, r"give both valid_start and test_start"),
    ({"test_start": _t(1)}, r"give both valid_start and test_start"),
    ({"valid_start": _t(2), "test_start": _t(1)}, r"valid_start <= test_start"),
    ({"mode": "per-user", "seed": 1}, r"seed draws the new items of the items mode"),
    ({"mode": "items", "valid_start": _t(1), "test_start": _t(2)}, r"cut dates of the global mode"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitConfig(**kwargs)


def test_describe_records_the_split_without_unset_dates():
    assert SplitConfig().describe() == {"mode": "global", "valid": 0.1, "test": 0.1}
    assert SplitConfig(mode="per-user", valid=0.1, test=0.2).describe() == {
        "mode": "per-user", "valid": 0.1, "test": 0.2}
    assert SplitConfig(mode="items", test=0.2, seed=3).describe() == {
        "mode": "items", "valid": 0.1, "test": 0.2, "seed": 3}
    described = _DATES_CFG.describe()
    assert described == {"mode": "global", "valid": 0.1, "test": 0.1,
                         "valid_start": "2024-01-01T05:30:00", "test_start": "2024-01-01T08:00:00"}
    assert json.loads(json.dumps(described)) == described
