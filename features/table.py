"""The (user, candidate) feature table of the learning-to-rank stage, leak-free by construction.

Training and export both call :func:`build_ranking_table`, so the ranker sees the same
features at fit time and at serving time. Each user has one cut (``cut``); every feature of
the user's rows is computed from events strictly before it (``features.popularity``,
``features.history``) and from catalogue attributes known at it (``features.catalogue``).
Scores of the candidate generators (``score_*`` columns) are passed through and also turned
into per-user ranks, which compare across users better than raw scores do.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from features.catalogue import add_item_attributes
from features.history import UserEvents, add_user_history
from features.popularity import ItemTimeline, add_item_popularity, check_windows_days
from features.ranks import ranks_by_user
from recsys.contract import CUT, ITEM_IDX, LABEL, USER_IDX

__all__ = ["FeatureConfig", "build_ranking_table", "feature_columns", "SCORE_PREFIX", "RANK_PREFIX"]

SCORE_PREFIX = "score_"
RANK_PREFIX = "rank_"
_NOT_FEATURES = (USER_IDX, ITEM_IDX, CUT, LABEL)
_SHOWN = 5  # offending keys quoted in an error message


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the ranking feature table."""

    windows_days: tuple[int, ...] = (7, 30)
    """Trailing popularity windows in days: one ``pop_{w}d`` column each; the longest feeds ``pop_trend``."""
    recent_n: int = 20
    """How many of the user's latest events ``hist_cat_recent_share`` looks at."""

    def __post_init__(self) -> None:
        # A list (from YAML) becomes a hashable tuple.
        object.__setattr__(self, "windows_days",
                           check_windows_days(self.windows_days, name="FeatureConfig.windows_days"))
        if isinstance(self.recent_n, bool) or not isinstance(self.recent_n, int) or self.recent_n < 1:
            raise ValueError(f"FeatureConfig.recent_n must be a positive integer, got {self.recent_n!r}")


def _check_unique(frame: pl.DataFrame, keys: list[str], what: str) -> None:
    dupes = frame.group_by(keys).len().filter(pl.col("len") > 1).sort(keys)
    if dupes.height:
        shown = ", ".join(str(tuple(r)) for r in dupes.select(keys).head(_SHOWN).rows())
        raise ValueError(f"{what}: {dupes.height} duplicate ({', '.join(keys)}) keys, e.g. {shown}; "
                         f"give one row per key (deduplicate or aggregate first)")


def build_ranking_table(candidates: pl.DataFrame | pl.LazyFrame, events: pl.DataFrame | pl.LazyFrame,
                        items: pl.DataFrame | pl.LazyFrame, cuts: pl.DataFrame | pl.LazyFrame, *,
                        config: FeatureConfig = FeatureConfig(), timeline: ItemTimeline | None = None,
                        by_user: UserEvents | None = None) -> pl.DataFrame:
    """Join each candidate to its user's cut and add every feature family, as of that cut.

    Args:
        candidates: one row per (``user_idx`` Int64, ``item_idx`` Int64) pair, plus any
            precomputed columns, passed through unchanged (``score_text`` Float32,
            ``score_lightfm``, ``src_text`` Int8 flags, ``label``, ...).
        events: the positive events the features may see, ``user_idx`` Int64, ``item_idx``
            Int64, ``timestamp`` Datetime("us"); all users' events of the fit window. A row only
            ever reads events strictly before its cut.
        items: the catalogue, ``item_idx`` Int64 (unique), ``category`` String (nullable),
            optional ``published_at`` Datetime("us") and ``description`` String (nullable).
        cuts: ``user_idx`` Int64 and ``cut`` Datetime("us"), one row per user.
        config: popularity windows and the recent-history length.
        timeline: ``events`` indexed by item (:meth:`ItemTimeline.from_events`), when the caller
            scores many blocks against one log: built once, it spares each block a pass over the log.
        by_user: ``events`` indexed by user (:meth:`UserEvents.from_events`), for the same reason.

    Returns:
        The candidates with ``cut``, the ``pop_*`` (:func:`features.popularity.add_item_popularity`),
        ``hist_*`` (:func:`features.history.add_user_history`) and ``item_*``
        (:func:`features.catalogue.add_item_attributes`) columns, and for each ``score_<x>``
        column a ``rank_<x>`` (Int32): the pair's rank among its user's candidates, 1 = highest
        score, ties broken by lower ``item_idx``, null for a null or NaN score. One row per
        candidate, sorted by ``user_idx, item_idx``.

    Raises:
        ValueError: duplicate (user_idx, item_idx) candidates, duplicate users in ``cuts`` or
            duplicate items in ``items`` (the first few are named), candidate users without a
            cut, or a candidate column named ``cut``.
    """
    cands = candidates.lazy().collect()
    if CUT in cands.columns:
        raise ValueError(f"candidates already have a {CUT!r} column; pass cut times through `cuts` only")
    _check_unique(cands, [USER_IDX, ITEM_IDX], "candidates")
    catalogue = items.lazy().collect()
    _check_unique(catalogue, [ITEM_IDX], "items")
    cut_frame = cuts.lazy().select(USER_IDX, CUT).collect()
    _check_unique(cut_frame, [USER_IDX], "cuts")
    pairs = cands.join(cut_frame, on=USER_IDX, how="left", maintain_order="left")
    missing = pairs.filter(pl.col(CUT).is_null())[USER_IDX].unique().sort()
    if missing.len():
        raise ValueError(f"{missing.len()} candidate users have no cut, e.g. {missing.head(_SHOWN).to_list()}; "
                         f"add a row per user to `cuts`")

    events = events.lazy()
    # Exact pruning: item features only read the candidates' items' events, user features only the
    # block's users' events. For one user (serving) this skips most of the log; for a block it is free.
    if timeline is None:
        timeline = ItemTimeline.from_events(events.filter(pl.col(ITEM_IDX).is_in(pairs[ITEM_IDX].unique().implode())))
    user_events = (by_user.of(pairs[USER_IDX].to_numpy()).lazy() if by_user is not None else
                   events.filter(pl.col(USER_IDX).is_in(pairs[USER_IDX].unique().implode())))
    table = (pairs.lazy()
             .pipe(add_item_popularity, timeline, windows_days=config.windows_days)
             .pipe(add_user_history, user_events, catalogue.lazy(), recent_n=config.recent_n)
             .pipe(add_item_attributes, catalogue.lazy()))
    out = table.sort(USER_IDX, ITEM_IDX).collect()
    assert out.height == cands.height, "a feature join multiplied or dropped candidate rows"
    users = out[USER_IDX].to_numpy()
    ranks = {RANK_PREFIX + c.removeprefix(SCORE_PREFIX): ranks_by_user(users, out[c]) for c in cands.columns
             if c.startswith(SCORE_PREFIX)}
    return out.with_columns(pl.Series(name, rank).replace(0, None) for name, rank in ranks.items())


def feature_columns(table: pl.DataFrame) -> list[str]:
    """The model inputs of a ranking table: every numeric column but the keys and the label.

    Args:
        table: output of :func:`build_ranking_table`.

    Returns:
        Column names in table order, without ``user_idx``, ``item_idx``, ``cut`` and ``label``.
    """
    return [name for name, dtype in table.schema.items() if dtype.is_numeric() and name not in _NOT_FEATURES]
