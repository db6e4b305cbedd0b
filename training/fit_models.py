"""Tune, fit, then hand over: the training half of the evaluation protocol.

For each model (a :class:`ModelSpec`): every setting of its grid is fit on the valid window's
fit input and scored on the valid window (its history excluded); the best by
:data:`~recsys.evaluation.runner.TUNING_METRIC` is fit on the run's history (train, or
train + valid) and handed at once to :func:`recsys.evaluation.runner.score_model`, so only one
fitted model is held at a time. The evaluation itself never fits.

An estimator is anything whose ``fit(FitInput)`` returns a fitted model with ``name`` and
``score(users, history)``; the return value is what is scored, never the estimator itself
(a fit may return a separate runtime scorer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from recsys.console import bars, stderr_is_terminal
from recsys.evaluation.eval_data import EvalData
from recsys.evaluation.runner import (
    TUNING_METRIC,
    EvalResult,
    ModelResult,
    check_test_window,
    score_model,
    summarise,
    tuning_score,
)
from recsys.indexing import FitInput
from recsys.memory import peak_rss_mb, release
from recsys.scorers.base import Scorer

__all__ = ["Estimator", "ModelSpec", "FittedModel", "Tuned", "fit_spec", "evaluate_specs"]

logger = logging.getLogger(__name__)


class Estimator(Protocol):
    """What a :class:`ModelSpec` builds: settings in, a fitted model out of ``fit``."""

    def fit(self, data: FitInput) -> Scorer:
        """Fit on ``data``; returns the fitted model (``self`` or a separate scorer)."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: how to build it for each setting of its (small) tuning grid."""

    name: str
    """Its name in the result table."""
    build: Callable[[Any], Estimator]
    """setting -> an unfitted estimator."""
    grid: tuple[Any, ...] = (None,)
    """Settings tried on the valid window; ``(None,)`` means nothing to tune."""
    score_valid: bool = False
    """Score the valid window even with one setting (the baselines: the run falls back to the best of them there)."""
    grows: bool = False
    """The grid is increasing training lengths of one model (LightFM's epochs): tuning trains once, to the last,
    and scores it at each (``build(grid[-1]).fit_epochs(fit, grid, on_epoch)``) instead of a fresh fit each:
    5 + 15 + 30 epochs become 30."""


@dataclass(frozen=True)
class Tuned:
    """A spec's setting as the valid window chose it, and its score there: the model can be fit again, identically."""

    spec: ModelSpec
    setting: Any
    valid_score: float
    """Valid :data:`~recsys.evaluation.runner.TUNING_METRIC` of ``setting`` (NaN: not scored)."""

    @property
    def name(self) -> str:
        return self.spec.name

    def fit(self, data: FitInput) -> Scorer:
        """The spec's model at its chosen setting, fitted on ``data`` (for the same data, the evaluation's model)."""
        return self.spec.build(self.setting).fit(data)


@dataclass
class FittedModel:
    """A spec's chosen setting, fitted on the run's history, and how it was chosen."""

    model: Scorer
    setting: Any
    tuning: dict[str, float]
    """str(setting) -> valid NDCG@10 (empty when nothing was tuned)."""
    seconds: dict[str, float]
    """``tune_s`` and ``fit_s``."""


def _tune(spec: ModelSpec, data: EvalData, show_progress: bool) -> tuple[Any, dict[str, float]]:
    """The grid setting with the best valid score; ties keep the earlier setting."""
    window = data.valid
    scores: dict[str, float] = {}
    best, best_score = spec.grid[0], -np.inf
    if len(spec.grid) == 1 and not spec.score_valid:
        return best, scores
    if len(window.users) == 0:
        logger.warning("%s: the valid window has no relevant items; using the first setting %s", spec.name, best)
        return best, scores

    def score(setting: Any, model: Scorer) -> None:
        desc = f"{spec.name} valid {setting}"
        scores[str(setting)] = tuning_score(data, model, show_progress=show_progress, desc=desc)
        logger.debug("%s %s: valid %s %.4f", spec.name, setting, TUNING_METRIC, scores[str(setting)])

    if spec.grows:
        spec.build(spec.grid[-1]).fit_epochs(window.fit, spec.grid, score)
    else:
        for setting in spec.grid:
            score(setting, spec.build(setting).fit(window.fit))
    for setting in spec.grid:
        if scores[str(setting)] > best_score:
            best, best_score = setting, scores[str(setting)]
    return best, scores


def fit_spec(spec: ModelSpec, data: EvalData, *, show_progress: bool = False) -> FittedModel:
    """Tune ``spec`` on the valid window, then fit its best setting on ``data.test.fit``.

    Args:
        spec: the model and its grid.
        data: the indexed dataset (``build_eval_data``).
        show_progress: tqdm bars over blocks of users while tuning.

    Returns:
        The fitted model (what ``fit`` returned), its setting, the valid scores and timings.
    """
    start = time.perf_counter()
    setting, tuning = _tune(spec, data, show_progress)
    seconds = {"tune_s": time.perf_counter() - start}
    start = time.perf_counter()
    model = spec.build(setting).fit(data.test.fit)
    seconds["fit_s"] = time.perf_counter() - start
    return FittedModel(model, setting, tuning, seconds)


def evaluate_specs(data: EvalData, specs: Sequence[ModelSpec], *, reference: str = "popularity",
                   show_progress: bool = False, tuned: dict[str, Tuned] | None = None) -> EvalResult:
    """Run the protocol for every model on the same split, history and catalogue.

    Models are fitted in the order of ``specs``, each scored as soon as it is fitted, so only one
    fitted model is held at a time (its lists and per-user metrics are kept).

    Args:
        data: the indexed dataset (``build_eval_data``).
        specs: the models and their tuning grids.
        reference: model that the others are compared with by paired bootstrap.
        show_progress: tqdm bars over blocks of users.
        tuned: filled, as each spec is fitted, with its chosen setting and valid score (by name): a later
            spec may read the earlier ones' (the ranked pipeline falls back to the best baseline).

    Returns:
        Per-model results, the tidy metrics table (with bootstrap CIs over users, per slice)
        and the paired differences against ``reference``.

    Raises:
        ValueError: the test window has no user to evaluate (checked before anything is fitted).
    """
    check_test_window(data)
    results: list[ModelResult] = []
    # one bar over the models on a terminal (the log lines print above it); a line per model with -v
    redirect = logging_redirect_tqdm() if show_progress and stderr_is_terminal() else nullcontext()
    with redirect, tqdm(specs, desc="models", unit="model", disable=bars(show_progress)) as progress:
        for spec in progress:
            progress.set_postfix_str(spec.name, refresh=True)
            logger.debug("evaluating %s", spec.name)
            fitted = fit_spec(spec, data, show_progress=show_progress)
            if tuned is not None:
                tuned[spec.name] = Tuned(spec, fitted.setting, fitted.tuning.get(str(fitted.setting), float("nan")))
            results.append(score_model(data, spec.name, fitted.model, setting=fitted.setting, tuning=fitted.tuning,
                                       seconds=fitted.seconds, show_progress=show_progress))
            del fitted  # the next spec's fit should not have to share memory with this model
            release()
            results[-1].peak_rss_mb = peak_rss_mb()
    return summarise(data, results, reference=reference)
