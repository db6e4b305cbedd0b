"""The new-item protocol: ``--split-mode items`` and the text peers that can place new items (tfidf, lightfm_text).

A seeded share of items becomes new (every event on them is test), and ``cold_only`` ranks only
the new items for the users with a positive on them. On synthetic data, whose item text carries
the topic a user prefers, models that read the words must place new items better than random and
popularity, and popularity cannot place a new item at all in the whole-catalogue ranking.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from features.split import SplitConfig, temporal_split
from recsys import contract as C
from recsys.cli import cli
from recsys.datasets import write_synthetic
from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.io import DatasetPaths, load_dataset
from recsys.synthetic import SyntheticConfig, generate_synthetic
from training.fit_lightfm import LightFMConfig, LightFMRecommender
from training.fit_tfidf import TfidfConfig, TfidfRecommender

SMALL = SyntheticConfig(n_users=80, n_items=120, sessions_per_user=5, seed=7)


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return generate_synthetic(SMALL)[1]


def _window_items(split: pl.DataFrame, window: str) -> set[str]:
    return set(split.filter(pl.col(C.SPLIT) == window)[C.ITEM_ID].to_list())


def test_every_event_of_a_new_item_is_in_its_window_and_the_shares_are_kept(events):
    split = temporal_split(events, SplitConfig(mode="items", valid=0.1, test=0.2, seed=3)).collect()
    assert split.height == events.height
    windows_per_item = split.group_by(C.ITEM_ID).agg(pl.col(C.SPLIT).n_unique())[C.SPLIT]
    assert windows_per_item.max() == 1  # no item has events in two windows
    n_items = events[C.ITEM_ID].n_unique()
    test, valid = _window_items(split, C.TEST), _window_items(split, C.VALID)
    assert len(test) == round(0.2 * n_items) and len(valid) == round(0.1 * n_items)
    assert not (test | valid) & _window_items(split, C.TRAIN)
    assert split.filter(pl.col(C.SPLIT) != C.TRAIN)[C.IS_COLD_ITEM].all()
    assert not split.filter(pl.col(C.SPLIT) == C.TRAIN)[C.IS_COLD_ITEM].any()


def test_the_new_items_are_drawn_by_the_seed(events):
    def drawn(seed: int, rows: pl.DataFrame = events) -> set[str]:
        return _window_items(temporal_split(rows, SplitConfig(mode="items", test=0.2, seed=seed)).collect(), C.TEST)

    assert drawn(1) == drawn(1) == drawn(1, events.sample(fraction=1.0, shuffle=True, seed=5))  # not row order
    assert drawn(1) != drawn(2)


def test_eval_data_ranks_new_items_for_their_users_with_history_on_other_items(tmp_path):
    write_synthetic(tmp_path, SMALL)
    dataset = load_dataset(DatasetPaths.from_dir(tmp_path))
    config = EvalConfig(split=SplitConfig(mode="items", valid=0.1, test=0.2), seed=4)
    data = build_eval_data(dataset, config)
    # the run's seed draws the items: the same as the split's own seed
    split = temporal_split(dataset.interactions, SplitConfig(mode="items", valid=0.1, test=0.2, seed=4)).collect()
    new = np.isin(data.item_ids, sorted(_window_items(split, C.TEST)))
    window = data.test
    assert np.array_equal(window.cold_items & np.isin(data.item_ids, split[C.ITEM_ID].unique().to_list()), new)
    assert window.history[:, new].nnz == 0  # nobody's history holds a new item
    assert window.truth[:, ~new].nnz == 0  # and every test positive is on one
    relevant = split.filter((pl.col(C.SPLIT) == C.TEST) & pl.col(C.EVENT).is_in(list(config.relevance)))
    assert set(data.user_ids[window.users]) == set(relevant[C.USER_ID].to_list())
    assert window.history[window.users].nnz > 0
    other = build_eval_data(dataset, replace(config, seed=5))
    assert not np.array_equal(other.test.cold_items, window.cold_items)


def test_lightfm_text_places_items_by_their_words_only(tmp_path):
    write_synthetic(tmp_path, SMALL)
    fit = build_eval_data(load_dataset(DatasetPaths.from_dir(tmp_path)),
                          EvalConfig(split=SplitConfig(mode="items", test=0.2))).test.fit
    twin = fit.items.with_columns(  # item 1 gets item 0's words
        pl.when(pl.int_range(pl.len()) == 1).then(pl.col(name).first()).otherwise(pl.col(name)).alias(name)
        for name in (C.TITLE, C.DESCRIPTION))
    fit = replace(fit, items=twin)
    words = LightFMRecommender(LightFMConfig(epochs=2, identity=False, use_item_features=False, text_features=200))
    scorer = words.fit(fit)
    assert words.name == "lightfm_text"
    np.testing.assert_array_equal(scorer.item_factors[0], scorer.item_factors[1])
    assert scorer.item_bias[0] == scorer.item_bias[1]
    own = LightFMRecommender(LightFMConfig(epochs=2, use_item_features=False, text_features=200)).fit(fit)
    assert not np.array_equal(own.item_factors[0], own.item_factors[1])  # the identity sets them apart
    tfidf = TfidfRecommender().fit(fit)
    history = fit.interactions[[0]].copy()
    history.data[:] = 0
    history.eliminate_zeros()
    assert not tfidf.score(np.array([0]), history).any()  # nothing read, nothing known
    # the lexical peer reads what the text tower reads (category and tags too), unless told another template
    only_category = fit.items.with_columns(pl.lit(None, pl.String).alias(C.TITLE),
                                           pl.lit(None, pl.String).alias(C.DESCRIPTION),
                                           pl.lit(None, pl.String).alias(C.TAGS),
                                           pl.lit("thriller", pl.String).alias(C.CATEGORY))
    liked = sp.csr_matrix(([1.0], ([0], [2])), shape=(1, fit.n_items), dtype=np.float32)
    same_words = TfidfRecommender().fit(replace(fit, items=only_category)).score(np.array([0]), liked)
    np.testing.assert_allclose(same_words, 1.0, rtol=1e-5)  # every item reads "thriller"
    titles_only = TfidfRecommender(TfidfConfig(template="{title}. {description}")).fit(
        replace(fit, items=only_category))
    assert not titles_only.score(np.array([0]), liked).any()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[str, dict]:
    folder = tmp_path_factory.mktemp("new_items")
    write_synthetic(folder / "data", SyntheticConfig(n_users=300, n_items=400, sessions_per_user=8, slate_size=8,
                                                     seed=3))
    result = CliRunner().invoke(cli, [
        "evaluate", "--data", str(folder / "data"), "--split-mode", "items", "--test", "0.2", "--valid", "0.1",
        "--models", "random,popularity,tfidf,lightfm_text", "--bootstrap", "100", "--no-mlflow",
        "--report", str(folder / "report")])
    assert result.exit_code == 0, result.output
    return result.output, json.loads((folder / "report" / "results.json").read_text())


def _metric(results: dict, model: str, metric: str) -> float:
    """A model's mean of ``metric`` in results.json (``cold_only_recall@20``: the new items ranked alone)."""
    found = [row["value"] for row in results["rows"] if row["model"] == model and row["metric"] == metric]
    assert len(found) == 1, f"{model} {metric}: {found}"
    return float(found[0])


def test_evaluate_items_mode_reports_cold_only_for_every_model(evaluated):
    output, results = evaluated
    assert "cold_only_recall@20" in output
    for model in ("random", "popularity", "tfidf", "lightfm_text"):
        assert model in output
        assert 0 <= _metric(results, model, "cold_only_recall@20") <= 1


def test_text_peers_place_new_items_and_popularity_cannot(evaluated):
    _, results = evaluated
    cold = {m: _metric(results, m, "cold_only_recall@20") for m in ("random", "popularity", "tfidf", "lightfm_text")}
    for reader in ("tfidf", "lightfm_text"):
        assert cold[reader] > max(cold["random"], cold["popularity"]) + 0.1, cold
    # every test positive is on a new item, which popularity scores 0 below every old one
    assert _metric(results, "popularity", "recall@20") == 0
    assert _metric(results, "tfidf", "recall@20") > 0
