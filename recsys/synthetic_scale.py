"""A synthetic log of any size, written in chunks of users: the scale benchmark's data.

``recsys.synthetic`` simulates impressions session by session in Python, which is right for a
demo of 50,000 rows and days at 20 million. This draws a log of clicks and purchases with the
same story, vectorised a chunk of users at a time, so memory is bounded by the chunk and not by
the log:

* **Text carries the signal.** Each item belongs to one topic of :data:`recsys.synthetic.TOPICS`
  and its title and description are written from that topic's words; each user has a favourite
  topic (sometimes a second one), and ``taste`` of their events fall in them. Categories are
  coarse (four topics share one), so reading the text tells more than reading the category.
* **Popularity is skewed**: within what a user may pick, an item is drawn with weight
  ``rank ** -zipf`` (a seeded order, so popular items are spread over topics).
* **New items arrive over time**: ``new_item_share`` of the items are published during the log,
  and ``fresh`` of the events go to an item of the user's topic published in the last
  ``fresh_days`` (news, releases, trends). No event is on an item before its publication.
* **Users differ in activity**: events per user follow a log-normal spread (every user has at
  least one), and each user's events are spread over the whole log.

The interactions file is written row group by row group (one per chunk of users) into a staging
folder and renamed into place with the items (``recsys.io.write_dataset_folder``), so a killed
run leaves the old dataset or the new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys import contract as C
from recsys.synthetic import TOPICS, item_table

__all__ = ["ScaleConfig", "scale_items", "scale_event_chunks", "write_scale_dataset"]

DAY = 86_400.0


@dataclass(frozen=True)
class ScaleConfig:
    """Sizes, shape and seed of a scale log; the same config always gives the same data."""

    n_users: int
    """Users; every one has at least one event."""
    n_items: int
    """Catalogue items."""
    n_events: int
    """Interactions in all (at least ``n_users``)."""
    days: int = 90
    """Length of the log in days."""
    new_item_share: float = 0.2
    """Share of items published during the log rather than before it."""
    taste: float = 0.7
    """Share of events on an item of the user's favourite topics (drawn by popularity)."""
    fresh: float = 0.15
    """Share of events on an item of the user's topic published in the last ``fresh_days``."""
    fresh_days: float = 7.0
    """How new an item is for the ``fresh`` events."""
    zipf: float = 1.0
    """Popularity skew: weight ``rank ** -zipf``."""
    purchase_share: float = 0.1
    """Share of events that are purchases (the rest are clicks)."""
    chunk_users: int = 50_000
    """Users drawn and written at a time: the memory bound (about 100 bytes an event of a chunk)."""
    start: datetime = datetime(2024, 1, 1)
    """First instant of the log."""
    seed: int = 0
    """Random seed."""

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_events", "days", "chunk_users"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ScaleConfig.{name} must be a whole number >= 1; got {value!r}")
        if self.n_events < self.n_users:
            raise ValueError(f"ScaleConfig.n_events ({self.n_events:,}) must be at least n_users "
                             f"({self.n_users:,}): every user has an event")
        for name in ("new_item_share", "taste", "fresh", "purchase_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"ScaleConfig.{name} must be in [0, 1); got {getattr(self, name)}")
        if self.taste + self.fresh > 1:
            raise ValueError(f"ScaleConfig.taste + fresh must be at most 1; got {self.taste} + {self.fresh}")
        if self.fresh_days <= 0 or self.zipf < 0:
            raise ValueError("ScaleConfig.fresh_days must be > 0 and zipf >= 0")


@dataclass(frozen=True)
class _Catalogue:
    """What event drawing needs of the items, per topic sorted by publication time."""

    topic: np.ndarray
    published: np.ndarray  # float seconds after start
    by_topic: list[np.ndarray]  # item indices of each topic, by publication time
    cumulative: list[np.ndarray]  # running popularity weight along by_topic
    everything: np.ndarray  # every item by publication time
    everything_cumulative: np.ndarray


def scale_items(config: ScaleConfig) -> tuple[pl.DataFrame, _Catalogue]:
    """The catalogue (contract schema) and the arrays events are drawn from."""
    rng = np.random.default_rng([config.seed, 0])
    n = config.n_items
    topic = rng.integers(len(TOPICS), size=n)
    is_new = rng.random(n) < config.new_item_share
    published = np.where(is_new, rng.uniform(0.0, 0.95, n) * config.days * DAY, -rng.uniform(1, 365, n) * DAY)
    weight = np.empty(n)
    weight[rng.permutation(n)] = np.arange(1, n + 1, dtype=np.float64) ** -config.zipf
    items = item_table(topic, published, config.start, rng, id_width=max(5, len(str(n - 1))))
    order = np.argsort(published, kind="stable")
    by_topic = [order[topic[order] == t] for t in range(len(TOPICS))]
    return items, _Catalogue(topic, published, by_topic, [np.cumsum(weight[o]) for o in by_topic], order,
                             np.cumsum(weight[order]))


def _by_popularity(rng: np.random.Generator, members: np.ndarray, cumulative: np.ndarray, published: np.ndarray,
                   when: np.ndarray) -> np.ndarray:
    """One item per event among ``members`` published by ``when``, by popularity; -1 where none is out yet."""
    out = np.full(len(when), -1, dtype=np.int64)
    live = np.searchsorted(published[members], when, side="right")  # members are sorted by publication
    ok = live > 0
    if len(members) and ok.any():
        draw = rng.random(int(ok.sum())) * cumulative[live[ok] - 1]
        out[ok] = members[np.minimum(np.searchsorted(cumulative, draw, side="right"), live[ok] - 1)]
    return out


def _fresh(rng: np.random.Generator, members: np.ndarray, published: np.ndarray, when: np.ndarray,
           window: float) -> np.ndarray:
    """One item per event among ``members`` published in the ``window`` seconds before ``when``, uniformly."""
    times = published[members]
    first = np.searchsorted(times, when - window, side="right")
    count = np.searchsorted(times, when, side="right") - first
    out = np.full(len(when), -1, dtype=np.int64)
    ok = count > 0
    out[ok] = members[first[ok] + (rng.random(int(ok.sum())) * count[ok]).astype(np.int64)]
    return out


def _events_per_user(config: ScaleConfig) -> np.ndarray:
    """int64 [n_users] summing to ``n_events``: one each, the rest spread log-normally by activity."""
    rng = np.random.default_rng([config.seed, 1])
    activity = rng.lognormal(0.0, 1.0, config.n_users)
    return 1 + rng.multinomial(config.n_events - config.n_users, activity / activity.sum())


def _ids(column: str, prefix: str, width: int) -> pl.Expr:
    """``u00042``-style string ids of an integer column."""
    return pl.concat_str(pl.lit(prefix), pl.col(column).cast(pl.String).str.zfill(width))


def scale_event_chunks(config: ScaleConfig, catalogue: _Catalogue) -> Iterator[pl.DataFrame]:
    """The interactions (contract schema), one frame per ``chunk_users`` users."""
    counts = _events_per_user(config)
    n_topics = len(TOPICS)
    width = max(5, len(str(config.n_users - 1)))
    item_width = max(5, len(str(config.n_items - 1)))
    for chunk, lo in enumerate(range(0, config.n_users, config.chunk_users)):
        rng = np.random.default_rng([config.seed, 2, chunk])
        users = np.arange(lo, min(lo + config.chunk_users, config.n_users))
        favourite = rng.integers(n_topics, size=len(users))
        second = np.where(rng.random(len(users)) < 0.5, rng.integers(n_topics, size=len(users)), favourite)
        user = np.repeat(users, counts[users])
        row = user - lo
        when = rng.uniform(0.0, config.days * DAY, len(user))
        kind = rng.random(len(user))
        topic = np.where(rng.random(len(user)) < 0.7, favourite[row], second[row])
        item = np.full(len(user), -1, dtype=np.int64)
        for t in range(n_topics):
            mine = topic == t
            fresh = mine & (kind < config.fresh)
            item[fresh] = _fresh(rng, catalogue.by_topic[t], catalogue.published, when[fresh],
                                 config.fresh_days * DAY)
            tasteful = mine & (item < 0) & (kind < config.fresh + config.taste)  # and fresh ones with nothing new
            item[tasteful] = _by_popularity(rng, catalogue.by_topic[t], catalogue.cumulative[t],
                                            catalogue.published, when[tasteful])
        rest = item < 0  # the popular items of the whole catalogue (and a topic with nothing out yet)
        item[rest] = _by_popularity(rng, catalogue.everything, catalogue.everything_cumulative, catalogue.published,
                                    when[rest])
        early = item < 0  # nothing published yet at all: move the event to the first publication
        if early.any():
            item[early] = catalogue.everything[0]
            when[early] = np.maximum(when[early], catalogue.published[catalogue.everything[0]])
        purchase = rng.random(len(user)) < config.purchase_share
        stamps = np.datetime64(config.start, "us") + (when * 1e6).astype("timedelta64[us]")
        frame = pl.DataFrame({"u": user, "i": item, C.TS: stamps, C.EVENT: np.where(purchase, C.PURCHASE, C.CLICK)})
        yield frame.select(_ids("u", "u", width).alias(C.USER_ID), _ids("i", "i", item_width).alias(C.ITEM_ID),
                           pl.col(C.TS).cast(C.DATETIME), C.EVENT)


def write_scale_dataset(out: Path, config: ScaleConfig, progress=None) -> Path:
    """Write ``items.parquet`` and ``interactions.parquet`` (one row group per chunk of users) into ``out``.

    Args:
        out: the dataset folder (replaced as a whole, never torn).
        config: sizes and seed.
        progress: called with the users written so far after each chunk (a progress bar's update).
    """
    import pyarrow.parquet as pq

    from recsys.io import write_dataset_folder

    items, catalogue = scale_items(config)

    def interactions(path: Path) -> None:
        writer = None
        try:
            for chunk in scale_event_chunks(config, catalogue):
                table = chunk.to_arrow()
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                if progress is not None:
                    progress(chunk[C.USER_ID].n_unique())
        finally:
            if writer is not None:
                writer.close()

    return write_dataset_folder({C.ITEMS_FILE: items, C.INTERACTIONS_FILE: interactions}, out)
