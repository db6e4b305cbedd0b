"""fit_ranker on synthetic candidate tables where one feature's order decides the label."""

from __future__ import annotations

import io
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from recsys.ranker import RankerEnsemble
from training.fit_ranker import (
    RankerConfig,
    RankerReport,
    cross_validated_iterations,
    fit_ranker,
    fit_rankers,
    out_of_fold,
)
from training.ranker_plots import plot_importance, plot_learning_curves

FEATURES = ["f_signal", "f_noise_a", "f_noise_b", "f_noise_c"]
N_ITEMS = 30
K = 10
CONFIG = RankerConfig(n_estimators=30, early_stopping_rounds=10, num_leaves=7, min_data_in_leaf=20)


def _table(n_users: int, *, seed: int, first_user: int = 0) -> pl.DataFrame:
    """``n_users`` x ``N_ITEMS`` candidates; top 1 by ``f_signal`` is a purchase (2), next 2 clicks (1).

    Every user whose id ends in 7 has no positive at all (an all-zero group).
    """
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(first_user, first_user + n_users), N_ITEMS)
    signal = rng.random(users.size)
    rank = np.argsort(np.argsort(-signal.reshape(n_users, N_ITEMS), axis=1), axis=1).ravel()
    label = np.where(rank == 0, 2, np.where(rank < 3, 1, 0))
    label[users % 10 == 7] = 0
    noise_c = rng.normal(size=users.size)
    noise_c[rng.random(users.size) < 0.1] = np.nan
    return pl.DataFrame({
        "user_idx": users,
        "row_id": np.arange(users.size),
        "f_signal": signal,
        "f_noise_a": rng.normal(size=users.size),
        "f_noise_b": rng.integers(0, 5, users.size),
        "f_noise_c": noise_c,
        "label": label,
    }).with_columns(pl.col("f_noise_c").fill_nan(None))


def _mean_ndcg(table: pl.DataFrame, scores: np.ndarray, k: int = K) -> float:
    """Reference NDCG@k (gain 2**label - 1) averaged over groups with a positive, one group at a time."""
    values = []
    for (_,), rows in table.with_columns(pl.Series("s", scores)).group_by("user_idx"):
        labels = rows["label"].to_numpy()
        if labels.max() == 0:
            continue
        discounts = 1 / np.log2(np.arange(2, k + 2))
        gains = 2.0 ** labels[np.argsort(-rows["s"].to_numpy(), kind="stable")][:k] - 1
        ideal = 2.0 ** np.sort(labels)[::-1][:k] - 1
        values.append((gains * discounts[: gains.size]).sum() / (ideal * discounts[: ideal.size]).sum())
    return float(np.mean(values))


@pytest.fixture(scope="module")
def train_table() -> pl.DataFrame:
    return _table(200, seed=0)


@pytest.fixture(scope="module")
def fitted(train_table: pl.DataFrame) -> tuple[RankerEnsemble, RankerReport]:
    return fit_ranker(train_table, FEATURES, config=CONFIG)


def test_ranks_held_out_users_by_the_signal(fitted):
    ensemble, _ = fitted
    held_out = _table(100, seed=1, first_user=1000)
    ndcg = _mean_ndcg(held_out, ensemble.predict(held_out))
    random = np.mean([_mean_ndcg(held_out, np.random.default_rng(s).random(held_out.height)) for s in range(3)])
    oracle = _mean_ndcg(held_out, held_out["f_signal"].to_numpy())
    assert oracle == pytest.approx(1.0)
    assert ndcg > 0.95
    assert ndcg > random + 0.5  # random ordering scores ~0.2


def test_importance_puts_signal_first(fitted):
    ensemble, _ = fitted
    imp = ensemble.importance()
    assert imp["feature"][0] == "f_signal"
    assert imp["gain_share"][0] > 0.9


def test_report_curves_and_counts(fitted, train_table):
    ensemble, report = fitted
    assert len(report.folds) == CONFIG.n_folds == len(ensemble.boosters)
    assert report.metric == "ndcg@10" and report.features == FEATURES
    assert report.n_rows == train_table.height == 200 * N_ITEMS
    assert report.fit_seconds > 0
    for fold in report.folds:
        curve = fold.valid_ndcg
        assert 1 <= fold.best_iteration <= len(curve) <= CONFIG.n_estimators
        assert fold.best_ndcg == max(curve) == curve[fold.best_iteration - 1]
        assert len(fold.train_ndcg) == len(curve)
        assert fold.best_ndcg > 0.9
    assert ensemble.best_iterations == report.best_iterations


