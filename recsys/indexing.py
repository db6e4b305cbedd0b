"""Ids to indices, and indexed events to what a model learns from.

Users and items get integer indices once (the evaluation's, the training run's, the registered
model's); every model and matrix is aligned to them. :func:`index_of` is the one id lookup,
:func:`fit_input` the one place event rows become interaction matrices, so weights, positives
and the recent window mean the same in training, evaluation, export and updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import contract as C

__all__ = ["FitInput", "EventSettings", "Events", "index_of", "IdIndex", "id_lookup", "event_matrix", "fit_input"]


def id_lookup(known, id_column: str = "id", index_column: str = "i") -> pl.DataFrame:
    """The id -> index table of ``known`` ids (as strings, Int64 positions), to join frames of ids against."""
    return pl.DataFrame({id_column: np.asarray(known, dtype=object).astype(str), index_column: np.arange(len(known))},
                        schema={id_column: pl.String, index_column: pl.Int64})


def index_of(asked, known) -> np.ndarray:
    """int64 position of each ``asked`` id among ``known`` ids (compared as strings); -1 when absent."""
    query = pl.DataFrame({"id": np.asarray(asked, dtype=object).astype(str)}, schema={"id": pl.String})
    return query.join(id_lookup(known), on="id", how="left", maintain_order="left")["i"].fill_null(-1).to_numpy()


class IdIndex:
    """The id -> position map of ``known`` ids, built once and asked many times (compared as strings).

    :func:`index_of` joins against every known id at each call: 0.24 s per 512-user block at 1M
    users, a cost of the number of users paid by every block of an export. This pays it once
    (0.26 s and ~70 MB at 1M ids); each ask then costs its own ids (~1 ms for 512).
    """

    def __init__(self, known) -> None:
        names = np.asarray(known, dtype=object).astype(str).tolist()
        self._position = dict(zip(names, range(len(names)), strict=True))
        if len(self._position) < len(names):
            raise ValueError(f"IdIndex needs distinct ids; {len(names) - len(self._position)} are repeated")

    def __len__(self) -> int:
        return len(self._position)

    def of(self, asked) -> np.ndarray:
        """int64 position of each ``asked`` id; -1 when absent (as :func:`index_of`)."""
        asked = np.asarray(asked, dtype=object).astype(str).tolist()
        return np.fromiter(map(self._position.get, asked, [-1] * len(asked)), dtype=np.int64, count=len(asked))


class EventSettings(Protocol):
    """What turns events into interaction matrices (``EvalConfig`` and :class:`Events` have it)."""

    positives: tuple[str, ...]
    event_weights: tuple[tuple[str, float], ...]
    recent_days: int
    seed: int


@dataclass(frozen=True)
class Events:
    """The event settings a registered model was trained with (it re-reads newer logs the same way)."""

    positives: tuple[str, ...] = (C.CLICK, C.PURCHASE)
    event_weights: tuple[tuple[str, float], ...] = tuple(C.DEFAULT_EVENT_WEIGHTS.items())
    recent_days: int = 30
    seed: int = 0


@dataclass(frozen=True)
class FitInput:
    """Everything a model may learn from, as aligned index spaces (users x items).

    Rows and columns are the evaluation's user and item indices (``EvalData.user_ids`` /
    ``item_ids``); the catalogue includes items with no interaction (cold items).
    """

    interactions: sp.csr_matrix
    """float32 [n_users, n_items]: event weight sums of positive events (clicks, purchases)."""
    recent: sp.csr_matrix
    """float32 [n_users, n_items]: the same, restricted to the last ``recent_days`` before the cut."""
    item_features: sp.csr_matrix | None = None
    """float32 [n_items, n_features]: one-hot category and tags (no identity columns), or None."""
    seed: int = 0
    """Seed for any randomness in fitting or scoring."""
    events: pl.DataFrame | None = None
    """The fit window's rows (all events, impressions included) with ``user_idx``, ``item_idx``,
    ``event``, ``impression_id``, ``timestamp``: for models that need order or impressions."""
    items: pl.DataFrame | None = None
    """The catalogue in item-index order (contract columns): for models that read item text."""

    @property
    def n_users(self) -> int:
        return self.interactions.shape[0]

    @property
    def n_items(self) -> int:
        return self.interactions.shape[1]


def event_matrix(rows: pl.DataFrame, shape: tuple[int, int], weight: pl.Expr) -> sp.csr_matrix:
    """float32 [n_users, n_items] csr: ``weight`` summed per (user, item) of indexed ``rows``, sums <= 0 dropped.

    scipy sums the repeated pairs while it builds the matrix: a polars group-by over every row held
    a hash table of every pair, +1.5 GB at 20M events. Indices come out sorted within each row, as
    SGD models (LightFM) visit interactions in matrix order and must be reproducible.
    """
    cells = rows.select(C.USER_IDX, C.ITEM_IDX, weight.cast(pl.Float32).alias("w"))
    matrix = sp.csr_matrix((cells["w"].to_numpy(), (cells[C.USER_IDX].to_numpy(), cells[C.ITEM_IDX].to_numpy())),
                           shape=shape, dtype=np.float32)
    matrix.sum_duplicates()  # canonical: sorted indices, one entry per pair
    matrix.data[matrix.data <= 0] = 0.0
    matrix.eliminate_zeros()
    return matrix


def fit_input(fit_rows: pl.DataFrame, shape: tuple[int, int], cfg: EventSettings, features: sp.csr_matrix | None,
              items: pl.DataFrame | None) -> FitInput:
    """What a model learns from, built from indexed event rows (``user_idx``, ``item_idx``, contract columns).

    The evaluation's windows and the ranking pipeline's inner label split both build their
    fit inputs here, so weights, positives and the recent window mean the same everywhere.
    """
    weight = pl.col(C.EVENT).replace_strict(dict(cfg.event_weights), default=0.0, return_dtype=pl.Float32)
    positive = fit_rows.filter(pl.col(C.EVENT).is_in(list(cfg.positives)))
    last = fit_rows[C.TS].max()
    recent_rows = positive.filter(pl.col(C.TS) > last - timedelta(days=cfg.recent_days)) if last else positive
    events = fit_rows.select(C.USER_IDX, C.ITEM_IDX, C.EVENT, C.IMPRESSION_ID, C.TS).sort(C.TS, C.USER_IDX, C.ITEM_IDX)
    return FitInput(event_matrix(positive, shape, weight), event_matrix(recent_rows, shape, weight), features, cfg.seed,
                    events=events, items=items)
