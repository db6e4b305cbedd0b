"""LightGBM boosters scored without walking their trees: every split of a tree tested at once, for many rows.

An export block asks the ranker for 150,000 rows x 89 trees (1M users, 100k items); LightGBM walks
each tree from the root for each row, and at ~6 levels a tree, branching on each unpredictable
split, that was a quarter of the block (0.26 s on one core). Here a tree is scored the QuickScorer
way (Lucchese et al., SIGIR 2015): its leaves are numbered left to right, and every split whose
test sends a row right rules out the leaves of its left subtree (a bit mask). A row's leaf is the
lowest leaf no split ruled out. Each split is then one comparison over a run of rows of one
feature (contiguous: the matrix is feature-major), with no branch and no dependence between
rows, which the compiler vectorises: 0.08 s for the same block, with the same leaves, so the same
scores to the bit (values read as LightGBM reads them, a value within 1e-35 of 0 as 0; each row sums
its trees' leaf values in tree order, as LightGBM does).

Only what that reproduces exactly is compiled: numerical ``<=`` splits whose missing values are
``None`` (NaN read as 0) or ``NaN`` (NaN to the default side), one tree per iteration, no linear
leaves, at most 64 leaves a tree. Anything else (:meth:`Forest.from_booster` returns None) is
scored by LightGBM itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.compiled import jit

__all__ = ["Forest"]

_MAX_LEAVES = 64
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)
_LOWEST_BIT = np.zeros(64, dtype=np.int64)
_LOWEST_BIT[[((1 << i) * int(_DE_BRUIJN) & (2**64 - 1)) >> 58 for i in range(64)]] = np.arange(64)
"""Index of a power of two ``2**i``, looked up by ``(2**i * de Bruijn) >> 58`` (no count-trailing-zeros in numba)."""
_ZERO = float(np.float32(1e-35))
"""LightGBM reads a value within this of 0 as 0 (``kZeroThreshold``, a float): so does the forest."""
_ROWS = 512
"""Rows scored together: each split's feature run (4 KB) and the rows' masks stay in the first-level cache."""


class _Unsupported(Exception):
    """A split or tree this module does not reproduce exactly."""


@dataclass(frozen=True)
class Forest:
    """One booster's first trees as flat arrays: splits by tree, each with the leaves it rules out."""

    feature: np.ndarray
    """int64 [n_splits]: the split's feature (column of the feature-major matrix)."""
    threshold: np.ndarray
    """float64 [n_splits]: a row goes left when its value is ``<=`` this."""
    missing_right: np.ndarray
    """bool [n_splits]: where a NaN goes (read as 0 under ``None`` missing values, the default side under ``NaN``)."""
    ruled_out: np.ndarray
    """uint64 [n_splits]: all bits but the split's left subtree's leaves (a row going right keeps only these)."""
    tree_splits: np.ndarray
    """int64 [n_trees + 1]: tree ``t``'s splits are ``tree_splits[t]:tree_splits[t + 1]``."""
    leaf_values: np.ndarray
    """float64 [n_leaves]: every tree's leaves, left to right, tree after tree."""
    tree_leaves: np.ndarray
    """int64 [n_trees]: where tree ``t``'s leaves start in :attr:`leaf_values`."""

    @classmethod
    def from_booster(cls, booster: Any, iterations: int) -> Forest | None:
        """The booster's first ``iterations`` trees, or None when one of them is not reproduced exactly.

        Thresholds and leaf values are read from LightGBM's JSON dump, which prints doubles with 17
        significant digits: they parse back to the same doubles.
        """
        model = booster.dump_model(num_iteration=iterations)
        if model.get("num_tree_per_iteration", 1) != 1:
            return None
        parts = _Parts()
        try:
            for tree in model["tree_info"]:
                parts.add_tree(tree["tree_structure"])
        except _Unsupported:
            return None
        return parts.forest()

    def predict(self, by_feature: np.ndarray) -> np.ndarray:
        """float64 [n_rows] raw scores (LightGBM's ``predict(..., raw_score=True)``) of a feature-major matrix.

        Args:
            by_feature: float64 [n_features, n_rows], NaN for a missing value.
        """
        out = np.zeros(by_feature.shape[1], dtype=np.float64)
        _score(np.ascontiguousarray(by_feature, dtype=np.float64), self.feature, self.threshold, self.missing_right,
               self.ruled_out, self.tree_splits, self.leaf_values, self.tree_leaves, _LOWEST_BIT, out)
        return out


