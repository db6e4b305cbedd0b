"""The baseline models of ``recsys evaluate --baselines`` and their small tuning grids.

The grids are chosen on the valid window (``training.fit_models``): EASE's L2, LightFM's
epochs, ALS's factors, item-kNN's neighbourhood. They are deliberately small so a baseline run
on MovieLens stays within minutes on two cores.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace

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
from training.fit_tfidf import TfidfConfig, TfidfRecommender

__all__ = ["BASELINES", "DEFAULT_BASELINES", "baseline_specs", "ease_bytes", "ease_fits", "fitting_baselines",
           "memory_budget", "memory_bytes"]

logger = logging.getLogger(__name__)

LIGHTFM_EPOCHS = (5, 15, 30)
"""Epoch counts of the LightFM baseline's grid (the recipe gives the pipeline's LightFM the same on small logs)."""
LIGHTFM_TEXT_TERMS = 4000
"""Vocabulary of ``lightfm_text``: the most frequent TF-IDF terms of title and description, its only item features."""
BASELINES = ("random", "popularity", "popularity_recent", "itemknn", "lightfm", "ease", "als", "tfidf", "lightfm_text")
DEFAULT_BASELINES = ("popularity", "itemknn", "lightfm", "ease", "als")
"""What every ``recsys train`` compares with (where it fits in memory): a user sees whether the pipeline
was worth it against the models they would otherwise build. ``tfidf`` and ``lightfm_text`` are the text peers
of the new-item protocol (``--split-mode items``), asked for by name."""
UNSERVABLE = ("tfidf",)
"""Baselines whose scorer a registered model cannot carry: evaluation peers only, never the run's fallback."""
DEFAULT_MEMORY_GIB = 4.0
"""Memory a default run plans to stay within (at most half of the machine's): the product's target
for logs of up to ~500k events on the 2-core, 24 GiB machines it is measured on."""
EASE_SHARE = 0.75
"""EASE is left out when its peak estimate exceeds this share of the memory budget."""


def memory_bytes() -> int:
    """Physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget(memory_gb: float | None = None) -> float:
    """Bytes a run plans to stay within: ``memory_gb``, else the default capped at half of this machine."""
    if memory_gb is not None:
        return memory_gb * 2**30
    return min(DEFAULT_MEMORY_GIB * 2**30, memory_bytes() / 2)


def ease_bytes(n_items: int) -> int:
    """Peak of an EASE fit: one dense float32 [n_items, n_items] matrix being solved, and the fitted one
    of the window before it that the run still holds (``EASERecommender.fit`` solves in place)."""
    return 2 * 4 * n_items * n_items


def ease_fits(n_items: int, budget: float) -> bool:
    """Whether EASE on ``n_items`` items fits the memory budget (bytes)."""
    return ease_bytes(n_items) <= EASE_SHARE * budget


def fitting_baselines(names: Sequence[str], n_items: int, budget: float) -> tuple[tuple[str, ...], dict[str, str]]:
    """The baselines of ``names`` that fit the memory ``budget`` (bytes) on ``n_items`` items, and why others did not.

    Only EASE grows with the square of the catalogue; the others are sparse or low-rank.
    """
    kept, skipped = [], {}
    for name in names:
        if name == "ease" and not ease_fits(n_items, budget):
            skipped[name] = (f"needs about {ease_bytes(n_items) / 2**30:.1f} GiB for {n_items:,} items, more than "
                             f"{EASE_SHARE:.0%} of the {budget / 2**30:.1f} GiB memory budget (--set memory_gb=...)")
            logger.warning("baseline %s left out: %s", name, skipped[name])
        else:
            kept.append(name)
    return tuple(kept), skipped


def baseline_specs(names: Sequence[str] = BASELINES, *, num_threads: int = 1, text_template: str | None = None,
                   lightfm_epochs: Sequence[int] = LIGHTFM_EPOCHS) -> list[ModelSpec]:
    """Model specs for the named baselines, in the given order.

    Args:
        names: a subset of :data:`BASELINES`.
        num_threads: threads of LightFM and ALS (1 makes them repeatable).
        text_template: the item text ``tfidf`` reads: the run's text tower template (None: the tower's default).
        lightfm_epochs: the epoch grid of ``lightfm`` and ``lightfm_text`` (increasing; one training scored at each).

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
                             tuple(lightfm_epochs), grows=True),
        "ease": ModelSpec("ease", lambda l2: EASERecommender(EASEConfig(l2=l2)), (100.0, 500.0, 2000.0)),
        "als": ModelSpec("als", lambda f: ALSRecommender(ALSConfig(factors=f, num_threads=num_threads)), (32, 64, 128)),
        "tfidf": ModelSpec("tfidf", lambda _: TfidfRecommender(TfidfConfig(template=text_template))),
        "lightfm_text": ModelSpec("lightfm_text", lambda e: LightFMRecommender(LightFMConfig(
            epochs=e, num_threads=num_threads, identity=False, use_item_features=False,
            text_features=LIGHTFM_TEXT_TERMS)), tuple(lightfm_epochs), grows=True),
    }
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"Invalid baseline(s) {', '.join(map(repr, unknown))}. Must be among {', '.join(BASELINES)}")
    # every baseline is scored on the valid window, even with nothing to tune: the ranked pipeline falls back to
    # the best of them there (``training.fit_pipeline``), and the choice must not depend on the test window;
    # tfidf's scorer cannot be registered, so it is never a fallback
    return [replace(specs[n], score_valid=n not in UNSERVABLE) for n in names]
