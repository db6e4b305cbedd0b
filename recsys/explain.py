"""Why an item is in a user's list: the sources that proposed it, the history item it is like, the ranker's reasons.

For each (user, item) row of a list, :func:`explain` gives its ``title``, ``rank`` and ``score`` and says

* ``sources``: the candidate sources that proposed the item (``lightfm, text``; ``cold`` is
  the new-item search by the text tower);
* ``because_item_id`` / ``because_title``: the item of the user's history closest to it in
  the text tower's space (cosine of ``PipelineState.item_vectors``); None without a text
  tower or without history;
* ``contributions``: the ranker's largest feature contributions (LightGBM ``pred_contrib``,
  averaged over the ensemble's boosters), each with a short phrase; ``bias`` is the rest
  of the score (the boosters' expected value, plus the base score the trees corrected);
* ``reason``: all of it in plain words, e.g. ``suggested by lightfm and text; because you
  liked "Toy Story"; mostly for: high text score (+0.42), popular in the last 7 days (+0.10)``.

The contributions of a candidate add up exactly: ``sum(values over all features) + bias ==
score`` (ask for all features with ``top=None``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl

from recsys import contract as C
from recsys.bundle import FALLBACK, ModelBundle
from recsys.candidates import COLD_SOURCE
from recsys.errors import RecsysError
from recsys.indexing import index_of
from recsys.ranker import base_scores

__all__ = ["explain", "explain_recommendations", "feature_phrase", "item_titles", "EXPLAIN_SCHEMA", "PHRASES",
           "MODEL_WORDS"]

MODEL_WORDS: dict[str, str] = {"text": "text", "lightfm": "LightFM", "ease": "EASE", "itemknn": "item-kNN",
                               "popularity_recent": "recent-popularity", "hist_cos": "history-similarity",
                               COLD_SOURCE: "new-item"}
"""How a stage-one model or source is named inside a phrase (unknown names are shown as they are)."""

PHRASES: dict[str, tuple[str, str]] = {
    "pop_all": ("popular overall", "rarely clicked overall"),
    "pop_users": ("liked by many users", "liked by few users"),
    "pop_trend": ("trending now", "past its peak"),
    "pop_age_days": ("first clicked long ago", "first clicked recently"),
    "pop_last_days": ("not clicked lately", "clicked lately"),
    "hist_n_events": ("your long history", "your short history"),
    "hist_days_since_last": ("your long absence", "your recent visit"),
    "hist_span_days": ("your long-standing history", "your recent history"),
    "hist_cat_share": ("a category you often pick", "a category you rarely pick"),
    "hist_cat_recent_share": ("a category you picked lately", "a category you did not pick lately"),
    "item_published_age_days": ("published long ago", "published recently"),
    "item_has_description": ("has a description", "has no description"),
}
"""Feature -> (phrase when its value is high, phrase when low), "high" meaning at least the median over
the user's candidates (flags: set). ``src_*``, ``score_*``, ``rank_*`` and ``pop_<w>d`` are phrased by rule."""

MISSING: dict[str, str] = {"pop_age_days": "never clicked before", "pop_last_days": "never clicked before",
                           "item_published_age_days": "brand new (or undated)",
                           "hist_cat_share": "a category you never picked",
                           "hist_cat_recent_share": "a category you never picked"}
"""Phrase of a feature whose value is missing (others: ``no <feature>``)."""

_FLAGS = ("item_has_description",)
_NEW_ITEMS = "the new-item search"
_SHOWN_FOR = 3
"""Positive contributions quoted in a reason (plus the largest negative one)."""

_CONTRIBUTION = pl.Struct({"feature": pl.String, "phrase": pl.String, "value": pl.Float64})
EXPLAIN_SCHEMA: dict[str, pl.DataType] = {
    C.USER_ID: pl.String, C.ITEM_ID: pl.String, C.TITLE: pl.String, "rank": pl.Int64, "score": pl.Float64,
    "sources": pl.String, "because_item_id": pl.String, "because_title": pl.String,
    "contributions": pl.List(_CONTRIBUTION), "bias": pl.Float64, "reason": pl.String, FALLBACK: pl.Boolean,
}
"""Columns of :func:`explain`, in order."""
_ADDED = [c for c in EXPLAIN_SCHEMA if c not in (C.USER_ID, C.ITEM_ID, "rank", "score", FALLBACK)]


def _model(name: str) -> str:
    return MODEL_WORDS.get(name, name)


