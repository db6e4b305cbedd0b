"""Seeded synthetic catalogues and logs in which item text carries the signal.

Why generated and not downloaded: the demo and the tests must run offline, be license-clean
and be small, yet a text-aware recommender must have something to find. Each item belongs to
one of a dozen topics and its title and description are written from that topic's real
English vocabulary ("sourdough", "skillet" for cooking; "telescope", "nebula" for astronomy),
so a pretrained text encoder can tell topics apart with no training. Each user prefers one or
two topics, and the click probability rises with that affinity. Categories are coarse (four
topics share one), so a text-blind model that reads only the category knows less than one that
reads the text. Items keep being published during the log, so the later windows hold new
(cold) items that only their text can place.

The generative story, per user session: a slate of items already published is shown (an
impression, sampled with a popularity tilt), each shown item is clicked with probability
``sigmoid(-4.0 + 4.6 * affinity + 0.6 * quality)``, and a clicked item is bought with
probability ``sigmoid(-1.6 + 1.6 * affinity + 0.3 * quality)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from recsys import contract as C

__all__ = ["SyntheticConfig", "TOPICS", "generate_synthetic", "DEMO_CONFIG", "item_table"]

# topic -> (category, nouns, adjectives). Four topics share each category on purpose.
TOPICS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "cooking": (
        "Lifestyle",
        ("sourdough", "skillet", "pasta", "spices", "baking",
         "soup", "dessert", "recipes", "kitchen", "grilling"),
        ("delicious", "homemade", "savory", "rustic"),
    ),
    "gardening": (
        "Lifestyle",
        ("tomatoes", "compost", "roses", "seedlings", "pruning",
         "herbs", "greenhouse", "soil", "orchards", "perennials"),
        ("blooming", "organic", "green", "seasonal"),
    ),
    "astronomy": (
        "Science & Tech",
        ("telescope", "galaxy", "nebula", "planets", "comets",
         "orbit", "stars", "eclipse", "cosmos", "observatory"),
        ("cosmic", "stellar", "distant", "celestial"),
    ),
    "biology": (
        "Science & Tech",
        ("cells", "genetics", "evolution", "microbes", "proteins",
         "ecosystems", "DNA", "species", "fossils", "enzymes"),
        ("living", "molecular", "wild", "ancient"),
    ),
    "fitness": (
        "Lifestyle",
        ("running", "strength", "yoga", "marathon", "workout",
         "stretching", "cycling", "endurance", "muscles", "training"),
        ("strong", "athletic", "energetic", "lean"),
    ),
    "nutrition": (
        "Lifestyle",
        ("vitamins", "protein", "diet", "vegetables", "fiber",
         "hydration", "meals", "metabolism", "supplements", "grains"),
        ("healthy", "balanced", "wholesome", "fresh"),
    ),
    "finance": (
        "Arts, Travel & Money",
        ("investing", "stocks", "budget", "savings", "retirement",
         "dividends", "taxes", "portfolio", "markets", "bonds"),
        ("wealthy", "frugal", "financial", "profitable"),
    ),
    "startups": (
        "Science & Tech",
        ("founders", "venture", "pitch", "product", "growth",
         "customers", "funding", "marketing", "launch", "scaling"),
        ("disruptive", "lean", "ambitious", "agile"),
    ),
    "jazz": (
        "Arts, Travel & Money",
        ("saxophone", "trumpet", "swing", "improvisation", "bebop",
         "piano", "blues", "standards", "rhythm", "big band"),
        ("smooth", "soulful", "cool", "syncopated"),
    ),
    "classical": (
        "Arts, Travel & Money",
        ("symphony", "orchestra", "violin", "sonata", "concerto",
         "opera", "Mozart", "Beethoven", "choir", "cello"),
        ("baroque", "romantic", "timeless", "grand"),
    ),
    "travel": (
        "Arts, Travel & Money",
        ("beaches", "mountains", "passport", "islands", "hiking",
         "cities", "road trip", "hostels", "museums", "train journeys"),
        ("exotic", "scenic", "adventurous", "faraway"),
    ),
    "programming": (
        "Science & Tech",
        ("Python", "algorithms", "databases", "compilers", "debugging",
         "APIs", "open source", "testing", "software", "code"),
        ("clean", "fast", "elegant", "robust"),
    ),
}
_TITLE_TEMPLATES = (
    "The {Adj} Guide to {Noun}", "{Noun} and {Noun2}: A {Adj} Introduction", "{Adj} {Noun} for Beginners",
    "Mastering {Noun}", "A Year of {Noun} and {Noun2}", "Notes on {Adj} {Noun}", "The Art of {Noun}",
)
_DESCRIPTION_TEMPLATES = (
    "{a_adj} look at {noun}, {noun2} and {noun3}. {filler}",
    "Everything about {noun} and {noun2}, with chapters on {noun3}. {filler}",
    "{filler} Covers {noun}, {noun2} and {adj} {noun3}.",
)
_FILLERS = ("Includes practical tips and worked examples.", "Written by an award-winning author.",
            "Now in a revised second edition.", "Perfect as a gift.", "Richly illustrated throughout.",
            "Short chapters for busy readers.")


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and seed of a synthetic dataset; the same config always gives the same data."""

    n_users: int = 30
    """Number of users."""
    n_items: int = 40
    """Number of catalogue items."""
    sessions_per_user: float = 4.0
    """Mean number of sessions (impressions) per user (Poisson, at least one)."""
    slate_size: int = 5
    """Items shown per impression."""
    days: int = 120
    """Length of the log in days."""
    new_item_share: float = 0.3
    """Share of items published during the log rather than before it."""
    start: datetime = datetime(2024, 1, 1)
    """First instant of the log."""
    seed: int = 0
    """Random seed."""

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < self.slate_size or self.slate_size < 1:
            raise ValueError(f"need n_users >= 1 and n_items >= slate_size >= 1, got {self}")
        if not 0 <= self.new_item_share < 1 or self.sessions_per_user <= 0 or self.days < 1:
            raise ValueError("new_item_share must be in [0, 1), sessions_per_user > 0, days >= 1")