class _Parts:
    """The flat arrays of :class:`Forest`, filled tree by tree."""

    def __init__(self) -> None:
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.missing_right: list[bool] = []
        self.ruled_out: list[int] = []
        self.tree_splits: list[int] = [0]
        self.leaf_values: list[float] = []
        self.tree_leaves: list[int] = []

    def add_tree(self, root: dict) -> None:
        self.tree_leaves.append(len(self.leaf_values))
        self._leaves(root, first=0)
        if len(self.leaf_values) - self.tree_leaves[-1] > _MAX_LEAVES:
            raise _Unsupported
        self.tree_splits.append(len(self.feature))

    def _leaves(self, node: dict, first: int) -> int:
        """Add ``node``'s subtree, whose leaves are numbered from ``first``; returns how many leaves it has."""
        if "split_index" not in node:
            if "leaf_coeff" in node:  # a linear leaf: its value depends on the row
                raise _Unsupported
            self.leaf_values.append(float(node["leaf_value"]))
            return 1
        if node["decision_type"] != "<=" or node["missing_type"] not in ("None", "NaN"):
            raise _Unsupported
        at = len(self.feature)
        threshold = float(node["threshold"])
        self.feature.append(int(node["split_feature"]))
        self.threshold.append(threshold)
        # None: a NaN is read as 0.0 and compared; NaN: it takes the default side
        self.missing_right.append(not node["default_left"] if node["missing_type"] == "NaN" else not 0.0 <= threshold)
        self.ruled_out.append(0)
        left = self._leaves(node["left_child"], first)
        self.ruled_out[at] = (2**64 - 1) ^ (((1 << left) - 1) << first)  # a tree past 64 leaves is refused whole
        return left + self._leaves(node["right_child"], first + left)

    def forest(self) -> Forest:
        return Forest(np.array(self.feature, dtype=np.int64), np.array(self.threshold, dtype=np.float64),
                      np.array(self.missing_right, dtype=np.bool_), np.array(self.ruled_out, dtype=np.uint64),
                      np.array(self.tree_splits, dtype=np.int64), np.array(self.leaf_values, dtype=np.float64),
                      np.array(self.tree_leaves, dtype=np.int64))


@jit
def _score(by_feature, feature, threshold, missing_right, ruled_out, tree_splits, leaf_values, tree_leaves,
           lowest_bit, out):  # pragma: no cover - compiled
    n_features, n = by_feature.shape
    alive = np.empty(_ROWS, dtype=np.uint64)
    block = np.empty((n_features, _ROWS), dtype=np.float64)
    for low in range(0, n, _ROWS):
        high = min(low + _ROWS, n)
        rows = high - low
        for f in range(n_features):  # the run's rows as LightGBM reads them, once for every tree
            for j in range(rows):
                x = by_feature[f, low + j]
                block[f, j] = 0.0 if abs(x) <= _ZERO else x
        for tree in range(len(tree_splits) - 1):
            alive[:rows] = _ALL
            for split in range(tree_splits[tree], tree_splits[tree + 1]):
                values = block[feature[split], :rows]
                cut, nan_right, keep = threshold[split], missing_right[split], ruled_out[split]
                for j in range(rows):
                    x = values[j]
                    right = (x > cut) | (nan_right & (x != x))
                    alive[j] &= keep if right else _ALL
            first = tree_leaves[tree]
            for j in range(rows):
                mask = alive[j]
                lowest = mask & (~mask + np.uint64(1))
                out[low + j] += leaf_values[first + lowest_bit[(lowest * _DE_BRUIJN) >> np.uint64(58)]]
