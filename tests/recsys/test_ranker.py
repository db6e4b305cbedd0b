"""RankerEnsemble: scoring, importance and persistence, on boosters trained here with LightGBM directly."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import polars as pl
import pytest

from recsys.ranker import FORMAT, RankerEnsemble

FEATURES = ["f_signal", "f_noise", "f_count"]


def _table(n_users: int = 60, n_items: int = 20, seed: int = 0) -> pl.DataFrame:
    """``n_users`` groups of ``n_items`` rows; the top-3 rows by ``f_signal`` are relevant."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), n_items)
    signal = rng.random(users.size)
    rank = np.argsort(np.argsort(-signal.reshape(n_users, n_items), axis=1), axis=1).ravel()
    return pl.DataFrame({
        "user_idx": users,
        "f_signal": signal,
        "f_noise": rng.normal(size=users.size),
        "f_count": rng.integers(0, 4, users.size),
        "label": np.where(rank == 0, 2, np.where(rank < 3, 1, 0)),
    })


def _booster(table: pl.DataFrame, seed: int, rounds: int = 5) -> lgb.Booster:
    data = lgb.Dataset(
        table.select(FEATURES).to_numpy().astype(np.float64), label=table["label"].to_numpy(),
        group=table.group_by("user_idx", maintain_order=True).len()["len"].to_numpy(), feature_name=FEATURES,
    )
    params = {"objective": "lambdarank", "num_leaves": 7, "min_data_in_leaf": 10, "feature_fraction": 0.7,
              "seed": seed, "deterministic": True, "force_col_wise": True, "num_threads": 1, "verbosity": -1}
    return lgb.train(params, data, num_boost_round=rounds)


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return _table()


@pytest.fixture(scope="module")
def ensemble(table: pl.DataFrame) -> RankerEnsemble:
    return RankerEnsemble([_booster(table, seed=1), _booster(table, seed=2)], FEATURES, best_iterations=[5, 3])


def test_predict_is_mean_of_booster_raw_scores_at_best_iteration(ensemble: RankerEnsemble, table: pl.DataFrame):
    x = table.select(FEATURES).to_numpy().astype(np.float64)
    expected = np.mean([b.predict(x, num_iteration=it, raw_score=True)
                        for b, it in zip(ensemble.boosters, [5, 3], strict=True)], axis=0)
    scores = ensemble.predict(table)
    assert scores.dtype == np.float64 and scores.shape == (table.height,)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    # best_iterations matter: booster 2 cut at 3 trees differs from all 5 trees
    assert not np.allclose(expected, np.mean([b.predict(x, raw_score=True) for b in ensemble.boosters], axis=0))


def test_predict_ignores_column_order_and_extra_columns_and_casts(ensemble: RankerEnsemble, table: pl.DataFrame):
    expected = ensemble.predict(table)
    shuffled = table.select("label", "f_count", "f_signal", "user_idx", "f_noise").with_columns(
        pl.col("f_count").cast(pl.Int8), pl.col("f_signal").cast(pl.Float32).cast(pl.Float64), pl.lit("x").alias("s")
    )
    np.testing.assert_array_equal(ensemble.predict(shuffled), expected)


def test_predict_nulls_are_missing_values(ensemble: RankerEnsemble, table: pl.DataFrame):
    head = table.head(10)
    with_nan = head.with_columns(pl.when(pl.int_range(10) < 5).then(float("nan")).otherwise("f_noise").alias("f_noise"))
    with_null = head.with_columns(pl.when(pl.int_range(10) < 5).then(None).otherwise("f_noise").alias("f_noise"))
    np.testing.assert_array_equal(ensemble.predict(with_null), ensemble.predict(with_nan))


def test_predict_empty_table(ensemble: RankerEnsemble, table: pl.DataFrame):
    assert ensemble.predict(table.head(0)).shape == (0,)