def feature_phrase(name: str, value: float | None, median: float | None = None) -> str:
    """A short human phrase for a feature's value in one row: ``high text score``, ``popular in the last 7 days``.

    Args:
        name: ranker feature name.
        value: the row's value (None or NaN = missing).
        median: the feature's median over the user's candidates; "high" means ``value >= median``
            (for ranks: ``value <= median``, rank 1 being the best). Flags read ``value > 0``.

    Unknown feature names come back as they are.
    """
    missing = value is None or (isinstance(value, float) and np.isnan(value))
    flag = name.startswith("src_") or name in _FLAGS
    if missing:
        return MISSING.get(name, f"no {name}")
    high = value > 0 if flag or median is None or np.isnan(median) else (
        value <= median if name.startswith("rank_") else value >= median)
    if name.startswith("src_"):
        source = name.removeprefix("src_")
        return f"proposed by the {_model(source)} source" if high else f"not proposed by the {_model(source)} source"
    if name.startswith("score_"):
        return f"{'high' if high else 'low'} {_model(name.removeprefix('score_'))} score"
    if name.startswith("rank_"):
        model = _model(name.removeprefix("rank_"))
        return f"near the top of the {model} list" if high else f"far down the {model} list"
    window = re.fullmatch(r"pop_(\d+)d", name)
    if window:
        days = window.group(1)
        return f"popular in the last {days} days" if high else f"rarely clicked in the last {days} days"
    if name in PHRASES:
        return PHRASES[name][0 if high else 1]
    return name


