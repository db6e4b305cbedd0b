"""The learning-to-rank stage at scoring time: an ensemble of LightGBM lambdarank boosters.

``training.fit_ranker.fit_ranker`` trains one booster per cross-validation fold; this module
only scores with them, so export and serving load it without any training code::

    ensemble = RankerEnsemble.load("ranker.json")
    scores = ensemble.predict(candidates)        # float64 [n_rows], higher ranks first

The score of a row is the mean of the boosters' raw scores, each booster cut at its
early-stopping iteration. Averaging the fold models is deliberate: it is more stable than any
single fold model, and nothing is refitted on all users afterwards.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl

from recsys.forest import Forest
from recsys.threads import block_threads

__all__ = ["FORMAT", "RankerEnsemble", "feature_matrix"]

FORMAT = "recsys.ranker.v1"
"""Tag written into :meth:`RankerEnsemble.to_dict`; ``from_dict`` refuses anything else."""


class RankerEnsemble:
    """Fold boosters scoring candidate rows by the mean of their raw scores.

    Args:
        boosters: one trained ``lightgbm.Booster`` per fold, all on ``features``.
        features: feature column names, in the order the boosters were trained on.
        best_iterations: number of trees each booster scores with (its early-stopping
            iteration); defaults to each booster's ``best_iteration``, or all its trees.
        base: column whose values every booster started from (LightGBM ``init_score``) and
            which scoring therefore adds back; None = boosting started from zero.

    Raises:
        ValueError: no boosters, duplicate feature names, a booster with a different number
            of features, or a best iteration outside ``1..num_trees``.
    """

    def __init__(
        self,
        boosters: Sequence[lgb.Booster],
        features: Sequence[str],
        best_iterations: Sequence[int] | None = None,
        base: str | None = None,
    ) -> None:
        self.base = base
        """Column added to the boosters' mean score (the ranking they learned corrections of), or None."""
        self.boosters: list[lgb.Booster] = list(boosters)
        """The fold models."""
        self.features: list[str] = list(features)
        """Feature column names in training order."""
        if not self.boosters:
            raise ValueError("RankerEnsemble needs at least one booster; fit_ranker() builds one per fold")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"feature names must be unique; got {self.features}")
        if best_iterations is None:
            best_iterations = [b.best_iteration if b.best_iteration > 0 else b.current_iteration() for b in boosters]
        self.best_iterations: list[int] = [int(i) for i in best_iterations]
        """Trees used by each booster when scoring."""
        if len(self.best_iterations) != len(self.boosters):
            raise ValueError(
                f"got {len(self.best_iterations)} best iterations for {len(self.boosters)} boosters; "
                "pass one per booster"
            )
        for k, (booster, best) in enumerate(zip(self.boosters, self.best_iterations, strict=True)):
            if booster.num_feature() != len(self.features):
                raise ValueError(
                    f"booster {k} was trained on {booster.num_feature()} features but {len(self.features)} "
                    "feature names were given"
                )
            if not 1 <= best <= booster.current_iteration():
                raise ValueError(f"best iteration {best} of booster {k} is outside 1..{booster.current_iteration()}")

    @cached_property
    def _forests(self) -> list[Forest] | None:
        """The boosters compiled for scoring (:mod:`recsys.forest`), or None when one is not reproduced exactly."""
        forests = [Forest.from_booster(b, best) for b, best in zip(self.boosters, self.best_iterations, strict=True)]
        return None if any(f is None for f in forests) else forests

    def __repr__(self) -> str:
        return (
            f"RankerEnsemble(n_boosters={len(self.boosters)}, n_features={len(self.features)}, "
            f"best_iterations={self.best_iterations})"
        )

    def predict(self, table: pl.DataFrame) -> np.ndarray:
        """Ranking scores of candidate rows: the mean raw score over the fold boosters.

        Scores only order candidates within a group (user); they are not probabilities.

        Args:
            table: one row per candidate, with every column of :attr:`features` (numeric or
                boolean; nulls are treated as missing values). Other columns are ignored.

        Returns:
            float64 [n_rows] scores, in the row order of ``table``.

        Raises:
            ValueError: ``table`` lacks feature columns (all of them are named), or one is
                neither numeric nor boolean.
        """
        forests = self._forests
        matrix = feature_matrix(table, self.features, by_feature=forests is not None)
        if table.height == 0:
            return np.zeros(0, dtype=np.float64)
        total = np.zeros(table.height, dtype=np.float64)
        if forests is not None:  # the same leaves as LightGBM's, summed in the same order: the same scores
            for forest in forests:
                total += forest.predict(matrix)
        else:
            for booster, best in zip(self.boosters, self.best_iterations, strict=True):
                # trained single-threaded for reproducibility; scoring may use every core a block may (same result)
                total += booster.predict(matrix, num_iteration=best, raw_score=True, num_threads=block_threads())
        total /= len(self.boosters)
        return total + base_scores(table, self.base) if self.base is not None else total

    def contributions(self, table: pl.DataFrame) -> np.ndarray:
        """Per-row feature contributions (SHAP values, LightGBM ``pred_contrib``) averaged over the boosters.

        Each booster's contributions are taken up to its best iteration, like :meth:`predict`.
        A row's contributions plus its bias add up to the boosters' mean raw score, so
        ``contributions(t).sum(axis=1)`` equals ``predict(t)`` when :attr:`base` is None, and
        ``predict(t) - base_scores(t, base)`` otherwise (the base column is not a tree input:
        it is added outside the boosters).

        Args:
            table: candidate rows, as for :meth:`predict`.

        Returns:
            float64 [n_rows, len(features) + 1]: one column per feature of :attr:`features`, in
            that order, then the bias (the boosters' mean expected value) last.

        Raises:
            ValueError: as :meth:`predict`.
        """
        matrix = feature_matrix(table, self.features)
        total = np.zeros((matrix.shape[0], len(self.features) + 1), dtype=np.float64)
        if matrix.shape[0] == 0:
            return total
        for booster, best in self._pairs():
            total += np.asarray(booster.predict(matrix, num_iteration=best, pred_contrib=True), dtype=np.float64)
        return total / len(self.boosters)

    def importance(self) -> pl.DataFrame:
        """Feature importance averaged over the boosters (each up to its best iteration).

        Returns:
            One row per feature, sorted by ``gain`` descending: ``feature`` str, ``gain``
            float64 (mean total loss reduction of the splits on the feature), ``split``
            float64 (mean number of splits), ``gain_share`` float64 (``gain`` / total gain,
            summing to 1; all 0 when no booster made a split).
        """
        gain = np.mean([b.feature_importance("gain", iteration=it) for b, it in self._pairs()], axis=0)
        split = np.mean([b.feature_importance("split", iteration=it) for b, it in self._pairs()], axis=0)
        total = gain.sum()
        share = gain / total if total > 0 else np.zeros_like(gain)
        return pl.DataFrame(
            {"feature": self.features, "gain": gain, "split": split.astype(np.float64), "gain_share": share},
            schema={"feature": pl.String, "gain": pl.Float64, "split": pl.Float64, "gain_share": pl.Float64},
        ).sort("gain", "feature", descending=[True, False])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: format tag, feature names, best iterations, booster model strings.

        Each booster is written up to its best iteration only (the trees scoring uses).
        """
        return {
            "format": FORMAT,
            "features": list(self.features),
            "best_iterations": list(self.best_iterations),
            "base": self.base,
            "boosters": [b.model_to_string(num_iteration=it) for b, it in self._pairs()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankerEnsemble:
        """Rebuild an ensemble from :meth:`to_dict` output.

        Raises:
            ValueError: ``data`` is not a ranker dict of this format (missing keys, other tag).
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a saved RankerEnsemble: expected format {FORMAT!r}, found {found!r}")
        missing = [key for key in ("features", "best_iterations", "boosters") if key not in data]
        if missing:
            raise ValueError(f"saved RankerEnsemble is missing key(s) {', '.join(missing)}; re-export the ranker")
        boosters = [lgb.Booster(model_str=text) for text in data["boosters"]]
        return cls(boosters, data["features"], data["best_iterations"], data.get("base"))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON, atomically.

        The JSON goes to a temporary file in the same directory, which is then renamed over
        ``path``: a run killed mid-write leaves the old file (or none), never half a file.

        Args:
            path: destination file; its directory must exist.

        Returns:
            ``path`` as a ``Path``.
        """
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self.to_dict(), out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RankerEnsemble:
        """Read an ensemble written by :meth:`save`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file is not JSON written by :meth:`save`.
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a saved RankerEnsemble (invalid JSON: {exc})") from exc
        return cls.from_dict(data)

    def _pairs(self) -> list[tuple[lgb.Booster, int]]:
        return list(zip(self.boosters, self.best_iterations, strict=True))


