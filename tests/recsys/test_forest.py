"""The compiled forest scores exactly as LightGBM does: the same doubles, or it steps aside."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from recsys.forest import Forest
from recsys.ranker import RankerEnsemble


def _data(seed: int, rows: int = 3000, features: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features with NaNs in training (splits with ``NaN`` missing values) and without (``None``), a
    few-valued one (thresholds met exactly), and a lambdarank label in groups of 30."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    x[:, 1] = rng.integers(-3, 4, rows)  # ties at the thresholds
    x[rng.random(rows) < 0.2, 2] = np.nan  # NaN seen in training: default sides learned
    x[rng.random(rows) < 0.1, 3] = np.nan
    signal = x[:, 0] + 0.5 * x[:, 1] - np.nan_to_num(x[:, 2], nan=1.5) + 0.3 * np.nan_to_num(x[:, 3])
    label = np.clip(np.round(signal + rng.normal(size=rows)), 0, 3)
    return x, label, np.full(rows // 30, 30)


def _booster(seed: int, **params) -> lgb.Booster:
    x, label, group = _data(seed)
    settings = {"objective": "lambdarank", "num_leaves": 31, "min_data_in_leaf": 5, "verbose": -1,
                "num_threads": 1, "seed": seed, **params}
    return lgb.train(settings, lgb.Dataset(x, label, group=group), num_boost_round=25)


def _queries(seed: int, features: int = 6) -> np.ndarray:
    """Rows to score: fresh values, NaN in every feature (also where training had none: read as 0),
    infinities, exact zeros and the booster's own thresholds."""
    rng = np.random.default_rng(seed + 100)
    x = rng.normal(size=(4000, features))
    x[:, 1] = rng.integers(-4, 5, len(x))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.02] = np.inf
    x[rng.random(x.shape) < 0.02] = -np.inf
    x[rng.random(x.shape) < 0.05] = 0.0
    return x


def _thresholds(booster: lgb.Booster) -> dict[int, list[float]]:
    found: dict[int, list[float]] = {}

    def walk(node: dict) -> None:
        if "split_index" in node:
            found.setdefault(node["split_feature"], []).append(node["threshold"])
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_raw_scores_as_lightgbm_to_the_bit(seed: int) -> None:
    booster = _booster(seed)
    x = _queries(seed)
    for feature, values in _thresholds(booster).items():  # values exactly at a split go left
        x[: len(values), feature] = values
    for iterations in (1, 7, booster.current_iteration()):
        forest = Forest.from_booster(booster, iterations)
        assert forest is not None
        want = booster.predict(x, num_iteration=iterations, raw_score=True, num_threads=1)
        np.testing.assert_array_equal(forest.predict(np.ascontiguousarray(x.T)), want)


def test_a_booster_read_back_from_its_text_scores_the_same() -> None:
    """The registry stores LightGBM's text: the forest of the reloaded booster matches it too."""
    booster = lgb.Booster(model_str=_booster(3).model_to_string())
    x = _queries(3)
    want = booster.predict(x, raw_score=True, num_threads=1)
    np.testing.assert_array_equal(Forest.from_booster(booster, booster.current_iteration()).predict(x.T), want)


def test_trees_without_a_split_and_more_rows_than_a_run() -> None:
    booster = _booster(4, min_data_in_leaf=10_000)  # no split can hold that many rows: every tree is one leaf
    x = np.tile(_queries(4), (3, 1))  # past the compiled loop's run of rows
    forest = Forest.from_booster(booster, booster.current_iteration())
    np.testing.assert_array_equal(forest.predict(x.T), booster.predict(x, raw_score=True, num_threads=1))


@pytest.mark.parametrize("params", [
    {"num_leaves": 80, "min_data_in_leaf": 2},  # more leaves than a 64-bit mask
    {"zero_as_missing": True},  # zeros take the default side: not compiled
    {"linear_tree": True, "objective": "regression"},  # a leaf's value depends on the row
], ids=["80 leaves", "zero as missing", "linear leaves"])
def test_what_it_cannot_reproduce_is_left_to_lightgbm(params: dict) -> None:
    booster = _booster(5, **params)
    assert Forest.from_booster(booster, booster.current_iteration()) is None
    features = [f"f{i}" for i in range(6)]
    ensemble = RankerEnsemble([booster], features)
    table = pl.DataFrame(_queries(5), schema=features)
    want = booster.predict(_queries(5), raw_score=True, num_threads=1)
    np.testing.assert_array_equal(ensemble.predict(table), want)


def test_categorical_splits_are_left_to_lightgbm() -> None:
    x, label, group = _data(6)
    x[:, 4] = np.random.default_rng(6).integers(0, 5, len(x))
    label = label + (x[:, 4] == 2)
    booster = lgb.train({"objective": "lambdarank", "verbose": -1, "num_threads": 1, "min_data_per_group": 5,
                         "cat_smooth": 1}, lgb.Dataset(x, label, group=group, categorical_feature=[4]),
                        num_boost_round=10)
    assert '"decision_type": "=="' in str(booster.dump_model()).replace("'", '"')
    assert Forest.from_booster(booster, booster.current_iteration()) is None


def test_the_ensemble_scores_with_the_forests_as_with_lightgbm() -> None:
    """Through the public ranker: the mean of the fold boosters' raw scores, each at its best iteration."""
    boosters = [_booster(7), _booster(8)]
    features = [f"f{i}" for i in range(6)]
    ensemble = RankerEnsemble(boosters, features, best_iterations=[20, 9])
    assert ensemble._forests is not None
    x = _queries(7)
    table = pl.DataFrame(x, schema=features).with_columns(pl.col("f2").fill_nan(None))  # nulls read as NaN
    want = (boosters[0].predict(x, num_iteration=20, raw_score=True, num_threads=1)
            + boosters[1].predict(x, num_iteration=9, raw_score=True, num_threads=1)) / 2
    np.testing.assert_array_equal(ensemble.predict(table), want)
    assert ensemble.predict(table.head(0)).shape == (0,)