def test_all_zero_groups_are_dropped_and_counted(fitted):
    _, report = fitted
    assert report.n_groups_dropped == 20  # users 7, 17, ..., 197
    assert report.n_groups_used == 180
    assert report.n_rows_used == 180 * N_ITEMS
    assert not (report.assignment["user_idx"] % 10 == 7).any()
    for fold in report.folds:
        assert fold.n_train_rows + fold.n_valid_rows == report.n_rows_used


def test_no_user_is_in_training_and_early_stopping_of_a_fold(fitted, train_table):
    _, report = fitted
    assignment = report.assignment
    used = set(train_table.filter(pl.col("label").max().over("user_idx") > 0)["user_idx"].to_list())
    assert assignment["user_idx"].n_unique() == assignment.height == len(used)
    assert set(assignment["user_idx"].to_list()) == used
    assert sorted(assignment["fold"].unique().to_list()) == [0, 1, 2]  # every user early-stops exactly one booster
    for fold in report.folds:
        valid = set(assignment.filter(pl.col("fold") == fold.fold)["user_idx"].to_list())
        train = used - valid
        assert fold.n_valid_groups == len(valid) and fold.n_train_groups == len(train)
        # the booster's two data sets hold exactly these groups: disjoint, covering every used group
        assert fold.n_train_groups + fold.n_valid_groups == report.n_groups_used
        assert fold.n_valid_rows == len(valid) * N_ITEMS
    assert sorted(f.n_valid_groups for f in report.folds) == [60, 60, 60]


def test_out_of_fold_scores_each_user_by_the_booster_that_did_not_learn_them(fitted, train_table):
    ensemble, report = fitted
    oof = out_of_fold(ensemble, report, train_table)
    fold_of = dict(zip(report.assignment["user_idx"].to_list(), report.assignment["fold"].to_list(), strict=True))
    users = train_table["user_idx"].to_numpy()
    matrix = train_table.select(FEATURES).to_numpy().astype(np.float64)
    for user in (0, 1, 2, 5, 8):
        rows = users == user
        k = fold_of[user]
        expected = ensemble.boosters[k].predict(matrix[rows], num_iteration=ensemble.best_iterations[k],
                                                raw_score=True)
        np.testing.assert_allclose(oof[rows], expected)
    assert np.isnan(oof[users % 10 == 7]).all()  # all-zero groups are in no fold
    # unseen users rank nearly as well as the ensemble ranks them; in-sample scores are no better a judge
    judged = train_table.filter(pl.col("user_idx") % 10 != 7)
    assert _mean_ndcg(judged, out_of_fold(ensemble, report, judged)) > 0.9


def test_each_fold_is_judged_at_the_tree_count_its_other_folds_chose(fitted, train_table):
    """Nested cross-validation without refitting: fold k's users see the median best iteration of the others."""
    ensemble, report = fitted
    folds = [replace(fold, best_iteration=b) for fold, b in zip(report.folds, (4, 10, 20), strict=True)]
    assert cross_validated_iterations(replace(report, folds=folds)) == [15, 12, 7]
    expected = cross_validated_iterations(report)
    oof = out_of_fold(ensemble, report, train_table, iterations=expected)
    fold_of = dict(zip(report.assignment["user_idx"].to_list(), report.assignment["fold"].to_list(), strict=True))
    users = train_table["user_idx"].to_numpy()
    matrix = train_table.select(FEATURES).to_numpy().astype(np.float64)
    for user in (0, 1, 2):
        rows, k = users == user, fold_of[user]
        np.testing.assert_allclose(oof[rows], ensemble.boosters[k].predict(matrix[rows], num_iteration=expected[k],
                                                                          raw_score=True))
    one = fit_ranker(train_table, FEATURES, config=replace(CONFIG, n_folds=1))[1]
    assert cross_validated_iterations(one) == one.best_iterations