DEMO_CONFIG = SyntheticConfig(n_users=400, n_items=600, sessions_per_user=12, slate_size=10, days=180,
                              seed=20240101)
"""The demo dataset of ``recsys demo`` (about 50,000 impressions)."""


def _items(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    names = list(TOPICS)
    topic = rng.integers(len(names), size=cfg.n_items)
    quality = rng.normal(size=cfg.n_items)
    is_new = rng.random(cfg.n_items) < cfg.new_item_share
    offsets = np.where(is_new, rng.uniform(0.05, 0.95, cfg.n_items) * cfg.days * 86400,
                       -rng.uniform(1, 365, cfg.n_items) * 86400)
    items = item_table(topic, offsets, cfg.start, rng)
    return items, topic, np.stack([quality, offsets])


def item_table(topic: np.ndarray, offsets: np.ndarray, start: datetime, rng: np.random.Generator,
               id_width: int = 5) -> pl.DataFrame:
    """The catalogue in the contract schema: each item's title and description written from its topic's words.

    Args:
        topic: int [n_items] index into :data:`TOPICS`.
        offsets: float [n_items] publication time in seconds after ``start`` (negative: before the log).
        start: the log's first instant.
        rng: the generator the words are drawn from (consumed item by item, so a seed gives one catalogue).
        id_width: digits of the ``i00042`` item ids.
    """
    names = list(TOPICS)
    rows = []
    for i, t in enumerate(topic):
        category, nouns, adjs = TOPICS[names[t]]
        n = rng.choice(len(nouns), size=3, replace=False)
        words = {"noun": nouns[n[0]], "noun2": nouns[n[1]], "noun3": nouns[n[2]],
                 "adj": adjs[rng.integers(len(adjs))], "filler": _FILLERS[rng.integers(len(_FILLERS))]}
        words["a_adj"] = ("An " if words["adj"][0] in "aeiou" else "A ") + words["adj"]
        title = _TITLE_TEMPLATES[rng.integers(len(_TITLE_TEMPLATES))].format(
            Adj=words["adj"].capitalize(), Noun=words["noun"].title(), Noun2=words["noun2"].title())
        text = _DESCRIPTION_TEMPLATES[rng.integers(len(_DESCRIPTION_TEMPLATES))].format(**words)
        rows.append((f"i{i:0{id_width}d}", title, text if rng.random() > 0.1 else None, category,
                     [names[t]] if rng.random() > 0.5 else [],
                     start + timedelta(seconds=int(offsets[i]))))
    return pl.DataFrame(rows, schema=list(C.ITEM_SCHEMA), orient="row")


def _preferences(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Users x topics affinity in [0, 1]: one favourite topic, sometimes a second one."""
    pref = np.full((cfg.n_users, len(TOPICS)), 0.05)
    fav = rng.integers(len(TOPICS), size=cfg.n_users)
    pref[np.arange(cfg.n_users), fav] = 1.0
    second = np.flatnonzero(rng.random(cfg.n_users) < 0.5)
    pref[second, rng.integers(len(TOPICS), size=second.size)] = 0.7
    pref[np.arange(cfg.n_users), fav] = 1.0
    return pref


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sessions(cfg: SyntheticConfig, rng: np.random.Generator, topic: np.ndarray, quality: np.ndarray,
              offsets: np.ndarray, pref: np.ndarray) -> list[tuple]:
    rows: list[tuple] = []
    exposure = np.exp(0.8 * quality)
    for u in range(cfg.n_users):
        n_sessions = max(1, int(rng.poisson(cfg.sessions_per_user)))
        times = np.sort(rng.uniform(0, cfg.days * 86400, n_sessions))
        last: tuple | None = None
        clicked = False
        for s, t in enumerate(times):
            available = np.flatnonzero(offsets <= t)
            if available.size < cfg.slate_size:
                continue
            p = exposure[available] / exposure[available].sum()
            shown = rng.choice(available, size=cfg.slate_size, replace=False, p=p)
            affinity = pref[u, topic[shown]]
            click = rng.random(cfg.slate_size) < _sigmoid(-4.0 + 4.6 * affinity + 0.6 * quality[shown])
            buy = click & (rng.random(cfg.slate_size) < _sigmoid(-1.6 + 1.6 * affinity + 0.3 * quality[shown]))
            ts = cfg.start + timedelta(seconds=int(t))
            imp = f"u{u:05d}-s{s:03d}"
            last = (shown[np.argmax(affinity)], ts, imp)
            for k, item in enumerate(shown):
                rows.append((f"u{u:05d}", f"i{item:05d}", ts, C.IMPRESSION, imp))
                if click[k]:
                    rows.append((f"u{u:05d}", f"i{item:05d}", ts + timedelta(seconds=5 + k), C.CLICK, imp))
                if buy[k]:
                    rows.append((f"u{u:05d}", f"i{item:05d}", ts + timedelta(seconds=60 + k), C.PURCHASE, imp))
            clicked = clicked or bool(click.any())
        if last is not None and not clicked:
            # The contract rejects users with only impressions: give each one click, on the
            # best-liked item of their last slate, so the story stays consistent.
            item, ts, imp = last
            rows.append((f"u{u:05d}", f"i{item:05d}", ts + timedelta(seconds=5), C.CLICK, imp))
    return rows


def generate_synthetic(config: SyntheticConfig = SyntheticConfig()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Generate a catalogue and an event log whose item text predicts clicks.

    Args:
        config: sizes and seed.

    Returns:
        ``(items, interactions)`` in the contract schemas (``recsys.contract``); every user
        has at least one click; impressions, clicks and purchases share an ``impression_id``.
    """
    rng = np.random.default_rng(config.seed)
    items, topic, (quality, offsets) = _items(config, rng)
    pref = _preferences(config, rng)
    rows = _sessions(config, rng, topic, quality, offsets, pref)
    inter = pl.DataFrame(rows, schema=[C.USER_ID, C.ITEM_ID, C.TS, C.EVENT, C.IMPRESSION_ID], orient="row")
    inter = inter.with_columns(pl.lit(None, pl.Float64).alias(C.RATING), pl.lit(False).alias(C.FROM_HISTORY))
    inter = inter.with_columns(pl.col(C.TS).cast(C.DATETIME)).select(list(C.INTERACTION_SCHEMA))
    items = items.with_columns(pl.col(C.PUBLISHED_AT).cast(C.DATETIME))
    return items, inter.sort(C.TS, C.USER_ID, C.ITEM_ID, C.EVENT)
