"""Fit the learning-to-rank stage: LightGBM lambdarank grouped by user, one booster per fold.

Users (groups) are shuffled with the seed and split into ``n_folds`` folds; booster ``k`` trains
on the other folds' users and early-stops on fold ``k``'s users, so no user is in both the
training and the early-stopping set of a booster. The boosters are then averaged by
:class:`recsys.ranker.RankerEnsemble` rather than refitted on everyone: the mean of the fold
models is more stable than one model (a prototype gained from it) and needs no guess of the
number of trees for a refit. With ``n_folds=1`` a single booster early-stops on a random
``valid_fraction`` of the users.

Groups whose labels are all zero carry no ranking signal (every order has the same NDCG, and
LightGBM scores them NDCG 1, which would inflate the early-stopping metric); they are dropped
from training and early stopping and counted in the report.

Learning curves and importance plots: ``training.ranker_plots``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import polars as pl

from recsys import contract as C
from recsys.config import check_above, check_at_least
from recsys.console import bars
from recsys.ranker import RankerEnsemble, base_scores, feature_matrix

__all__ = ["MAX_LABEL", "RankerConfig", "FoldReport", "RankerReport", "fit_ranker", "fit_rankers", "out_of_fold"]

logger = logging.getLogger(__name__)

MAX_LABEL = 30
"""Largest relevance grade LightGBM's default ``label_gain`` (``2**label - 1``) covers."""

_FOLD = "fold"
_KEY = "_ranker_order"


@dataclass(frozen=True)
class RankerConfig:
    """Settings of :func:`fit_ranker`."""

    n_folds: int = 3
    """Cross-validation folds over users, one booster each; >= 1. With 1, one booster
    early-stops on ``valid_fraction`` of the users."""
    valid_fraction: float = 0.2
    """Share of users held out for early stopping when ``n_folds`` is 1; in (0, 1)."""
    learning_rate: float = 0.05
    """Shrinkage per tree; > 0."""
    num_leaves: int = 31
    """Maximum leaves per tree; >= 2."""
    min_data_in_leaf: int = 50
    """Minimum rows per leaf; >= 1."""
    feature_fraction: float = 0.9
    """Share of features sampled for each tree; in (0, 1]."""
    lambda_l2: float = 1.0
    """L2 penalty on leaf values; >= 0."""
    n_estimators: int = 1000
    """Maximum boosting rounds per booster; >= 1."""
    early_stopping_rounds: int = 50
    """Stop a booster after this many rounds without a better validation NDCG; >= 1."""
    eval_at: int = 10
    """Cut-off ``k`` of the NDCG@k used for early stopping; >= 1."""
    truncation_level: int = 20
    """LightGBM ``lambdarank_truncation_level``: pairs are formed only with the top this many
    rows of each group's current ranking; >= 1."""
    num_threads: int = 1
    """LightGBM threads per booster; >= 1. Runs with the same seed and thread count give identical
    models; the fold boosters themselves train side by side, one per core."""
    seed: int = 0
    """Seeds the user shuffle, the row order within groups and LightGBM; >= 0."""

    def __post_init__(self) -> None:
        check_at_least(
            self, n_folds=1, num_leaves=2, min_data_in_leaf=1, lambda_l2=0, n_estimators=1, early_stopping_rounds=1,
            eval_at=1, truncation_level=1, num_threads=1, seed=0,
        )
        check_above(self, valid_fraction=0, learning_rate=0, feature_fraction=0)
        if not self.valid_fraction < 1:
            raise ValueError(f"RankerConfig.valid_fraction must be < 1; got {self.valid_fraction!r}")
        if not self.feature_fraction <= 1:
            raise ValueError(f"RankerConfig.feature_fraction must be <= 1; got {self.feature_fraction!r}")

    def lgb_params(self) -> dict[str, object]:
        """The LightGBM parameters of every fold booster."""
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [self.eval_at],
            "lambdarank_truncation_level": self.truncation_level,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }


@dataclass
class FoldReport:
    """How one fold booster trained."""

    fold: int
    """Index of the fold (and booster)."""
    best_iteration: int
    """Trees kept: the round with the best validation NDCG."""
    best_ndcg: float
    """Validation NDCG@eval_at at ``best_iteration``."""
    valid_ndcg: list[float]
    """Validation NDCG@eval_at after each round (1-based round ``i`` at index ``i - 1``)."""
    train_ndcg: list[float]
    """Training NDCG@eval_at after each round."""
    n_train_groups: int
    """Groups (users) the booster trained on."""
    n_valid_groups: int
    """Groups it early-stopped on."""
    n_train_rows: int
    """Rows it trained on."""
    n_valid_rows: int
    """Rows it early-stopped on."""


@dataclass
class RankerReport:
    """What :func:`fit_ranker` did: per-fold curves, the fold assignment and the data used."""

    folds: list[FoldReport]
    """One entry per booster."""
    assignment: pl.DataFrame
    """One row per used group: the group column and ``fold`` (Int64), the booster that
    early-stopped on it; null for groups only ever trained on (``n_folds`` 1). Booster ``k``
    trained on exactly the groups whose ``fold`` is not ``k``."""
    metric: str
    """Name of the validation metric, e.g. ``ndcg@10``."""
    n_groups_used: int
    """Groups with at least one positive label."""
    n_groups_dropped: int
    """Groups whose labels were all zero, left out of training and early stopping."""
    n_rows: int
    """Rows of the input table."""
    n_rows_used: int
    """Rows of the used groups."""
    fit_seconds: float
    """Wall time of :func:`fit_ranker`."""
    features: list[str] = field(default_factory=list)
    """Feature names, in model order."""

    @property
    def best_iterations(self) -> list[int]:
        """``best_iteration`` of each fold."""
        return [f.best_iteration for f in self.folds]

    @property
    def mean_best_ndcg(self) -> float:
        """Mean over folds of the best validation NDCG."""
        return float(np.mean([f.best_ndcg for f in self.folds]))


def fit_ranker(
    table: pl.DataFrame,
    features: Sequence[str],
    *,
    label: str = C.LABEL,
    group: str = C.USER_IDX,
    config: RankerConfig = RankerConfig(),
    show_progress: bool = False,
    base: str | None = None,
) -> tuple[RankerEnsemble, RankerReport]:
    """Train one lambdarank booster per user fold and return their ensemble.

    Deterministic for a fixed ``config.seed``, whatever the order of the input rows: rows are
    put in a canonical order before the seeded shuffles.

    Args:
        table: one row per (user, candidate item), in any order, with columns ``group`` (any
            non-null type; the user), ``label`` (non-negative integer relevance grade <=
            :data:`MAX_LABEL`, e.g. 0 none, 1 click, 2 purchase; integer-valued floats are
            accepted) and every column in ``features`` (numeric or boolean; null = missing).
        features: feature column names; the model's feature order.
        label: name of the label column.
        group: name of the group (user) column.
        config: hyperparameters and folds.
        show_progress: show a tqdm bar over the folds.
        base: a column (e.g. the best first-stage score) every booster starts from as its
            ``init_score``: the trees then learn corrections of that ranking, so a small label
            window cannot make the ranker much worse than it; None = start from zero.

    Returns:
        ``(ensemble, report)``: the fold boosters averaged by :class:`RankerEnsemble`, and a
        :class:`RankerReport`.

    Raises:
        ValueError: a column is missing, the labels are null, negative, non-integer or above
            :data:`MAX_LABEL`, ``features`` is empty or holds ``label``/``group``, no group has a
            positive label, or there are too few such groups for the folds.
    """
    return fit_rankers(table, features, [base], label=label, group=group, config=config,
                       show_progress=show_progress)[base]