def test_predict_missing_features_are_named(ensemble: RankerEnsemble, table: pl.DataFrame):
    with pytest.raises(ValueError, match="lacks feature column\\(s\\) f_signal, f_count"):
        ensemble.predict(table.drop("f_signal", "f_count"))


def test_predict_non_numeric_feature_is_named(ensemble: RankerEnsemble, table: pl.DataFrame):
    with pytest.raises(ValueError, match="f_noise \\(String\\) are not numeric"):
        ensemble.predict(table.with_columns(pl.col("f_noise").cast(pl.String)))


def test_importance_is_mean_over_boosters_sorted_by_gain(ensemble: RankerEnsemble):
    imp = ensemble.importance()
    assert imp.columns == ["feature", "gain", "split", "gain_share"]
    assert imp["feature"][0] == "f_signal"
    assert imp["gain"].to_list() == sorted(imp["gain"].to_list(), reverse=True)
    assert imp["gain_share"].sum() == pytest.approx(1.0)
    gain = np.mean([b.feature_importance("gain", iteration=it) for b, it in zip(ensemble.boosters, [5, 3],
                                                                                 strict=True)], axis=0)
    by_name = dict(zip(imp["feature"], imp["gain"], strict=True))
    for name, value in zip(FEATURES, gain, strict=True):
        assert by_name[name] == pytest.approx(value)


def test_to_dict_is_json_and_round_trips(ensemble: RankerEnsemble, table: pl.DataFrame):
    data = json.loads(json.dumps(ensemble.to_dict()))
    assert data["format"] == FORMAT and data["features"] == FEATURES and data["best_iterations"] == [5, 3]
    again = RankerEnsemble.from_dict(data)
    np.testing.assert_array_equal(again.predict(table), ensemble.predict(table))


def test_save_load_round_trip_is_identical(ensemble: RankerEnsemble, table: pl.DataFrame, tmp_path):
    path = ensemble.save(tmp_path / "ranker.json")
    loaded = RankerEnsemble.load(path)
    assert loaded.features == FEATURES and loaded.best_iterations == [5, 3]
    np.testing.assert_array_equal(loaded.predict(table), ensemble.predict(table))
    assert [p.name for p in tmp_path.iterdir()] == ["ranker.json"]  # no temp file left behind


def test_failed_save_keeps_old_file_and_leaves_no_temp(ensemble: RankerEnsemble, tmp_path, monkeypatch):
    path = tmp_path / "ranker.json"
    path.write_text("old")

    def dump_half(obj, out):
        out.write('{"format": ')
        raise KeyboardInterrupt

    monkeypatch.setattr("recsys.ranker.json.dump", dump_half)
    with pytest.raises(KeyboardInterrupt):
        ensemble.save(path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ranker.json"]


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a saved RankerEnsemble"):
        RankerEnsemble.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="expected format 'recsys.ranker.v1', found 'other'"):
        RankerEnsemble.from_dict({"format": "other"})
    with pytest.raises(ValueError, match="missing key\\(s\\) boosters"):
        RankerEnsemble.from_dict({"format": FORMAT, "features": FEATURES, "best_iterations": [1]})


def test_constructor_checks(ensemble: RankerEnsemble):
    booster = ensemble.boosters[0]
    with pytest.raises(ValueError, match="at least one booster"):
        RankerEnsemble([], FEATURES)
    with pytest.raises(ValueError, match="trained on 3 features but 2 feature names"):
        RankerEnsemble([booster], FEATURES[:2])
    with pytest.raises(ValueError, match="best iteration 9 of booster 0 is outside 1..5"):
        RankerEnsemble([booster], FEATURES, best_iterations=[9])
    with pytest.raises(ValueError, match="1 best iterations for 2 boosters"):
        RankerEnsemble([booster, booster], FEATURES, best_iterations=[2])
    assert RankerEnsemble([booster], FEATURES).best_iterations == [5]  # no early stopping: all trees