def item_titles(bundle: ModelBundle) -> np.ndarray:
    """object [n_items]: each item's title (its ``item_id`` when the catalogue has no title, e.g. old bundles)."""
    titles = bundle.item_ids.astype(object).copy()
    items = bundle.state.items
    if C.TITLE in items.columns:
        known = items.select(C.ITEM_IDX, C.TITLE).drop_nulls()
        titles[known[C.ITEM_IDX].to_numpy()] = np.asarray(known[C.TITLE].to_list(), dtype=object)
    return titles


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def explain(bundle: ModelBundle, user_ids, k: int = 10, items: Sequence[str] | None = None, *,
            exclude_seen: bool = True, top: int | None = 5,
            unknown: Literal["error", "fallback"] = "error") -> pl.DataFrame:
    """Each user's top-``k`` items (or only ``items``), explained: one row per (user, item), :data:`EXPLAIN_SCHEMA`.

    Args:
        bundle: the model (with the histories to explain from: see :func:`recsys.export.prepare_bundle`).
        user_ids: users, in output order (a user given twice is explained once).
        k: list length (ignored when ``items`` is given).
        items: explain these item ids instead of the top-k: their rank is their position in the
            user's whole list; an item no source proposed says "not among the candidates", one
            the user has already seen (with ``exclude_seen``) says so and has no rank.
        exclude_seen: the lists leave out what the user has seen (as :meth:`ModelBundle.recommend`).
        top: contributions kept per row, largest absolute value first; None = every feature.
        unknown: ``error`` raises for users the model does not know; ``fallback`` explains
            their popularity list.

    Raises:
        RecsysError: unknown users (with ``unknown="error"``, naming them), or item ids that
            are not in the model's catalogue.
    """
    # a user asked twice (``--user u --user u``) is explained once, as an item asked twice is
    user_ids = [user_ids] if isinstance(user_ids, str) else list(dict.fromkeys(user_ids))
    user_ids = np.asarray(user_ids, dtype=object)
    index = bundle.user_index(user_ids)
    if unknown == "error" and (index < 0).any():
        missing = list(dict.fromkeys(user_ids[index < 0].tolist()))
        shown = ", ".join(repr(u) for u in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RecsysError(f"user {shown} not known to the model (no history it was trained on or given); "
                          "unknown users only get the most popular items")
    if items is None:
        recs = bundle.recommend(user_ids, k, exclude_seen=exclude_seen)
        return explain_recommendations(bundle, recs, exclude_seen=exclude_seen, top=top).select(list(EXPLAIN_SCHEMA))
    items = list(dict.fromkeys(str(i) for i in items))
    where = index_of(list(items), bundle.item_ids)
    if (where < 0).any():
        raise RecsysError(f"item(s) not in the model's catalogue: {', '.join(np.asarray(items)[where < 0][:5])}")
    full = bundle.recommend(user_ids, bundle.n_items, exclude_seen=exclude_seen, keep_row=True)
    asked = pl.DataFrame({"_row": np.repeat(np.arange(len(user_ids)), len(items)),
                          C.USER_ID: np.repeat(user_ids, len(items)),
                          C.ITEM_ID: np.tile(np.asarray(items, dtype=object), len(user_ids))},
                         schema={"_row": pl.Int64, C.USER_ID: pl.String, C.ITEM_ID: pl.String})
    recs = asked.join(full.drop(C.USER_ID), on=["_row", C.ITEM_ID], how="left", maintain_order="left")
    recs = recs.with_columns(pl.Series(FALLBACK, index[recs["_row"].to_numpy()] < 0))
    out = explain_recommendations(bundle, recs.drop("_row"), exclude_seen=exclude_seen, top=top)
    return out.select(list(EXPLAIN_SCHEMA))


def explain_recommendations(bundle: ModelBundle, recs: pl.DataFrame, *, exclude_seen: bool = True,
                            top: int | None = 5, block_size: int = 512) -> pl.DataFrame:
    """``recs`` (rows of :meth:`ModelBundle.recommend`) with the explanation columns of :data:`EXPLAIN_SCHEMA`.

    Every input column and the row order are kept; ``exclude_seen`` must be what the lists were
    made with (it decides which items could be candidates). Rows whose ``fallback`` is true
    (users the model does not know) are explained as the popularity list.
    """
    titles = item_titles(bundle)
    frame = recs.with_row_index("_order")
    if FALLBACK not in frame.columns:
        frame = frame.with_columns(pl.lit(False).alias(FALLBACK))
    users = bundle.user_index(frame[C.USER_ID].to_numpy())
    items = index_of(frame[C.ITEM_ID].to_list(), bundle.item_ids)
    fallback = frame[FALLBACK].fill_null(False).to_numpy() | (users < 0)
    out: dict[str, list] = {c: [None] * frame.height for c in _ADDED}
    out[C.TITLE] = [titles[i] if i >= 0 else None for i in items]
    for row in np.flatnonzero(fallback & (items >= 0)):
        liked = int(bundle.popularity[items[row]])
        out["reason"][row] = (f"the model does not know this user: one of the most popular items "
                              f"({liked} user{'s' if liked != 1 else ''} liked it)")
    known = np.flatnonzero(~fallback & (items >= 0))
    block_users = np.unique(users[known])
    for lo in range(0, len(block_users), block_size):
        block = block_users[lo:lo + block_size]
        rows = known[np.isin(users[known], block)]
        _explain_block(bundle, titles, block, rows, users, items, out, exclude_seen, top)
    added = pl.DataFrame(out, schema={c: EXPLAIN_SCHEMA[c] for c in _ADDED})
    columns = [c for c in recs.columns if c not in _ADDED]
    return pl.concat([frame.select(columns), added], how="horizontal")


def _explain_block(bundle: ModelBundle, titles: np.ndarray, block: np.ndarray, rows: np.ndarray, users: np.ndarray,
                   items: np.ndarray, out: dict[str, list], exclude_seen: bool, top: int | None) -> None:
    """Fill ``out`` at ``rows`` (the rows of the users in ``block``): sources, contributions, nearest history item."""
    state = bundle.state
    ranker = state.ranker
    block_history = bundle.history[block]
    if ranker is None:
        _explain_alone(bundle, titles, block, rows, users, items, out, exclude_seen)
        return
    table = bundle.pipeline.candidate_table(block, block_history, exclude_seen=exclude_seen)
    # the base score as the ranker reads it over the whole block (missing values sit below the block's lowest)
    table = table.with_columns(pl.Series("_base", base_scores(table, ranker.base) if ranker.base is not None
                                         else np.zeros(table.height)))
    features = ranker.features
    medians = table.group_by(C.USER_IDX).agg([pl.col(f).cast(pl.Float64).fill_nan(None).median() for f in features])
    targets = pl.DataFrame({"_at": np.arange(len(rows)), C.USER_IDX: users[rows], C.ITEM_IDX: items[rows]},
                           schema={"_at": pl.Int64, C.USER_IDX: pl.Int64, C.ITEM_IDX: pl.Int64})
    found = targets.join(table.with_columns(pl.lit(True).alias("_cand")), on=[C.USER_IDX, C.ITEM_IDX], how="inner")
    contrib = ranker.contributions(found)
    base = found["_base"].to_numpy()
    middle = found.select("_at", C.USER_IDX).join(medians, on=C.USER_IDX, how="left", maintain_order="left")
    values = found.select([pl.col(f).cast(pl.Float64) for f in features]).to_numpy()
    mids = middle.select(features).to_numpy().astype(np.float64)
    sources = [c for c in table.columns if c.startswith("src_")]
    flags = found.select(sources).to_numpy() if sources else np.zeros((found.height, 0))
    candidate = {int(at): j for j, at in enumerate(found["_at"].to_numpy())}
    row_of = {int(u): i for i, u in enumerate(block)}
    vectors = state.item_vectors
    for at, row in enumerate(rows):
        user, item = int(users[row]), int(items[row])
        because = _because(vectors, block_history, row_of[user], item)
        if because is not None:
            out["because_item_id"][row], out["because_title"][row] = str(bundle.item_ids[because]), titles[because]
        liked = f'because you liked "{titles[because]}"' if because is not None else None
        j = candidate.get(at)
        if j is None:
            r = row_of[user]
            if exclude_seen and item in block_history.indices[block_history.indptr[r]:block_history.indptr[r + 1]]:
                out["reason"][row] = "already in your history: not recommended again"
            else:
                what = f"not among the candidates (no source proposed it); ranked after them by the " \
                       f"{_model(state.candidates.cold_by)} score"
                out["reason"][row] = "; ".join(p for p in (what, liked) if p)
            continue
        names = [s.removeprefix("src_") for s, on in zip(sources, flags[j], strict=True) if on > 0]
        out["sources"][row] = ", ".join(names)
        shown = [(features[f], feature_phrase(features[f], float(values[j, f]), float(mids[j, f])),
                  float(contrib[j, f])) for f in np.argsort(-np.abs(contrib[j, :-1]), kind="stable")]
        out["bias"][row] = float(contrib[j, -1] + base[j])
        out["contributions"][row] = [{"feature": n, "phrase": p, "value": v}
                                     for n, p, v in (shown if top is None else shown[:top])]
        said = [_NEW_ITEMS if n == COLD_SOURCE else n for n in names]
        parts = [f"suggested by {_and(said)}" if names else None, liked]
        if ranker.base is not None:
            parts.append(f"starting from the {_model(ranker.base.removeprefix('score_'))} score ({base[j]:+.2f})")
        pros = [f"{p} ({v:+.2f})" for _, p, v in shown if v > 0][:_SHOWN_FOR]
        cons = [f"{p} ({v:+.2f})" for _, p, v in shown if v < 0][:1]
        if pros:
            parts.append("mostly for: " + ", ".join(pros))
        if cons:
            parts.append("against: " + ", ".join(cons))
        out["reason"][row] = "; ".join(p for p in parts if p)


def _explain_alone(bundle: ModelBundle, titles: np.ndarray, block: np.ndarray, rows: np.ndarray, users: np.ndarray,
                   items: np.ndarray, out: dict[str, list], exclude_seen: bool) -> None:
    """Fill ``out`` for a model served by one stage-one model (no ranker): its score and the nearest history item."""
    state = bundle.state
    name = state.sources[0]
    block_history = bundle.history[block]
    row_of = {int(u): i for i, u in enumerate(block)}
    scores = state.models[name].score(block, block_history)
    for row in rows:
        user, item = int(users[row]), int(items[row])
        r = row_of[user]
        if exclude_seen and item in block_history.indices[block_history.indptr[r]:block_history.indptr[r + 1]]:
            out["reason"][row] = "already in your history: not recommended again"
            continue
        because = _because(state.item_vectors, block_history, r, item)
        if because is not None:
            out["because_item_id"][row], out["because_title"][row] = str(bundle.item_ids[because]), titles[because]
        out["sources"][row] = name
        out["contributions"][row] = []
        liked = f'because you liked "{titles[because]}"' if because is not None else None
        what = (f"ranked by the {_model(name)} score alone ({float(scores[r, item]):+.3f}; it ranked held-out users "
                "better than the ranked pipeline)")
        out["reason"][row] = "; ".join(p for p in (what, liked) if p)


def _because(vectors: np.ndarray | None, history, row: int, item: int) -> int | None:
    """The history item (other than ``item``) closest to ``item`` by text-vector cosine, or None."""
    if vectors is None:
        return None
    seen = history.indices[history.indptr[row]:history.indptr[row + 1]]
    seen = seen[seen != item]
    if len(seen) == 0:
        return None
    return int(seen[np.argmax(vectors[seen] @ vectors[item])])
