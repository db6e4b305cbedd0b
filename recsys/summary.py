"""A one-screen summary of a validated dataset, printed by ``recsys data validate`` and the demo."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from recsys import contract as C
from recsys.io import Dataset

__all__ = ["DatasetSummary", "summarize"]


@dataclass(frozen=True)
class DatasetSummary:
    """Headline counts of a dataset; ``render`` gives the terminal text."""

    users: int
    items: int
    interactions: int
    events: dict[str, int]
    first: object
    last: object
    share_with_description: float
    items_never_seen: int
    impressions: int
    median_events_per_user: float

    def render(self) -> str:
        rows = [
            ("users", f"{self.users:,}"),
            ("items", f"{self.items:,}"),
            ("interactions", f"{self.interactions:,}"),
            *((f"  {name}", f"{n:,}") for name, n in self.events.items()),
            ("impression groups", f"{self.impressions:,}"),
            ("time range", f"{self.first} .. {self.last}"),
            ("items with a description", f"{self.share_with_description:.1%}"),
            ("items never interacted with", f"{self.items_never_seen:,} "
                                            f"({self.items_never_seen / max(self.items, 1):.1%})"),
            ("median events per user", f"{self.median_events_per_user:g}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def summarize(data: Dataset) -> DatasetSummary:
    """Count users, items, events by type, the time range and catalogue coverage."""
    inter = data.interactions
    events = inter.group_by(C.EVENT).len().sort("len", descending=True)
    seen = inter.select(pl.col(C.ITEM_ID).unique())
    per_user = inter.group_by(C.USER_ID).len()["len"]
    return DatasetSummary(
        users=inter[C.USER_ID].n_unique(),
        items=data.items.height,
        interactions=inter.height,
        events=dict(zip(events[C.EVENT].to_list(), events["len"].to_list(), strict=True)),
        first=inter[C.TS].min(),
        last=inter[C.TS].max(),
        share_with_description=float(data.items[C.DESCRIPTION].is_not_null().mean() or 0.0),
        items_never_seen=data.items.join(seen, on=C.ITEM_ID, how="anti").height,
        impressions=inter[C.IMPRESSION_ID].drop_nulls().n_unique(),
        median_events_per_user=float(per_user.median() or 0.0),
    )
