"""From a split dataset to the aligned matrices the evaluation protocol runs on.

Everything is indexed once: users and items get integer indices (the whole catalogue, so
items nobody touched are still ranked), and the train / valid / test windows become sparse
user x item matrices. Two histories matter and are kept apart on purpose:

* tuning: models fit on train and are scored on the valid window, train items excluded;
* testing: models fit on the *history* (``train`` or ``train+valid``, one choice for every
  model in a run) and are scored on the test window with exactly that history excluded.
  Scoring with valid history while excluding only train items lets already-seen items fill
  the lists and makes every refitted model look worse than it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.split import SplitConfig, temporal_split
from recsys import contract as C
from recsys.errors import DataContractError
from recsys.indexing import FitInput, event_matrix, fit_input
from recsys.io import Dataset
from recsys.topk import MAX_K

__all__ = ["EvalConfig", "EvalData", "Window", "build_eval_data", "HISTORY_BUCKETS", "HISTORY_CHOICES",
           "MAX_BOOTSTRAP", "MAX_SEED"]

HISTORY_CHOICES = ("train", "train+valid")
HISTORY_BUCKETS: tuple[tuple[str, int, int], ...] = (("0", 0, 0), ("1-4", 1, 4), ("5-19", 5, 19),
                                                     ("20+", 20, 1 << 30))
"""User slices by the number of history items: (name, min, max), inclusive."""
MAX_BOOTSTRAP = 100_000
"""Most bootstrap resamples: a CI's ends stop moving long before; time and the kept means grow with the count."""
MAX_SEED = 2**32 - 1
"""Seeds are handed to NumPy, LightFM and implicit; the last two keep them in 32 bits."""


