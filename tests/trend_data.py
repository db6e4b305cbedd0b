"""A small log where what is clicked next depends on taste (topic) *and* freshness.

Each user has a favourite topic; each day they may click one or two items, drawn with weight
``taste x exp(-age / half_life)``: items are clicked mostly in their first days, as news,
releases and trends are. Items keep being published, so the test window is full of new items.

Neither tower alone can see both signals: LightFM learns taste but not time (it keeps
recommending last month's hits), the text tower learns the topic but not which of its items are
fresh. The ranking stage's behaviour features (recent popularity, item age) and its candidates
from both towers are what this data rewards, which is the product's claim.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from recsys import contract as C
from recsys.synthetic import TOPICS

START = datetime(2024, 1, 1)


def _catalogue(rng: np.random.Generator, n_items: int, first_day: float, last_day: float
               ) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    names = list(TOPICS)[:6]
    topic = rng.integers(len(names), size=n_items)
    published = rng.uniform(first_day, last_day, size=n_items)
    rows = []
    for i, t in enumerate(topic):
        category, nouns, adjs = TOPICS[names[t]]
        picked = rng.choice(len(nouns), size=3, replace=False)
        title = f"{adjs[rng.integers(len(adjs))].capitalize()} {nouns[picked[0]].title()}"
        description = f"A guide to {nouns[picked[1]]} and {nouns[picked[2]]}."
        when = START + timedelta(days=float(published[i]))
        rows.append((f"i{i:04d}", title, description, category, [names[t]], when))
    return pl.DataFrame(rows, schema=C.ITEM_SCHEMA, orient="row"), topic, published


def _clicks(rng: np.random.Generator, favourite: np.ndarray, topic: np.ndarray, published: np.ndarray,
            days: range, half_life: float) -> pl.DataFrame:
    events = []
    for u in range(len(favourite)):
        for day in np.asarray(days)[rng.random(len(days)) < 0.35]:
            live = np.flatnonzero(published <= day)
            taste = np.where(topic[live] == favourite[u], 1.0, 0.05)
            weight = taste * np.exp(-(day - published[live]) / half_life)
            chosen = rng.choice(live, size=min(len(live), 1 + int(rng.random() < 0.5)), replace=False,
                                p=weight / weight.sum())
            for k, item in enumerate(chosen):
                when = START + timedelta(days=float(day), seconds=int(rng.integers(3600, 80000)) + k)
                events.append((f"u{u:04d}", f"i{item:04d}", when, C.CLICK, None, None, False))
    return pl.DataFrame(events, schema=C.INTERACTION_SCHEMA, orient="row").sort(C.TS, C.USER_ID)


def _write(folder: Path, items: pl.DataFrame, interactions: pl.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    items.write_parquet(folder / C.ITEMS_FILE)
    interactions.write_parquet(folder / C.INTERACTIONS_FILE)
    return folder


def write_trend_data(folder: Path, *, n_users: int = 150, n_items: int = 160, days: int = 90, half_life: float = 5.0,
                     seed: int = 0) -> Path:
    """Write ``items.parquet`` and ``interactions.parquet`` (contract schemas) into ``folder``."""
    rng = np.random.default_rng(seed)
    items, topic, published = _catalogue(rng, n_items, -20, days)
    favourite = rng.integers(6, size=n_users)
    return _write(folder, items, _clicks(rng, favourite, topic, published, range(days), half_life))


def write_drift_windows(root: Path, *, n_users: int = 120, n_items: int = 240, days: int = 45, shift: int = 3,
                        half_life: float = 5.0, seed: int = 0) -> tuple[Path, Path]:
    """Two consecutive windows (``root/before``, ``root/after``) over one catalogue; in the second every
    user's favourite topic moves ``shift`` topics on (a planted drift). Both folders list every item."""
    rng = np.random.default_rng(seed)
    items, topic, published = _catalogue(rng, n_items, -20, 2 * days)
    favourite = rng.integers(6, size=n_users)
    before = _clicks(rng, favourite, topic, published, range(days), half_life)
    after = _clicks(rng, (favourite + shift) % 6, topic, published, range(days, 2 * days), half_life)
    return _write(root / "before", items, before), _write(root / "after", items, after)