def base_scores(table: pl.DataFrame, base: str) -> np.ndarray:
    """float64 [n_rows]: the ``base`` column as LightGBM's starting scores; missing values sit below all others.

    Raises:
        ValueError: ``table`` has no column ``base``.
    """
    if base not in table.columns:
        raise ValueError(f"the base score column {base!r} is missing from the table")
    values = table.get_column(base).cast(pl.Float64).fill_nan(None)
    low = values.min()
    return values.fill_null((low - 1.0) if low is not None else 0.0).to_numpy()


def feature_matrix(table: pl.DataFrame, features: Sequence[str], by_feature: bool = False) -> np.ndarray:
    """The feature columns of ``table`` as a float64 C-ordered matrix, nulls as NaN.

    Args:
        table: frame holding every column in ``features``.
        features: column names, in matrix column order.
        by_feature: the transpose instead (one row per feature: what :class:`recsys.forest.Forest` reads).

    Returns:
        float64 [n_rows, len(features)], or [len(features), n_rows] when ``by_feature``.

    Raises:
        ValueError: columns of ``features`` are missing from ``table`` (all are named), or are
            neither numeric nor boolean.
    """
    missing = [name for name in features if name not in table.columns]
    if missing:
        raise ValueError(
            f"the table lacks feature column(s) {', '.join(missing)}; the ranker needs "
            f"{', '.join(features)} (build them with the same feature pipeline as in training)"
        )
    bad = [f"{name} ({table.schema[name]})" for name in features
           if not (table.schema[name].is_numeric() or table.schema[name] == pl.Boolean)]
    if bad:
        raise ValueError(f"feature column(s) {', '.join(bad)} are not numeric or boolean; encode them as numbers")
    if not features:
        return np.zeros((0, table.height) if by_feature else (table.height, 0), dtype=np.float64)
    exprs = [pl.col(name).cast(pl.Float64).fill_null(float("nan")) for name in features]
    if by_feature:  # polars holds columns: the Fortran-ordered matrix's transpose is C-ordered at no cost
        return table.select(exprs).to_numpy(order="fortran", writable=True).T
    return table.select(exprs).to_numpy(order="c", writable=True)