def test_same_seed_gives_identical_predictions(fitted, train_table):
    ensemble, _ = fitted
    again, _ = fit_ranker(train_table, FEATURES, config=CONFIG)
    np.testing.assert_array_equal(again.predict(train_table), ensemble.predict(train_table))


def test_shuffled_rows_give_the_same_predictions_per_row(fitted, train_table):
    ensemble, report = fitted
    shuffled = train_table.sample(fraction=1.0, shuffle=True, seed=3)
    again, report_again = fit_ranker(shuffled, FEATURES, config=CONFIG)
    assert report_again.assignment.sort("user_idx").equals(report.assignment.sort("user_idx"))
    expected = train_table.select("user_idx", "row_id", s=pl.Series(ensemble.predict(train_table)))
    got = shuffled.select("user_idx", "row_id", s=pl.Series(again.predict(shuffled)))
    joined = expected.join(got, on=["user_idx", "row_id"], suffix="_shuffled", validate="1:1")
    assert joined.height == train_table.height
    np.testing.assert_array_equal(joined["s"].to_numpy(), joined["s_shuffled"].to_numpy())


def test_one_fold_holds_out_valid_fraction(train_table):
    config = RankerConfig(n_folds=1, valid_fraction=0.25, n_estimators=10, early_stopping_rounds=5, num_leaves=7,
                          min_data_in_leaf=20)
    ensemble, report = fit_ranker(train_table, FEATURES, config=config)
    assert len(ensemble.boosters) == len(report.folds) == 1
    (fold,) = report.folds
    assert fold.n_valid_groups == 45 and fold.n_train_groups == 135
    assert report.assignment["fold"].null_count() == 135
    assert ensemble.predict(train_table).shape == (train_table.height,)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_show_progress_draws_a_bar_on_a_terminal_only(train_table, capsys, monkeypatch):
    """A bar that redraws itself is for a terminal; in a log file or pipe it would be a line per update."""
    config = RankerConfig(n_folds=2, n_estimators=3, early_stopping_rounds=2, num_leaves=4, min_data_in_leaf=20)
    fit_ranker(train_table, FEATURES, config=config, show_progress=True)
    assert "ranker folds" not in capsys.readouterr().err  # captured: not a terminal
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    fit_ranker(train_table, FEATURES, config=config, show_progress=True)
    assert "ranker folds" in terminal.getvalue()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop("label"), "lacks column\\(s\\) label"),
        (lambda t: t.drop("f_noise_a"), "lacks column\\(s\\) f_noise_a"),
        (lambda t: t.with_columns(pl.col("label") - 1), "negative values \\(min -1\\)"),
        (lambda t: t.with_columns(pl.col("label") * 0.5), "non-integer values"),
        (lambda t: t.with_columns(pl.col("label").cast(pl.String)), "dtype String; expected non-negative integers"),
        (lambda t: t.with_columns(pl.lit(None, pl.Int64).alias("label")), "null"),
        (lambda t: t.with_columns(pl.col("label") * 20), "grades up to 40"),
        (lambda t: t.with_columns(pl.lit(0).alias("label")), "the label window has no positives"),
        (lambda t: t.with_columns(pl.col("f_noise_a").cast(pl.String)), "f_noise_a \\(String\\) are not numeric"),
    ],
)
def test_bad_input_raises(train_table, change, message):
    with pytest.raises(ValueError, match=message):
        fit_ranker(change(train_table.head(300)), FEATURES, config=CONFIG)


def test_integer_valued_float_labels_are_accepted(train_table):
    small = train_table.filter(pl.col("user_idx") < 20).with_columns(pl.col("label").cast(pl.Float64))
    config = RankerConfig(n_folds=2, n_estimators=2, num_leaves=4, min_data_in_leaf=5)
    _, report = fit_ranker(small, FEATURES, config=config)
    assert report.n_groups_used == 18