def fit_rankers(
    table: pl.DataFrame,
    features: Sequence[str],
    bases: Sequence[str | None],
    *,
    label: str = C.LABEL,
    group: str = C.USER_IDX,
    config: RankerConfig = RankerConfig(),
    show_progress: bool = False,
) -> dict[str | None, tuple[RankerEnsemble, RankerReport]]:
    """:func:`fit_ranker` for each start in ``bases``, on the same folds, all boosters in one pool.

    Comparing starts (from zero, from the best first-stage score) needs a booster per fold for
    each; trained in one pool of single-threaded boosters, the machine's cores stay busy while
    the longest of them finishes (three folds on two cores would leave one idle half the time).
    Each ensemble is the one :func:`fit_ranker` returns for that ``base``.

    Returns:
        ``{base: (ensemble, report)}``, in the order of ``bases`` (a repeated start is trained once).
    """
    start = time.perf_counter()
    features, bases = list(features), list(dict.fromkeys(bases))
    _check_inputs(table, [*features, *(b for b in bases if b is not None and b not in features)], label, group)
    has_positive = table.group_by(group).agg((pl.col(label) > 0).any().alias("_pos"))
    used_groups = has_positive.filter(pl.col("_pos")).get_column(group)
    n_dropped = has_positive.height - used_groups.len()
    if used_groups.len() == 0:
        raise ValueError(
            f"no group ({group}) has a positive {label!r}: the label window has no positives; "
            "widen the label window or check the join of labels onto candidates"
        )
    assignment = _assign_folds(used_groups, group, config)
    data = _canonical_order(table.join(assignment, on=group, how="inner"), features, label, group, config.seed)
    logger.debug("fit_ranker: %d groups used, %d all-zero groups dropped, %d rows", used_groups.len(), n_dropped,
                data.height)

    # one single-threaded booster per (start, fold), side by side on the machine's cores: the same
    # models as one after the other (each is deterministic with one thread), in a fraction of the time
    from tqdm.auto import tqdm

    # the fold data are binned one after the other (LightGBM's compact form; the float copies are
    # dropped at once), so only the training runs side by side, not the memory of the raw tables
    jobs = [(base, k) for base in bases for k in range(config.n_folds)]
    prepared = [_fold_sets(data, k, features, label, group, config, base) for base, k in jobs]
    n_rows_used = data.height
    del data
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(jobs), desc="ranker folds", unit="fold",
                                                   disable=bars(show_progress), leave=False) as bar:
        pending = [pool.submit(_fit_fold, k, sets, config) for (_, k), sets in zip(jobs, prepared, strict=True)]
        for future in as_completed(pending):
            future.result()
            bar.update()
        fitted = [future.result() for future in pending]
    seconds = time.perf_counter() - start
    out: dict[str | None, tuple[RankerEnsemble, RankerReport]] = {}
    for base in bases:
        mine = [fit for (b, _), fit in zip(jobs, fitted, strict=True) if b == base]
        reports = [report for _, report in mine]
        for report in reports:
            logger.debug("fit_ranker%s: fold %d best iteration %d, ndcg@%d %.4f", f" (from {base})" if base else "",
                        report.fold, report.best_iteration, config.eval_at, report.best_ndcg)
        ensemble = RankerEnsemble([booster for booster, _ in mine], features, [r.best_iteration for r in reports],
                                  base)
        out[base] = ensemble, RankerReport(
            folds=reports, assignment=assignment, metric=f"ndcg@{config.eval_at}", n_groups_used=used_groups.len(),
            n_groups_dropped=n_dropped, n_rows=table.height, n_rows_used=n_rows_used, fit_seconds=seconds,
            features=features,
        )
    return out


def cross_validated_iterations(report: RankerReport) -> list[int]:
    """Per fold, the tree count its *other* folds early-stopped at (their median; its own with one fold).

    A fold's best iteration is picked on the very users it is then judged by, so its best NDCG
    is the top of a noisy curve: optimistic, and most for a start whose curve peaks after a few
    trees. Judged at the tree count the other folds chose, each fold's users score what the
    ranker would do on users nobody looked at (nested cross-validation, with no extra training).
    """
    best = report.best_iterations
    if len(best) == 1:
        return list(best)
    return [max(1, int(round(float(np.median(best[:k] + best[k + 1:]))))) for k in range(len(best))]


