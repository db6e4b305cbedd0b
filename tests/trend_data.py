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


def write_trend_data(folder: Path, *, n_users: int = 150, n_items: int = 160, days: int = 90, half_life: float = 5.0,
                     seed: int = 0) -> Path:
    """Write ``items.parquet`` and ``interactions.parquet`` (contract schemas) into ``folder``."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)[:6]
    topic = rng.integers(len(names), size=n_items)
    published = rng.uniform(-20, days, size=n_items)
    rows = []
    for i, t in enumerate(topic):
        category, nouns, adjs = TOPICS[names[t]]
        picked = rng.choice(len(nouns), size=3, replace=False)
        title = f"{adjs[rng.integers(len(adjs))].capitalize()} {nouns[picked[0]].title()}"
        description = f"A guide to {nouns[picked[1]]} and {nouns[picked[2]]}."
        when = START + timedelta(days=float(published[i]))
        rows.append((f"i{i:04d}", title, description, category, [names[t]], when))
    items = pl.DataFrame(rows, schema=C.ITEM_SCHEMA, orient="row")
    favourite = rng.integers(len(names), size=n_users)
    events = []
    for u in range(n_users):
        for day in np.flatnonzero(rng.random(days) < 0.35):
            live = np.flatnonzero(published <= day)
            taste = np.where(topic[live] == favourite[u], 1.0, 0.05)
            weight = taste * np.exp(-(day - published[live]) / half_life)
            chosen = rng.choice(live, size=min(len(live), 1 + int(rng.random() < 0.5)), replace=False,
                                p=weight / weight.sum())
            for k, item in enumerate(chosen):
                when = START + timedelta(days=float(day), seconds=int(rng.integers(3600, 80000)) + k)
                events.append((f"u{u:04d}", f"i{item:04d}", when, C.CLICK, None, None, False))
    interactions = pl.DataFrame(events, schema=C.INTERACTION_SCHEMA, orient="row")
    folder.mkdir(parents=True, exist_ok=True)
    items.write_parquet(folder / C.ITEMS_FILE)
    interactions.sort(C.TS, C.USER_ID).write_parquet(folder / C.INTERACTIONS_FILE)
    return folder