def test_too_few_groups_for_the_folds(train_table):
    with pytest.raises(ValueError, match="only 2 group\\(s\\) with a positive label for RankerConfig.n_folds=3"):
        fit_ranker(train_table.filter(pl.col("user_idx") < 2), FEATURES, config=CONFIG)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_folds", 0, "RankerConfig.n_folds must be >= 1"),
        ("valid_fraction", 0.0, "RankerConfig.valid_fraction must be > 0"),
        ("valid_fraction", 1.0, "RankerConfig.valid_fraction must be < 1"),
        ("learning_rate", 0.0, "RankerConfig.learning_rate must be > 0"),
        ("num_leaves", 1, "RankerConfig.num_leaves must be >= 2"),
        ("min_data_in_leaf", 0, "RankerConfig.min_data_in_leaf must be >= 1"),
        ("feature_fraction", 1.5, "RankerConfig.feature_fraction must be <= 1"),
        ("feature_fraction", 0.0, "RankerConfig.feature_fraction must be > 0"),
        ("lambda_l2", -1.0, "RankerConfig.lambda_l2 must be >= 0"),
        ("n_estimators", 0, "RankerConfig.n_estimators must be >= 1"),
        ("early_stopping_rounds", 0, "RankerConfig.early_stopping_rounds must be >= 1"),
        ("eval_at", 0, "RankerConfig.eval_at must be >= 1"),
        ("truncation_level", 0, "RankerConfig.truncation_level must be >= 1"),
        ("num_threads", 0, "RankerConfig.num_threads must be >= 1"),
        ("seed", -1, "RankerConfig.seed must be >= 0"),
        ("learning_rate", float("nan"), "RankerConfig.learning_rate must be > 0"),
    ],
)
def test_config_checks_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        RankerConfig(**{field: value})


def test_plots(fitted):
    ensemble, report = fitted
    curves = plot_learning_curves(report)
    # per fold: valid curve, train curve, best-iteration marker
    assert len(curves.axes[0].lines) == 3 * CONFIG.n_folds
    assert curves.axes[0].get_ylabel() == "ndcg@10"
    bars = plot_importance(ensemble, top=2)
    labels = [t.get_text() for t in bars.axes[0].get_yticklabels()]
    assert len(bars.axes[0].patches) == 2 and labels[-1] == "f_signal"  # largest bar on top
    with pytest.raises(ValueError, match="top must be >= 1"):
        plot_importance(ensemble, top=0)
    plt.close(curves)
    plt.close(bars)


def test_base_score_starts_every_booster_and_is_added_back(train_table, tmp_path):
    """With ``base``, the trees learn corrections of that ranking, and scoring adds it back."""
    ensemble, _ = fit_ranker(train_table, FEATURES, config=CONFIG, base="f_signal")
    assert ensemble.base == "f_signal"
    held_out = _table(60, seed=4, first_user=10_000)
    scores = ensemble.predict(held_out)
    trees_only = RankerEnsemble(ensemble.boosters, ensemble.features, ensemble.best_iterations).predict(held_out)
    np.testing.assert_allclose(scores - trees_only, held_out["f_signal"].to_numpy())
    assert _mean_ndcg(held_out, scores) > 0.9
    loaded = RankerEnsemble.load(ensemble.save(tmp_path / "ranker.json"))
    assert loaded.base == "f_signal"
    np.testing.assert_allclose(loaded.predict(held_out), scores)
    with pytest.raises(ValueError, match="f_signal"):
        ensemble.predict(held_out.drop("f_signal"))


def test_base_column_must_exist(train_table):
    with pytest.raises(ValueError, match="no_such_score"):
        fit_ranker(train_table, FEATURES, config=CONFIG, base="no_such_score")


def test_several_starts_in_one_pool_are_the_single_fits(train_table):
    """fit_rankers trains every (start, fold) booster side by side; each ensemble is fit_ranker's own."""
    both = fit_rankers(train_table, FEATURES, [None, "f_signal", None], config=CONFIG)
    assert list(both) == [None, "f_signal"]  # a repeated start is trained once
    held_out = _table(60, seed=4, first_user=10_000)
    for base, (ensemble, report) in both.items():
        alone, alone_report = fit_ranker(train_table, FEATURES, config=CONFIG, base=base)
        assert ensemble.base == base and len(ensemble.boosters) == CONFIG.n_folds
        assert report.best_iterations == alone_report.best_iterations
        np.testing.assert_array_equal(ensemble.predict(held_out), alone.predict(held_out))
        assert report.assignment.equals(alone_report.assignment)