def out_of_fold(ensemble: RankerEnsemble, report: RankerReport, table: pl.DataFrame, group: str = C.USER_IDX,
                iterations: Sequence[int] | None = None) -> np.ndarray:
    """Each row's score by the fold booster that never trained on its user (the one that early-stopped on it).

    The cross-fitted scores of every training user: what judging the ranker on users it did not
    learn from needs, without holding users out of it. Rows of users outside the folds (their
    labels were all zero) score NaN.

    Args:
        iterations: trees each fold booster uses (e.g. :func:`cross_validated_iterations`);
            None = its own best iteration (what the ensemble serves).

    Returns:
        float64 [table.height], in the row order of ``table`` (plus the base column, as ``predict``).
    """
    folds = table.select(group).join(report.assignment, on=group, how="left", maintain_order="left")
    fold = folds.get_column(_FOLD).fill_null(-1).to_numpy()
    matrix = feature_matrix(table, ensemble.features)
    out = np.full(table.height, np.nan)
    trees = ensemble.best_iterations if iterations is None else list(iterations)
    for k, (booster, best) in enumerate(zip(ensemble.boosters, trees, strict=True)):
        rows = fold == k
        if rows.any():
            out[rows] = booster.predict(matrix[rows], num_iteration=best, raw_score=True)
    return out + base_scores(table, ensemble.base) if ensemble.base is not None else out


def _check_inputs(table: pl.DataFrame, features: list[str], label: str, group: str) -> None:
    missing = [name for name in (group, label, *features) if name not in table.columns]
    if missing:
        raise ValueError(f"the ranker table lacks column(s) {', '.join(missing)}; it has {', '.join(table.columns)}")
    if not features:
        raise ValueError("features is empty; pass the feature column names to train on")
    if len(set(features)) != len(features):
        raise ValueError(f"features holds duplicate names: {features}")
    for reserved in (label, group):
        if reserved in features:
            raise ValueError(f"features must not include the {reserved!r} column")
    if table.get_column(group).null_count():
        raise ValueError(f"group column {group!r} has nulls; every row must belong to a user")
    _check_labels(table.get_column(label))
    feature_matrix(table.head(0), features)  # dtype check only: names non-numeric columns


def _check_labels(labels: pl.Series) -> None:
    name = labels.name
    if labels.null_count():
        raise ValueError(f"label column {name!r} has {labels.null_count()} null(s); use 0 for no interaction")
    if labels.dtype.is_float():
        if not (labels.is_finite() & (labels == labels.floor())).all():
            raise ValueError(
                f"label column {name!r} has non-integer values; lambdarank needs integer relevance grades "
                "(0 none, 1 click, 2 purchase...)"
            )
    elif not labels.dtype.is_integer():
        raise ValueError(f"label column {name!r} has dtype {labels.dtype}; expected non-negative integers")
    if labels.len() and labels.min() < 0:
        raise ValueError(f"label column {name!r} has negative values (min {labels.min()}); grades must be >= 0")
    if labels.len() and labels.max() > MAX_LABEL:
        raise ValueError(
            f"label column {name!r} has grades up to {labels.max()}; "
            f"lambdarank's default label_gain covers 0..{MAX_LABEL}"
        )


