"""Train / valid / test split, pure polars: in time, or by item for the new-item protocol.

Three modes (``SplitConfig.mode``), recorded with every result through ``SplitConfig.describe``:

* ``global``: cut points in time (fractions of the event log, or explicit dates). Leak-free:
  nothing in train is later than the first cut. The default for large logs.
* ``per-user``: each user's last ``test`` fraction of events is test, the ``valid`` fraction
  before it valid, the rest train. Small public sets need it: on MovieLens latest-small a
  global 80/10/10 cut leaves 18 test users with train history, a per-user 70/10/20 cut ~590.
* ``items``: the new-item (item cold-start) protocol of CTR, CDL and DropoutNet. A seeded share
  (``test``) of the items with events becomes new: every event on them is test; another share
  (``valid``) is valid; every other event is train. So no test item has a train event and only
  its text can place it. Not temporal (a new item's events may predate train events), and an
  impression is cut by item: its shown new items are test, the rest train.

The time modes keep an impression (rows sharing ``impression_id``) whole on one side. Every mode
marks cold items and cold users (no train interactions) and is deterministic: ties in time are
broken by impression id, item id and event, never by row order; the items mode draws its items
from the sorted ids with ``SplitConfig.seed``.

This module imports only ``recsys.contract`` (the column names, a leaf module), so the
``features`` package stays independent of the runtime library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import polars as pl

from recsys import contract as C

__all__ = ["SplitConfig", "temporal_split", "split_summary", "SPLIT_MODES"]

SPLIT_MODES = ("global", "per-user", "items")
_UNIT_TS = "_split_unit_ts"


@dataclass(frozen=True)
class SplitConfig:
    """How interactions are cut into train, valid and test windows."""

    mode: Literal["global", "per-user", "items"] = "global"
    """``global`` (cut points in time), ``per-user`` (each user's last events) or ``items`` (new items)."""
    valid: float = 0.1
    """Fraction of the log (global), of each user's events (per-user) or of the items with events
    (items) in the valid window."""
    test: float = 0.1
    """Fraction of the log (global), of each user's events (per-user) or of the items with events
    (items) in the test window."""
    valid_start: datetime | None = None
    """Global mode only: first instant of the valid window (overrides ``valid``)."""
    test_start: datetime | None = None
    """Global mode only: first instant of the test window (overrides ``test``)."""
    seed: int | None = None
    """Items mode only: seed of the draw of new items (None: 0; the evaluation passes ``EvalConfig.seed``)."""

    def __post_init__(self) -> None:
        if self.mode not in SPLIT_MODES:
            raise ValueError(f"Invalid split mode {self.mode!r}. Must be one of {', '.join(SPLIT_MODES)}")
        if not (0 <= self.valid < 1 and 0 < self.test < 1 and self.valid + self.test < 1):
            raise ValueError(f"split fractions need 0 <= valid, 0 < test and valid + test < 1; "
                             f"got valid={self.valid}, test={self.test}")
        dates = (self.valid_start, self.test_start)
        if any(d is not None for d in dates):
            if self.mode != "global":
                raise ValueError("valid_start/test_start are cut dates of the global mode; "
                                 "drop them or use mode='global'")
            if None in dates or self.valid_start > self.test_start:  # type: ignore[operator]
                raise ValueError("give both valid_start and test_start, with valid_start <= test_start")
        if self.seed is not None and self.mode != "items":
            raise ValueError("seed draws the new items of the items mode; drop it or use mode='items'")

    def describe(self) -> dict[str, object]:
        """The split as recorded with results (the ``split`` field of benchmark JSON)."""
        return {k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in asdict(self).items() if v is not None}


def _with_units(events: pl.LazyFrame) -> pl.LazyFrame:
    """The time of each row's unit: an impression's first event (kept whole), else the row's own time.

    A unit is an impression (its id), else one (item, event) at one time; no string key is built
    per row: at 20M events the concatenated unit keys and the string-keyed window behind them
    took most of the split's 6.6 GB.
    """
    first_shown = pl.col(C.TS).min().over(C.USER_ID, C.IMPRESSION_ID)
    return events.with_columns(
        pl.when(pl.col(C.IMPRESSION_ID).is_not_null()).then(first_shown).otherwise(pl.col(C.TS)).alias(_UNIT_TS))


def _global_labels(units: pl.LazyFrame, cfg: SplitConfig) -> pl.LazyFrame:
    if cfg.valid_start is not None and cfg.test_start is not None:
        cut_valid, cut_test = pl.lit(cfg.valid_start), pl.lit(cfg.test_start)
    else:
        times = pl.col(_UNIT_TS).unique()
        cut_valid = times.quantile(1 - cfg.valid - cfg.test, interpolation="higher")
        cut_test = times.quantile(1 - cfg.test, interpolation="higher")
        cuts = units.select(cut_valid.alias("v"), cut_test.alias("t")).collect()
        cut_valid, cut_test = pl.lit(cuts["v"][0]), pl.lit(cuts["t"][0])
    return units.with_columns(
        pl.when(pl.col(_UNIT_TS) >= cut_test).then(pl.lit(C.TEST))
        .when(pl.col(_UNIT_TS) >= cut_valid).then(pl.lit(C.VALID))
        .otherwise(pl.lit(C.TRAIN)).alias(C.SPLIT))


def _per_user_labels(units: pl.LazyFrame, cfg: SplitConfig) -> pl.LazyFrame:
    # lone events before impressions at the same time (nulls first), then by item and event
    ordered = units.sort(C.USER_ID, _UNIT_TS, C.IMPRESSION_ID, C.ITEM_ID, C.EVENT, nulls_last=False)
    lone = pl.col(C.IMPRESSION_ID).is_null()
    # evaluated within each user (the window below): a user's first row has nothing before it, a unit of its own
    changed = [pl.col(c).ne_missing(pl.col(c).shift(1)) for c in (_UNIT_TS, C.IMPRESSION_ID)]
    new_unit = pl.any_horizontal(*changed, lone & pl.any_horizontal(
        *(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in (C.ITEM_ID, C.EVENT))))
    position = new_unit.cast(pl.Int64).cum_sum().over(C.USER_ID) - 1
    ordered = ordered.with_columns(position.alias("_pos"))
    n = pl.col("_pos").max().over(C.USER_ID) + 1
    n_test = (n * cfg.test).floor()
    n_valid = (n * cfg.valid).floor()
    return ordered.with_columns(
        pl.when(pl.col("_pos") >= n - n_test).then(pl.lit(C.TEST))
        .when(pl.col("_pos") >= n - n_test - n_valid).then(pl.lit(C.VALID))
        .otherwise(pl.lit(C.TRAIN)).alias(C.SPLIT)).drop("_pos")


def _item_labels(units: pl.LazyFrame, cfg: SplitConfig) -> pl.LazyFrame:
    """Every event of a drawn test item is test, of a drawn valid item valid, the rest train.

    The draw permutes the sorted ids of the items with events, so it depends on the seed and the
    set of items only; shares are rounded, with at least one test item.
    """
    ids = units.select(pl.col(C.ITEM_ID).unique().sort()).collect()[C.ITEM_ID]
    n_test = max(1, round(len(ids) * cfg.test))
    n_valid = min(round(len(ids) * cfg.valid), len(ids) - n_test)
    drawn = ids.gather(np.random.default_rng(cfg.seed or 0).permutation(len(ids)))
    window = pl.DataFrame({C.ITEM_ID: drawn, C.SPLIT: [C.TEST] * n_test + [C.VALID] * n_valid
                           + [C.TRAIN] * (len(ids) - n_test - n_valid)}).lazy()
    return units.join(window, on=C.ITEM_ID, how="left", maintain_order="left")


def temporal_split(events: pl.LazyFrame | pl.DataFrame, config: SplitConfig = SplitConfig()) -> pl.LazyFrame:
    """Label every interaction train / valid / test and mark cold items and users.

    Named for its time modes; ``config.mode == "items"`` cuts by item instead (the new-item protocol).

    Args:
        events: interactions in the contract schema (``user_id, item_id, timestamp, event,
            impression_id``).
        config: the split mode and its fractions, dates or seed.

    Returns:
        The interactions with ``split`` (``train``/``valid``/``test``), ``is_cold_item`` (the
        item has no train interaction) and ``is_cold_user`` (the user has none), sorted by
        time, then user, item, event and impression.
    """
    units = _with_units(events.lazy())
    label = {"global": _global_labels, "per-user": _per_user_labels, "items": _item_labels}[config.mode]
    labelled = label(units, config)
    in_train = pl.col(C.SPLIT) == C.TRAIN
    return labelled.with_columns(
        (~in_train.any().over(C.ITEM_ID)).alias(C.IS_COLD_ITEM),
        (~in_train.any().over(C.USER_ID)).alias(C.IS_COLD_USER),
    ).drop(_UNIT_TS).sort(C.TS, C.USER_ID, C.ITEM_ID, C.EVENT, C.IMPRESSION_ID, nulls_last=True,
                                 maintain_order=True)


def split_summary(split: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Per window: rows, users, items, positives, cold items, and users with train history.

    Args:
        split: output of :func:`temporal_split`.

    Returns:
        One row per window (``train``, ``valid``, ``test``), in that order; an empty window
        has zero counts and null times.
    """
    positive = pl.col(C.EVENT) != C.IMPRESSION
    windows = pl.LazyFrame({C.SPLIT: [C.TRAIN, C.VALID, C.TEST]})
    stats = split.lazy().group_by(C.SPLIT).agg(
        pl.len().alias("rows"),
        pl.col(C.USER_ID).n_unique().alias("users"),
        pl.col(C.ITEM_ID).n_unique().alias("items"),
        positive.sum().alias("positives"),
        pl.col(C.ITEM_ID).filter(pl.col(C.IS_COLD_ITEM)).n_unique().alias("cold_items"),
        pl.col(C.USER_ID).filter(~pl.col(C.IS_COLD_USER)).n_unique().alias("users_with_train_history"),
        pl.col(C.TS).min().alias("first"),
        pl.col(C.TS).max().alias("last"),
    )
    counts = ["rows", "users", "items", "positives", "cold_items", "users_with_train_history"]
    return windows.join(stats, on=C.SPLIT, how="left", maintain_order="left").with_columns(
        pl.col(counts).fill_null(0)).collect()