def _whole(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class EvalConfig:
    """How a dataset is evaluated; one config for every model of a run."""

    split: SplitConfig = SplitConfig(mode="per-user", valid=0.1, test=0.2)
    """The temporal split (per-user 70/10/20 suits small public sets; use global for large logs)."""
    history: Literal["train", "train+valid"] = "train"
    """What models fit on and see at test time; exactly these items are excluded from the ranking."""
    positives: tuple[str, ...] = (C.CLICK, C.PURCHASE)
    """Events that count as positive: what models learn from, and the history excluded from rankings."""
    relevant: tuple[str, ...] | None = None
    """Events that count as relevant: the valid and test windows' targets (None: the positives).
    A subset of the positives: on rated data the strong signal alone
    (``purchase``: a rating at or above the importer's threshold), so lists are judged on what
    users liked while low ratings still feed the models and are never recommended again."""
    event_weights: tuple[tuple[str, float], ...] = tuple(C.DEFAULT_EVENT_WEIGHTS.items())
    """Weight of each event in the training matrices (the sum over a user's events on an item)."""
    ks: tuple[int, ...] = (5, 10, 20, 50, 100)
    """Cut-offs of the ranking metrics."""
    recent_days: int = 30
    """Window of the recent-popularity baseline and feature, ending at the last train event."""
    block_size: int = 1024
    """Users scored together against the whole catalogue; bounds memory to block x items."""
    n_bootstrap: int = 1000
    """Bootstrap resamples over users for confidence intervals."""
    max_users: int | None = None
    """Evaluate at most this many users per window (a seeded sample of those with relevant items);
    models still fit on every user. Scoring grows with users x items for every model and grid
    point: 10,000 users already bound NDCG@10 within about +-0.005. None = every user."""
    seed: int = 0
    """Seed of models, bootstrap and tie-breaking."""

    def __post_init__(self) -> None:
        if self.history not in HISTORY_CHOICES:
            raise ValueError(f"Invalid history {self.history!r}. Must be one of {', '.join(HISTORY_CHOICES)}")
        # the flag of each setting is named too: these messages reach `recsys evaluate` users as they are
        if not self.positives or C.IMPRESSION in self.positives:
            raise ValueError(f"positives (--positives) must be non-empty events other than impressions, "
                             f"got {self.positives}")
        if self.relevant is not None and (not self.relevant or set(self.relevant) - set(self.positives)):
            raise ValueError(f"relevant (--relevant) must be some of the positives ({', '.join(self.positives)}); "
                             f"got {', '.join(self.relevant) or 'none'}")
        if not self.ks or not all(_whole(k) and 1 <= k <= MAX_K for k in self.ks):
            # a list per user of the largest cut-off is kept: --k 1000000000 asked for terabytes
            raise ValueError(f"ks (--k) must be whole-number cut-offs between 1 and {MAX_K}; got {self.ks}")
        if not (_whole(self.n_bootstrap) and 1 <= self.n_bootstrap <= MAX_BOOTSTRAP):
            raise ValueError(f"n_bootstrap (--bootstrap) must be between 1 and {MAX_BOOTSTRAP}; got {self.n_bootstrap}")
        if not (_whole(self.seed) and 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed (--seed) must be between 0 and 2**32 - 1; got {self.seed}")
        if self.block_size < 1 or self.recent_days < 1:
            raise ValueError("block_size and recent_days must be >= 1")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1 (or None: every user); got {self.max_users}")

    @property
    def max_k(self) -> int:
        return max(self.ks)

    @property
    def relevance(self) -> tuple[str, ...]:
        """The events that are relevant (``relevant``, or the positives where it is not set)."""
        return self.relevant if self.relevant is not None else self.positives


@dataclass(frozen=True)
class Window:
    """What a model is fit on and asked about: fit input, excluded history, relevant items."""

    fit: FitInput
    history: sp.csr_matrix
    """float32 [n_users, n_items]: what the model sees at scoring time; excluded from rankings."""
    truth: sp.csr_matrix
    """bool [n_users, n_items]: relevant items of the window, minus the history."""
    cold_items: np.ndarray
    """bool [n_items]: items with no interaction in the fit window (split mode ``items`` with train history:
    less the valid window's new items, so the test window's are exactly its own)."""
    users: np.ndarray = field(init=False)
    """int [n]: users with at least one relevant item (the evaluated users)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", np.flatnonzero(np.diff(self.truth.indptr) > 0))


@dataclass(frozen=True)
class EvalData:
    """A dataset indexed for evaluation: the tuning window (valid) and the test window."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    valid: Window
    test: Window
    test_events: pl.DataFrame
    """Test-window rows with ``user_idx``, ``item_idx``, ``event`` (for slices and impressions)."""
    config: EvalConfig
    valid_events: pl.DataFrame | None = None
    """Valid-window rows (same columns): with the test window and the train fit, every event of the data."""


def _indexed_events(interactions: pl.DataFrame, users: pl.DataFrame, items: pl.DataFrame) -> pl.LazyFrame:
    """The split's input with the ids replaced by their indices (in the id columns, so the split reads them).

    The indices follow the sorted ids, so the split breaks ties as it would on the ids; keyed by
    integers, its sorts and windows at 20M events hold a fraction of what string keys took.
    """
    keyed = interactions.lazy().select(C.USER_ID, C.ITEM_ID, C.TS, C.EVENT, C.IMPRESSION_ID)
    return keyed.join(users.lazy(), on=C.USER_ID).join(items.lazy(), on=C.ITEM_ID).select(
        pl.col(C.USER_IDX).alias(C.USER_ID), pl.col(C.ITEM_IDX).alias(C.ITEM_ID), C.TS, C.EVENT, C.IMPRESSION_ID)


def _item_features(items: pl.DataFrame, index: pl.DataFrame) -> sp.csr_matrix | None:
    """One-hot category and tags: the text-blind side information of LightFM."""
    labels = pl.concat([
        items.select(C.ITEM_ID, pl.concat_str(pl.lit("category="), C.CATEGORY).alias("f")),
        items.select(C.ITEM_ID, C.TAGS).explode(C.TAGS).select(
            C.ITEM_ID, pl.concat_str(pl.lit("tag="), C.TAGS).alias("f")),
    ]).drop_nulls().unique().join(index, on=C.ITEM_ID).sort(C.ITEM_IDX, "f")  # stable across runs
    if labels.height == 0:
        return None
    _, cols = np.unique(labels["f"].to_numpy(), return_inverse=True)
    return sp.csr_matrix((np.ones(labels.height, np.float32), (labels[C.ITEM_IDX].to_numpy(), cols)),
                         shape=(index.height, int(cols.max()) + 1))


def _window(fit_rows: pl.DataFrame, target_rows: pl.DataFrame, cfg: EvalConfig, shape: tuple[int, int],
            features: sp.csr_matrix | None, items: pl.DataFrame, same_fit_as: Window | None = None) -> Window:
    # one FitInput object when the fit rows are the same: models cached per window (FitOnce) fit only once
    fit = same_fit_as.fit if same_fit_as is not None else fit_input(fit_rows, shape, cfg, features, items)
    history = fit.interactions
    truth = event_matrix(target_rows.filter(pl.col(C.EVENT).is_in(list(cfg.relevance))), shape, pl.lit(1.0))
    truth = (truth - truth.multiply(history > 0)).astype(bool).tocsr()
    truth.eliminate_zeros()
    truth = _sample_users(truth, cfg)
    seen = np.zeros(shape[1], bool)
    seen[fit_rows[C.ITEM_IDX].unique().to_numpy()] = True
    return Window(fit, history, truth, ~seen)


def _sample_users(truth: sp.csr_matrix, cfg: EvalConfig) -> sp.csr_matrix:
    """``truth`` with only a seeded sample of ``cfg.max_users`` of its users left (all when fewer)."""
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if cfg.max_users is None or len(users) <= cfg.max_users:
        return truth
    keep = np.zeros(truth.shape[0], np.float32)
    keep[np.random.default_rng(cfg.seed).choice(users, cfg.max_users, replace=False)] = 1.0
    sampled = (sp.diags(keep) @ truth.astype(np.float32)).astype(bool).tocsr()
    sampled.eliminate_zeros()
    return sampled


def _check_rankable(data: Dataset, config: EvalConfig) -> None:
    """Refuse data the protocol cannot evaluate, saying why, before anything is split or fitted.

    Found later, each case ended in a ``ValueError`` from the runner after every model was fitted.
    """
    n_items = data.items.height
    if n_items < 2:
        raise DataContractError(f"the catalogue has {n_items} item{'s' if n_items != 1 else ''}: there is nothing "
                                "to rank; evaluation needs at least 2 items")
    events = data.interactions[C.EVENT]
    for setting, wanted in (("positives (--positives)", config.positives), ("relevant (--relevant)", config.relevance)):
        if not events.is_in(list(wanted)).any():
            found = ", ".join(sorted(events.drop_nulls().unique().to_list())) or "none"
            raise DataContractError(f"{setting} {', '.join(wanted)}: no interaction has these events; the data's "
                                    f"events are: {found}")


def _split_of(config: EvalConfig) -> SplitConfig:
    """The split as run: the items mode draws its new items with the run's seed unless the split sets one."""
    if config.split.mode == "items" and config.split.seed is None:
        return replace(config.split, seed=config.seed)
    return config.split


def build_eval_data(data: Dataset, config: EvalConfig = EvalConfig(), *, extra_users: Sequence[str] = ()
                    ) -> EvalData:
    """Split ``data`` in time and index it for the evaluation protocol.

    Args:
        data: a validated dataset.
        config: split, history choice, positives and weights.
        extra_users: user ids indexed even without an event in ``data`` (a warm-started update
            keeps every user of the model it grows from).

    Returns:
        The tuning (valid) and test windows over one user and item index.

    Raises:
        DataContractError: the data cannot be evaluated: fewer than two items, no event among the
            positives, or no test user with a relevant item outside their history.
    """
    _check_rankable(data, config)
    known = pl.concat([data.interactions.select(C.USER_ID), pl.DataFrame({C.USER_ID: list(extra_users)},
                                                                        schema={C.USER_ID: pl.String})])
    users = known.select(pl.col(C.USER_ID).unique().sort()).with_row_index(C.USER_IDX)
    items = data.items.select(pl.col(C.ITEM_ID).sort()).with_row_index(C.ITEM_IDX)
    split = temporal_split(_indexed_events(data.interactions, users, items), _split_of(config))
    rows = split.select(pl.col(C.USER_ID).cast(pl.Int64).alias(C.USER_IDX),
                        pl.col(C.ITEM_ID).cast(pl.Int64).alias(C.ITEM_IDX),
                        C.EVENT, C.IMPRESSION_ID, C.TS, C.SPLIT).collect()
    windows, none = rows.partition_by(C.SPLIT, as_dict=True, include_key=False), rows.clear().drop(C.SPLIT)
    del rows  # each row now lives in its window's frame only
    train, valid, test = (windows.pop((w,), none) for w in (C.TRAIN, C.VALID, C.TEST))
    shape = (users.height, items.height)
    features = _item_features(data.items, items)
    catalogue = items.join(data.items, on=C.ITEM_ID).sort(C.ITEM_IDX)
    fit_rows = train if config.history == "train" else pl.concat([train, valid])
    tuning = _window(train, valid, config, shape, features, catalogue)
    testing = _window(fit_rows, test, config, shape, features, catalogue,
                      same_fit_as=tuning if config.history == "train" else None)
    if config.split.mode == "items" and config.history == "train":
        # the valid window's new items are unseen too, yet they are not the test's new items: cold_only ranks only those
        held_out = np.zeros(shape[1], bool)
        held_out[valid[C.ITEM_IDX].unique().to_numpy()] = True
        testing = replace(testing, cold_items=testing.cold_items & ~held_out)
    if not len(testing.users):
        n = data.interactions.height
        raise DataContractError(
            f"too little data to evaluate: {n} interaction{'s' if n != 1 else ''} of {users.height} user(s) on "
            f"{items.height} items leave no test user with a relevant item ({', '.join(config.relevance)}) outside "
            f"their history ({config.split.mode} split, test fraction {config.split.test}); give more data, or a "
            "larger test window (--test)")
    return EvalData(
        user_ids=users[C.USER_ID].to_numpy(), item_ids=items[C.ITEM_ID].to_numpy(),
        valid=tuning,
        test=testing,
        test_events=test.select(C.USER_IDX, C.ITEM_IDX, C.EVENT, C.IMPRESSION_ID, C.TS),
        config=config,
        valid_events=valid.select(C.USER_IDX, C.ITEM_IDX, C.EVENT, C.IMPRESSION_ID, C.TS),
    )
