"""Tune on valid, fit on the run's history, hand the fitted model to the evaluation: ``training.fit_models``."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from features.split import SplitConfig
from recsys.evaluation.eval_data import EvalConfig, EvalData, build_eval_data
from recsys.evaluation.runner import TUNING_METRIC, score_model, summarise
from recsys.indexing import FitInput
from recsys.io import Dataset
from recsys.synthetic import SyntheticConfig, generate_synthetic
from training.fit_models import ModelSpec, evaluate_specs, fit_spec


@pytest.fixture(scope="module")
def data() -> EvalData:
    items, inter = generate_synthetic(SyntheticConfig(n_users=40, n_items=40, sessions_per_user=8, slate_size=5,
                                                      seed=4))
    config = EvalConfig(split=SplitConfig("per-user", 0.2, 0.2), n_bootstrap=20, history="train+valid")
    return build_eval_data(Dataset(items, inter), config)


class Lookup:
    """A fitted model: scores the relevant items of the window it was fitted for highest (or lowest)."""

    def __init__(self, truth: sp.csr_matrix, sign: float, name: str) -> None:
        self.truth, self.sign, self.name = truth, sign, name

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        base = self.truth[users].toarray().astype(np.float32) * self.sign
        return base * 10 + np.linspace(0, 1, base.shape[1], dtype=np.float32)


class Estimator:
    """Records every fit; ``fit`` returns a separate :class:`Lookup`, never ``self`` (which cannot score)."""

    def __init__(self, data: EvalData, setting: str, calls: list) -> None:
        self.data, self.setting, self.calls = data, setting, calls

    def fit(self, fit: FitInput) -> Lookup:
        window = self.data.valid if fit is self.data.valid.fit else self.data.test
        assert fit is window.fit
        self.calls.append((self.setting, "valid" if window is self.data.valid else "test"))
        return Lookup(window.truth, -1.0 if self.setting.startswith("bad") else 1.0, "lookup")


def _spec(data: EvalData, calls: list, grid: tuple[str, ...], name: str = "m") -> ModelSpec:
    return ModelSpec(name, lambda setting: Estimator(data, setting, calls), grid)


def test_best_valid_setting_is_fitted_on_the_test_history_and_ties_keep_the_first(data):
    assert data.valid.fit is not data.test.fit and len(data.valid.users) > 5  # train+valid: the final fit sees more
    calls: list = []
    fitted = fit_spec(_spec(data, calls, ("bad", "good", "good_too")), data)
    assert calls == [("bad", "valid"), ("good", "valid"), ("good_too", "valid"), ("good", "test")]
    assert fitted.setting == "good" and isinstance(fitted.model, Lookup)  # what fit returned is what is scored
    assert fitted.tuning["good"] == fitted.tuning["good_too"] == pytest.approx(1.0)  # a perfect ranker on valid
    assert fitted.tuning["bad"] < 0.5 and set(fitted.seconds) == {"tune_s", "fit_s"}


class Growing(Estimator):
    """A model trained in stages (epochs): one ``fit_epochs`` run scored at each grid point."""

    def fit_epochs(self, fit: FitInput, grid, on_epoch) -> Growing:
        assert fit is self.data.valid.fit
        for setting in grid:
            self.calls.append((setting, "valid, continued"))
            on_epoch(setting, Lookup(self.data.valid.truth, -1.0 if setting.startswith("bad") else 1.0, "lookup"))
        return self


def test_a_growing_grid_trains_once_to_its_last_point_and_scores_each(data):
    calls: list = []
    spec = ModelSpec("m", lambda setting: Growing(data, setting, calls), ("bad", "good", "good_too"), grows=True)
    fitted = fit_spec(spec, data)
    assert calls == [("bad", "valid, continued"), ("good", "valid, continued"), ("good_too", "valid, continued"),
                     ("good", "test")]
    assert fitted.setting == "good" and fitted.tuning["bad"] < 0.5 and fitted.tuning["good"] == pytest.approx(1.0)


def test_nothing_to_tune_fits_once(data):
    calls: list = []
    fitted = fit_spec(_spec(data, calls, ("only",)), data)
    assert calls == [("only", "test")] and fitted.tuning == {} and fitted.setting == "only"


def test_empty_valid_window_uses_the_first_setting(data, caplog):
    empty = replace(data.valid, truth=sp.csr_matrix(data.valid.truth.shape, dtype=bool))
    calls: list = []
    with caplog.at_level(logging.WARNING, logger="training.fit_models"):
        fitted = fit_spec(_spec(data, calls, ("bad", "good")), replace(data, valid=empty))
    assert calls == [("bad", "test")] and fitted.setting == "bad" and fitted.tuning == {}
    assert "the valid window has no relevant items; using the first setting bad" in caplog.text


def test_evaluate_specs_fits_in_spec_order_and_scores_what_fit_returned(data):
    calls: list = []
    specs = [_spec(data, calls, ("good",), "first"), _spec(data, calls, ("bad", "good"), "second")]
    result = evaluate_specs(data, specs, reference="first")
    assert calls == [("good", "test"), ("bad", "valid"), ("good", "valid"), ("good", "test")]
    assert [m.name for m in result.models] == ["first", "second"] and result.models[1].setting == "good"
    assert np.allclose(result.models[0].per_user["ndcg@10"], 1.0)
    assert set(result.models[1].seconds) == {"tune_s", "fit_s", "score_s", "users_per_s"}
    assert result.models[1].tuning["good"] == pytest.approx(1.0) and TUNING_METRIC == "ndcg@10"
    # the same as fitting by hand and handing the models to the runner
    by_hand = [score_model(data, s.name, fit_spec(s, data).model) for s in specs]
    assert summarise(data, by_hand, reference="first").table.equals(result.table)


def test_an_empty_test_window_fails_before_any_fit(data):
    calls: list = []
    empty = replace(data.test, truth=sp.csr_matrix(data.test.truth.shape, dtype=bool))
    with pytest.raises(ValueError, match="the test window has no user with a relevant item"):
        evaluate_specs(replace(data, test=empty), [_spec(data, calls, ("bad", "good"))])
    assert calls == []