def _assign_folds(used_groups: pl.Series, group: str, config: RankerConfig) -> pl.DataFrame:
    """Seeded shuffle of the sorted groups, cut into folds (or one held-out share)."""
    groups = used_groups.sort()
    n = groups.len()
    order = np.random.default_rng(config.seed).permutation(n)
    if config.n_folds == 1:
        n_valid = int(round(config.valid_fraction * n))
        if n < 2:
            raise ValueError(f"only {n} group(s) with a positive label; early stopping needs at least 2")
        n_valid = min(max(n_valid, 1), n - 1)
        fold = np.full(n, None, dtype=object)
        fold[order[:n_valid]] = 0
    else:
        if n < config.n_folds:
            raise ValueError(
                f"only {n} group(s) with a positive label for RankerConfig.n_folds={config.n_folds}; "
                "lower n_folds or provide more users"
            )
        fold = np.empty(n, dtype=np.int64)
        for k, members in enumerate(np.array_split(order, config.n_folds)):
            fold[members] = k
    return pl.DataFrame({group: groups, _FOLD: pl.Series(_FOLD, list(fold), dtype=pl.Int64)})


def _canonical_order(data: pl.DataFrame, features: list[str], label: str, group: str, seed: int) -> pl.DataFrame:
    """Rows grouped contiguously, in an order independent of the input order.

    LightGBM needs each group's rows contiguous, and its lambdarank breaks score ties by row
    position, so the input order would leak into the model. Sorting on every column makes the
    order canonical (identical rows are interchangeable); a seeded shuffle within each group
    then keeps that order from correlating with any feature or the label.
    """
    data = data.sort(group, *features, label, nulls_last=True)
    key = np.random.default_rng(seed).permutation(data.height)
    return data.with_columns(pl.Series(_KEY, key)).sort(group, _KEY).drop(_KEY)


def _lgb_dataset(rows: pl.DataFrame, features: list[str], label: str, group: str,
                 reference: lgb.Dataset | None = None, base: str | None = None,
                 params: dict[str, object] | None = None) -> lgb.Dataset:
    sizes = rows.group_by(group, maintain_order=True).len().get_column("len").to_numpy()
    return lgb.Dataset(
        feature_matrix(rows, features), label=rows.get_column(label).cast(pl.Float64).to_numpy(), group=sizes,
        feature_name=features, reference=reference, free_raw_data=True, params=params,
        init_score=base_scores(rows, base) if base is not None else None,
    )


@dataclass
class _FoldSets:
    """One fold's LightGBM data sets, already binned, and the counts its report needs."""

    train: lgb.Dataset
    valid: lgb.Dataset
    n_train_groups: int
    n_valid_groups: int
    n_train_rows: int
    n_valid_rows: int


def _fold_sets(data: pl.DataFrame, k: int, features: list[str], label: str, group: str, config: RankerConfig,
               base: str | None = None) -> _FoldSets:
    in_valid = pl.col(_FOLD).eq(k).fill_null(False)
    train_rows, valid_rows = data.filter(~in_valid), data.filter(in_valid)
    params = config.lgb_params()  # binning reads min_data_in_leaf and friends: the training's own values
    train_set = _lgb_dataset(train_rows, features, label, group, base=base, params=params).construct()
    valid_set = _lgb_dataset(valid_rows, features, label, group, reference=train_set, base=base,
                             params=params).construct()
    return _FoldSets(train_set, valid_set, train_rows.get_column(group).n_unique(),
                     valid_rows.get_column(group).n_unique(), train_rows.height, valid_rows.height)


def _fit_fold(k: int, sets: _FoldSets, config: RankerConfig) -> tuple[lgb.Booster, FoldReport]:
    curves: dict[str, dict[str, list[float]]] = {}
    booster = lgb.train(
        config.lgb_params(), sets.train, num_boost_round=config.n_estimators,
        valid_sets=[sets.train, sets.valid], valid_names=["train", "valid"],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False), lgb.record_evaluation(curves)],
    )
    metric = f"ndcg@{config.eval_at}"
    best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
    valid_curve = [float(v) for v in curves["valid"][metric]]
    return booster, FoldReport(
        fold=k, best_iteration=best, best_ndcg=valid_curve[best - 1], valid_ndcg=valid_curve,
        train_ndcg=[float(v) for v in curves["train"][metric]],
        n_train_groups=sets.n_train_groups, n_valid_groups=sets.n_valid_groups,
        n_train_rows=sets.n_train_rows, n_valid_rows=sets.n_valid_rows,
    )
