"""The baseline models of ``recsys evaluate --baselines`` and their small tuning grids.

The grids are chosen on the valid window (``training.fit_models``): EASE's L2, LightFM's
epochs, ALS's factors, item-kNN's neighbourhood. They are deliberately small so a baseline run
on MovieLens stays within minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Sequence

from training.fit_als import ALSConfig, ALSRecommender
from training.fit_baselines import (
    EASEConfig,
    EASERecommender,
    ItemKNNConfig,
    ItemKNNRecommender,
    PopularityConfig,
    PopularityRecommender,
    RandomRecommender,
)
from training.fit_lightfm import LightFMConfig, LightFMRecommender
from training.fit_models import ModelSpec

__all__ = ["BASELINES", "baseline_specs"]

BASELINES = ("random", "popularity", "popularity_recent", "itemknn", "lightfm", "ease", "als")


def baseline_specs(names: Sequence[str] = BASELINES, *, num_threads: int = 1) -> list[ModelSpec]:
    """Model specs for the named baselines, in the given order.

    Args:
        names: a subset of :data:`BASELINES`.
        num_threads: threads of LightFM and ALS (1 makes them repeatable).

    Raises:
        ValueError: an unknown name (the message lists the allowed ones).
    """
    specs = {
        "random": ModelSpec("random", lambda _: RandomRecommender()),
        "popularity": ModelSpec("popularity", lambda _: PopularityRecommender(PopularityConfig("all"))),
        "popularity_recent": ModelSpec("popularity_recent",
                                       lambda _: PopularityRecommender(PopularityConfig("recent"))),
        "itemknn": ModelSpec("itemknn", lambda n: ItemKNNRecommender(ItemKNNConfig(neighbours=n)), (50, 200)),
        "lightfm": ModelSpec("lightfm", lambda e: LightFMRecommender(LightFMConfig(epochs=e, num_threads=num_threads)),
                             (5, 15, 30)),
        "ease": ModelSpec("ease", lambda l2: EASERecommender(EASEConfig(l2=l2)), (100.0, 500.0, 2000.0)),
        "als": ModelSpec("als", lambda f: ALSRecommender(ALSConfig(factors=f, num_threads=num_threads)), (32, 64, 128)),
    }
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"Invalid baseline(s) {', '.join(map(repr, unknown))}. Must be among {', '.join(BASELINES)}")
    return [specs[n] for n in names]
