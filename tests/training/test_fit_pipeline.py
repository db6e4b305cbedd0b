"""Fitting the ranked pipeline: the label window, leak-free training features, quota ordering, errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from features.split import SplitConfig
from recsys import contract as C
from recsys.candidates import FactorScores, candidate_recall
from recsys.errors import NotFittedError
from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.io import Dataset
from recsys.pipeline import ColdExposure, RankingPipeline, _positions
from recsys.scorers import Scorer, factor_scores
from recsys.synthetic import SyntheticConfig, generate_synthetic
from recsys.topk import top_k
from training.fit_pipeline import (
    ColdExposureView,
    PipelineConfig,
    PipelineRecommender,
    StageOne,
    StageView,
    _truth,
    label_ndcg,
    label_split,
    refit_for_shipping,
)
from training.fit_ranker import RankerConfig
from training.pipeline import all_events
from training.stage_logging import window_candidate_recall
from training.text_tower import TextTowerConfig

T0 = datetime(2024, 1, 1)


def _events(rows: list[tuple[int, int, int, str]]) -> pl.DataFrame:
    return pl.DataFrame({"user_idx": [r[0] for r in rows], "item_idx": [r[1] for r in rows],
                         C.TS: [T0 + timedelta(days=r[2]) for r in rows], C.EVENT: [r[3] for r in rows]},
                        schema_overrides={C.TS: C.DATETIME})


def test_label_split_takes_each_users_latest_positives_and_keeps_a_history():
    events = _events([(0, i, i, C.CLICK) for i in range(8)] + [(1, 0, 0, C.CLICK), (1, 1, 1, C.PURCHASE)]
                     + [(2, 0, 3, C.CLICK)] + [(0, 9, 7, C.IMPRESSION)])
    earlier, cuts = label_split(events, 0.25, (C.CLICK, C.PURCHASE))
    assert cuts["user_idx"].to_list() == [0, 1]  # user 2 has one positive: no label window
    assert cuts["cut"].to_list() == [T0 + timedelta(days=6), T0 + timedelta(days=1)]
    assert sorted(earlier.filter(pl.col("user_idx") == 0)["item_idx"].to_list()) == [0, 1, 2, 3, 4, 5]
    assert earlier.filter(pl.col("user_idx") == 1)["item_idx"].to_list() == [0]
    assert earlier.filter(pl.col("user_idx") == 2).height == 1


def _order(ranked: pl.DataFrame, cold: ColdExposure) -> list[int]:
    return _positions(ranked, cold).sort("user_idx", "position")["item_idx"].to_list()


def test_quota_reserves_page_positions_for_the_best_new_items():
    # ranker order 0..7; items 5, 6, 7 are new
    ranked = pl.DataFrame({"user_idx": [0] * 8, "item_idx": list(range(8)), "s": [8.0, 7, 6, 5, 4, 3, 2, 1],
                           "cold": [False] * 5 + [True] * 3})
    assert _order(ranked, ColdExposure()) == list(range(8))
    assert ColdExposure(2, 6, "spread").reserved().tolist() == [3, 6]
    assert _order(ranked, ColdExposure(2, 6, "spread")) == [0, 1, 5, 2, 3, 6, 4, 7]
    assert _order(ranked, ColdExposure(2, 6, "end")) == [0, 1, 2, 3, 5, 6, 4, 7]
    # more slots than new candidates: the warm order fills the unused ones; past the page, the ranker's order
    assert _order(ranked, ColdExposure(4, 4, "end")) == [5, 6, 7, 0, 1, 2, 3, 4]
    assert _order(ranked, ColdExposure(3, 4, "spread")) == [0, 5, 6, 7, 1, 2, 3, 4]
    other = ranked.with_columns(pl.lit(1, pl.Int64).alias("user_idx"), pl.lit(False).alias("cold"))
    two_users = pl.concat([ranked, other])
    assert _order(two_users, ColdExposure(2, 6, "end"))[8:] == list(range(8))  # a user with no new item


def test_cold_exposure_settings_are_checked():
    with pytest.raises(ValueError, match="slots <= page"):
        ColdExposure(slots=30, page=20)
    with pytest.raises(ValueError, match="place"):
        ColdExposure(slots=2, place="middle")


@pytest.fixture(scope="module")
def fitted():
    items, interactions = generate_synthetic(SyntheticConfig(n_users=80, n_items=60, sessions_per_user=8, seed=2))
    data = build_eval_data(Dataset(items, interactions),
                           EvalConfig(split=SplitConfig(mode="global", valid=0.1, test=0.1), history="train+valid"))
    config = PipelineConfig(sources=("lightfm", "ease", "popularity_recent"), lightfm_epochs=(2, 4),
                            ranker=RankerConfig(n_estimators=30, min_data_in_leaf=5))
    stage = StageOne(config, TextTowerConfig())
    recommender = PipelineRecommender(stage)
    pipeline = recommender.fit(data.test.fit)
    return data, stage, recommender, pipeline


def test_fit_returns_the_runtime_pipeline_and_a_second_fit_is_free(fitted):
    data, stage, recommender, pipeline = fitted
    assert isinstance(pipeline, RankingPipeline) and isinstance(pipeline, Scorer)
    assert pipeline is recommender.pipeline_ and recommender.fit(data.test.fit) is pipeline
    assert set(stage.inner) == set(stage.full) == {"lightfm", "ease", "popularity_recent"}
    assert all(isinstance(m, Scorer) for m in [*stage.inner.values(), *stage.full.values()])
    assert pipeline.state.models == stage.full  # the served pipeline scores with the whole window's models
    assert StageView(stage, "ease").fit(data.test.fit) is stage.full["ease"]
    with pytest.raises(NotFittedError, match=r"ease_alone2: stage one has no 'text'"):
        StageView(stage, "text", "ease_alone2").fit(data.test.fit)


def test_training_features_only_read_events_before_each_users_cut(fitted):
    """Recount pop_all and hist_n_events by brute force: events strictly before the user's label cut.

    The features read the stage-one fit data (the window before every user's label cut), as at
    scoring time they read the history they are given; the label events never enter.
    """
    data, stage, recommender, _ = fitted
    table = recommender.train_table_
    events = stage.inner_data.events.filter(pl.col(C.EVENT).is_in([C.CLICK, C.PURCHASE]))
    sample = table.sample(n=min(200, table.height), seed=0)
    cuts = dict(zip(stage.cuts["user_idx"].to_list(), stage.cuts["cut"].to_list(), strict=True))
    for row in sample.iter_rows(named=True):
        before = events.filter(pl.col(C.TS) < cuts[row["user_idx"]])
        assert row["pop_all"] == before.filter(pl.col("item_idx") == row["item_idx"]).height
        assert row["hist_n_events"] == before.filter(pl.col("user_idx") == row["user_idx"]).height
    # and the label window itself is after the cut: every labelled pair's event is at or after it
    window = data.test.fit.events.filter(pl.col(C.EVENT).is_in([C.CLICK, C.PURCHASE]))
    labelled = table.filter(pl.col("label") > 0).join(stage.cuts, on="user_idx")
    later = window.join(labelled.select("user_idx", "item_idx", "cut"), on=["user_idx", "item_idx"])
    assert later.height > 0 and (later[C.TS] >= later["cut"]).all()
    assert events.join(labelled.select("user_idx", "item_idx"), on=["user_idx", "item_idx"]).height == 0


def test_scoring_puts_the_ranked_candidates_first_and_never_the_history(fitted):
    data, _, _, pipeline = fitted
    window = data.test
    users = window.users[:10]
    scores = pipeline.score(users, window.history[users])
    assert scores.shape == (len(users), len(data.item_ids)) and np.isfinite(scores).all()
    top = top_k(scores, 5, exclude=window.history[users])
    assert (top >= 0).all()
    assert not np.asarray(window.history[users][np.arange(len(users))[:, None], top].todense()).any()
    # rank gives the same lists, with the ranker's scores best first
    ranked, values = pipeline.rank(users, window.history[users], 5, exclude=window.history[users])
    np.testing.assert_array_equal(ranked, top)
    assert values.shape == (len(users), 5) and (np.diff(values, axis=1) <= 0).all()


def test_lists_longer_than_the_candidates_continue_in_the_fallback_order(fitted):
    """``rank`` builds lists from the ranked candidates (no dense order); past them the fallback model's order."""
    data, _, _, pipeline = fitted
    few = RankingPipeline(replace(pipeline.state, candidates=replace(pipeline.state.candidates, n_per_source=3,
                                                                     n_cold=1)))
    users = data.test.users[:12]
    history = data.test.history[users]
    ranked, values = few.rank(users, history, 30, exclude=history)
    table = few.candidate_table(users, history)
    fallback = few.state.models[few.state.sources[0]].score(users, history)  # no text model: the first one
    for row, user in enumerate(users):
        mine = table.filter(pl.col("user_idx") == user)["item_idx"].to_list()
        listed = [i for i in ranked[row].tolist() if i >= 0]
        assert sorted(listed[:len(mine)]) == sorted(mine)
        seen = set(history[row].indices.tolist())
        rest = [i for i in np.argsort(-fallback[row], kind="stable") if i not in seen and i not in mine]
        assert listed[len(mine):] == rest[:30 - len(mine)]
        assert not seen & set(listed) and len(set(listed)) == len(listed)
    assert (np.diff(np.where(ranked >= 0, values, -np.inf), axis=1) <= 0).all()
    # the same order as the dense scores wherever they are not tied
    dense = top_k(few.score(users, history), 30, exclude=history)
    np.testing.assert_array_equal(ranked[:, :3], dense[:, :3])


def test_the_gates_score_label_users_a_block_at_a_time_with_the_same_result(fitted):
    data, stage, _, _ = fitted
    users = stage.sampled_users
    history = stage.inner_data.interactions[users]
    truth = _truth(stage.labels, users, history.shape[1])
    whole = label_ndcg(stage.inner["lightfm"], users, history, truth, block=len(users))
    np.testing.assert_array_equal(label_ndcg(stage.inner["lightfm"], users, history, truth, block=7), whole)
    assert len(whole) == len(users) and np.nanmean(whole) > 0


def test_quota_view_shares_the_fit_and_lifts_new_items(fitted):
    data, _, recommender, pipeline = fitted
    view = ColdExposureView(recommender, ColdExposure(5, 10, "spread")).fit(data.test.fit)
    assert isinstance(view, RankingPipeline) and view.state is pipeline.state  # nothing refit
    assert view.name == "pipeline_cold5of10_spread" and view.cold == ColdExposure(5, 10, "spread")
    assert recommender.pipeline_ is pipeline and pipeline.cold == ColdExposure()  # the fitted one is unchanged
    window = data.test
    users = window.users
    cold = pipeline.state.cold
    plain = top_k(pipeline.score(users, window.history[users]), 10, exclude=window.history[users])
    quota = top_k(view.score(users, window.history[users]), 10, exclude=window.history[users])
    assert cold[quota[quota >= 0]].mean() > cold[plain[plain >= 0]].mean()


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="label_fraction"):
        PipelineConfig(label_fraction=1.0)
    with pytest.raises(ValueError, match="lightfm_epochs"):
        PipelineConfig(lightfm_epochs=(10, 5))
    with pytest.raises(ValueError, match="sources"):
        PipelineConfig(sources=("lightfm", "bert"))
    with pytest.raises(ValueError, match="cold_curve_slots"):
        PipelineConfig(cold_curve_slots=(40,))


def _gated(fitted, ranker: RankerConfig) -> tuple[PipelineRecommender, RankingPipeline]:
    data, stage, _, _ = fitted
    config = replace(stage.config, ranker=ranker, ranker_base=False, gate_min_users=5)
    gated_stage = StageOne(config, TextTowerConfig())
    recommender = PipelineRecommender(gated_stage, gate=True)
    return recommender, recommender.fit(data.test.fit)


def test_gate_serves_the_best_stage_one_model_when_the_ranker_is_worse(fitted):
    """A ranker that cannot learn (one tree, no learning rate) loses the gate: the best model alone serves."""
    data, _, _, _ = fitted
    recommender, pipeline = _gated(fitted, RankerConfig(n_estimators=1, learning_rate=1e-9, min_data_in_leaf=5))
    gate = recommender.gate_
    assert recommender.kept_ in {"lightfm", "ease", "popularity_recent"} and gate["kept_ranker"] == 0.0
    best = max(("lightfm", "ease", "popularity_recent"), key=lambda n: gate[f"{n}_ndcg@10"])
    assert recommender.kept_ == best and gate["diff"] <= 0 and gate["users"] >= 5
    assert pipeline.state.ranker is None and pipeline.state.sources == (best,) and set(pipeline.state.models) == {best}
    # it ranks exactly as that model alone, and rank() reads its scores
    users = data.test.users[:12]
    history = data.test.history[users]
    alone = recommender.stage_one.full[best]
    np.testing.assert_array_equal(top_k(pipeline.score(users, history), 10, exclude=history),
                                  top_k(alone.score(users, history), 10, exclude=history))
    ranked, values = pipeline.rank(users, history, 5, exclude=history)
    assert (np.diff(values, axis=1) <= 0).all() and (ranked >= 0).all()
    assert f"gate_{best}_ndcg@10" in recommender.stats_


def test_gate_keeps_a_ranker_that_ranks_held_out_users_better(fitted):
    """The gate's figures decide: the ranker stays exactly when it beat the best model alone, each label user
    judged by the fold booster that did not learn from them; no second fit."""
    recommender, pipeline = _gated(fitted, RankerConfig(n_estimators=30, min_data_in_leaf=5))
    gate = recommender.gate_
    alone = max(v for k, v in gate.items() if k.endswith("_ndcg@10") and k != "pipeline_ndcg@10"
                and k != "best_alone_ndcg@10")
    assert gate["best_alone_ndcg@10"] == pytest.approx(alone)
    assert (recommender.kept_ == "ranker") == (gate["diff"] > 0)
    assert (pipeline.state.ranker is not None) == (recommender.kept_ == "ranker")
    assert gate["users"] == recommender.report_.assignment[C.USER_IDX].len()  # every user in a fold judges
    assert recommender.ranker_ is recommender.pipeline_.state.ranker or recommender.kept_ != "ranker"
    # too few label users to hold out: no gate, the ranker is kept
    data, stage, _, _ = fitted
    few = PipelineRecommender(StageOne(replace(stage.config, gate_min_users=10_000), TextTowerConfig()), gate=True)
    assert few.fit(data.test.fit).state.ranker is not None and few.kept_ == "ranker" and few.gate_ == {}


def test_a_losing_ranker_falls_back_to_the_best_baseline_on_the_valid_window(fitted):
    """The baseline with the best valid score serves alone at its tuned setting: its very lists, here and shipped."""
    from training.baseline_specs import baseline_specs
    from training.fit_models import ModelSpec, Tuned

    data, stage, _, _ = fitted
    specs = {s.name: s for s in baseline_specs(["popularity", "itemknn", "lightfm", "ease"])}
    baselines = {"popularity": Tuned(specs["popularity"], None, 0.05), "itemknn": Tuned(specs["itemknn"], 50, 0.09),
                 "lightfm": Tuned(specs["lightfm"], 5, 0.08), "ease": Tuned(specs["ease"], 100.0, float("nan")),
                 "zero_shot": Tuned(ModelSpec("zero_shot", lambda _: None), None, 0.5)}  # not a baseline
    config = replace(stage.config, ranker=RankerConfig(n_estimators=1, learning_rate=1e-9, min_data_in_leaf=5),
                     ranker_base=False, gate_min_users=5)
    recommender = PipelineRecommender(StageOne(config, TextTowerConfig()), gate=True, baselines=baselines)
    pipeline = recommender.fit(data.test.fit)
    assert recommender.kept_ == "itemknn" and recommender.fallback_ is baselines["itemknn"]
    assert recommender.gate_["kept_ranker"] == 0.0 and recommender.gate_["kept_baseline"] == 1.0
    assert pipeline.state.ranker is None and set(pipeline.state.models) == {"itemknn"}
    users = data.test.users
    history = data.test.history[users]
    baseline = specs["itemknn"].build(50).fit(data.test.fit)
    np.testing.assert_array_equal(top_k(pipeline.score(users, history), 10, exclude=history),
                                  top_k(baseline.score(users, history), 10, exclude=history))
    # shipped: the baseline alone, refit on every event (the stage-one models are not refit)
    everything = all_events(data, data.config)
    shipped = refit_for_shipping(recommender, everything)
    assert shipped.kept_ == "itemknn" and shipped.pipeline_.state.ranker is None
    history = everything.interactions[users]
    np.testing.assert_array_equal(shipped.pipeline_.score(users, history),
                                  specs["itemknn"].build(50).fit(everything).score(users, history))
    # no baseline scored on the valid window: the best stage-one model alone, as before
    alone = PipelineRecommender(recommender.stage_one, gate=True, baselines={"ease": baselines["ease"]})
    alone.fit(data.test.fit)
    assert alone.fallback_ is None and alone.kept_ in alone.stage_one.full and alone.gate_["kept_baseline"] == 0.0


def test_stage_ones_lightfm_is_the_baselines_model_at_the_same_epochs(fitted):
    """Served alone after the gate, stage one's LightFM ranks exactly as the LightFM baseline of the same epochs."""
    from training.baseline_specs import baseline_specs

    data, stage, _, _ = fitted
    epochs = int(stage.stats["lightfm"]["best_epochs"])
    baseline = baseline_specs(["lightfm"])[0].build(epochs).fit(data.test.fit)
    users = data.test.users
    np.testing.assert_array_equal(stage.full["lightfm"].score(users, data.test.history[users]),
                                  baseline.score(users, data.test.history[users]))


def test_every_positive_labels_the_ranker_graded_whatever_is_judged(fitted):
    """relevant=purchase (rated data): the evaluation judges purchases; the ranker still learns from clicks too."""
    data, stage, _, _ = fitted
    assert set(stage.labels[C.LABEL].unique().to_list()) == {1, 2}  # clicks 1, purchases 2
    strict = StageOne(stage.config, TextTowerConfig(), eval_config=replace(data.config, relevant=(C.PURCHASE,)))
    strict.fit(data.test.fit)
    assert strict.labels.equals(stage.labels) and strict.cuts.equals(stage.cuts)


def test_the_ranker_boosts_from_zero_unless_the_base_start_ranks_held_out_users_better(fitted):
    """Both starts are judged on the same label users, out of fold, at cross-validated tree counts."""
    _, stage, recommender, pipeline = fitted
    start = recommender.start_
    assert start["users"] == recommender.report_.assignment[C.USER_IDX].len()
    assert (recommender.base_ is not None) == (start["diff_low"] > 0) == (start["kept_base"] == 1.0)
    assert start["diff"] == pytest.approx(start["base_ndcg@10"] - start["zero_ndcg@10"], abs=1e-9)
    assert start["diff_low"] <= start["diff"] <= start["diff_high"]
    assert pipeline.state.ranker.base == recommender.base_
    assert recommender.stats_["start_diff"] == start["diff"]
    # without a base start there is nothing to choose
    data = fitted[0]
    zero = PipelineRecommender(StageOne(replace(stage.config, ranker_base=False), TextTowerConfig()))
    assert zero.fit(data.test.fit).state.ranker.base is None and zero.start_ == {}


def test_text_gate_keeps_the_tower_that_ranks_the_label_window_better(fitted, tiny_bert_dir):
    """Both towers are fitted before the label cut; the pipeline's text model is the one the gate chose."""
    data, stage, _, _ = fitted
    config = replace(stage.config, sources=("text", "popularity_recent"))
    text = TextTowerConfig(model=str(tiny_bert_dir), max_epochs=1, batch_size=16)
    gated = StageOne(config, replace(text, finetune=replace(text.finetune, mode="full"))).fit(data.test.fit)
    gate = gated.stats["text_gate"]
    assert set(gated.towers) == {"text_full", "zero_shot"}
    kept = "text_full" if gate["diff"] > 0 else "zero_shot"
    assert gated.text_kept == kept and gate["kept_fine"] == float(kept == "text_full")
    assert gated.full["text"] is gated.towers[kept]
    assert 0 <= gate["zero_shot_ndcg@10"] <= 1 and gate["users"] == len(gated.label_users)
    assert StageView(gated, "zero_shot", "zero_shot").fit(data.test.fit) is gated.towers["zero_shot"]
    ungated = StageOne(replace(config, text_gate=False), replace(text, finetune=replace(text.finetune, mode="full")))
    assert set(ungated.fit(data.test.fit).towers) == {"text_full"} and "text_gate" not in ungated.stats


def test_itemknn_is_a_stage_one_model_with_its_neighbourhood_chosen_on_the_label_window(fitted):
    data, stage, _, _ = fitted
    knn = StageOne(replace(stage.config, sources=("itemknn", "popularity_recent"), itemknn_neighbours=(3, 30)),
                   TextTowerConfig()).fit(data.test.fit)
    chosen = knn.stats["itemknn"]
    assert chosen["neighbours"] in (3, 30) and 0 <= chosen["label_ndcg@10"] <= 1
    assert {"itemknn", "popularity_recent"} <= set(knn.full) and isinstance(knn.full["itemknn"], Scorer)
    assert knn.full["itemknn"] is not knn.inner["itemknn"]  # refit on the whole window


def test_shipping_refit_keeps_the_evaluated_choices_and_learns_the_newer_events(fitted):
    """The registered model: the same choices (epochs, ranker or one model), fitted on every event."""
    data, _, recommender, pipeline = fitted
    window = data.test.fit
    everything = all_events(data, data.config)
    shipped = refit_for_shipping(recommender, everything)
    assert shipped.kept_ == recommender.kept_ and shipped.stage_one.config.lightfm_epochs == (
        int(recommender.stage_one.stats["lightfm"]["best_epochs"]),)
    assert shipped.pipeline_.state.events[C.TS].max() > pipeline.state.events[C.TS].max()
    assert shipped.stage_one.full["lightfm"].user_factors.shape == pipeline.state.models["lightfm"].user_factors.shape
    # the evaluated ranker ranks the refit models' candidates; nothing is fitted before a label cut
    assert shipped.kept_ == "ranker" and shipped.pipeline_.state.ranker is recommender.ranker_
    assert shipped.stage_one.inner == {} and set(shipped.stage_one.full) == set(recommender.stage_one.full)
    assert shipped.stage_one.full["lightfm"] is not recommender.stage_one.full["lightfm"]
    users = data.test.users[:5]
    top, _ = shipped.pipeline_.rank(users, everything.interactions[users], k=10)
    assert top.shape == (5, 10) and (top >= 0).all()
    # a model that serves alone ships alone: only it is refit
    recommender.kept_ = "ease"
    try:
        alone = refit_for_shipping(recommender, everything)
    finally:
        recommender.kept_ = "ranker"
    assert set(alone.stage_one.full) == {"ease"} and alone.pipeline_.state.ranker is None
    served = PipelineRecommender(recommender.stage_one, keep="ease")
    alone = served.fit(window)
    assert alone.state.ranker is None and alone.state.sources == ("ease",) and served.kept_ == "ease"


def test_a_sample_of_label_users_trains_the_ranker_and_judges_stage_ones_choices(fitted):
    """On large logs every label-window scoring reads the same seeded sample (bounded time and memory)."""
    data, stage, _, _ = fitted
    small = StageOne(replace(stage.config, max_label_users=12, sources=("lightfm", "itemknn", "popularity_recent"),
                             itemknn_neighbours=(3, 30)), TextTowerConfig())
    recommender = PipelineRecommender(small)
    recommender.fit(data.test.fit)
    assert len(small.label_users) > 12 and len(small.sampled_users) == 12
    assert set(small.sampled_users) <= set(small.label_users)
    assert recommender.stats_["train_users"] == 12
    assert recommender.train_table_[C.USER_IDX].n_unique() <= 12
    again = StageOne(small.config, TextTowerConfig()).fit(data.test.fit)
    np.testing.assert_array_equal(again.sampled_users, small.sampled_users)  # seeded


def test_the_last_ranker_trained_releases_the_label_window_and_later_variants_say_so(fitted):
    """Without ablations the main pipeline is the only ranker: its label window goes before the evaluation."""
    data, stage, recommender, pipeline = fitted
    own = StageOne(stage.config, TextTowerConfig())
    last = PipelineRecommender(own, frees_label_window=True)
    served = last.fit(data.test.fit)
    assert own.inner == {} and own.inner_data is None and own.labels is None and own.cuts is None
    assert last.train_table_ is None and last.stats_["train_rows"] > 0 and "label" in last.feature_summary_
    assert set(own.full) == set(stage.full) and served.state.models == own.full
    users = data.test.users[:8]
    top, _ = served.rank(users, data.test.history[users], 10, exclude=data.test.history[users])
    # the same choices and ranker training as the variant that kept its window: the same lists
    expected, _ = pipeline.rank(users, data.test.history[users], 10, exclude=data.test.history[users])
    np.testing.assert_array_equal(top, expected)
    assert StageView(own, "lightfm").fit(data.test.fit) is own.full["lightfm"]  # the towers and full models stay
    with pytest.raises(NotFittedError, match="label window was released"):
        PipelineRecommender(own, name="pipeline_no_text", without=("text",)).fit(data.test.fit)


def test_the_test_windows_candidate_recall_reads_the_candidates_without_their_features(fitted):
    data, _, recommender, pipeline = fitted
    users = data.test.users
    got = window_candidate_recall(recommender, SimpleNamespace(data=data))
    table = pipeline.candidate_table(users, data.test.history[users])
    truth = data.test.truth[users].tocoo()
    pairs = pl.DataFrame({"user_idx": users[truth.row].astype(np.int64), "item_idx": truth.col.astype(np.int64)})
    assert got == candidate_recall(table, pairs) and 0 < got["recall"] <= 1
    assert pipeline.candidates(users, data.test.history[users]).select("user_idx", "item_idx").equals(
        table.select("user_idx", "item_idx"))


def test_the_dense_order_is_the_same_whatever_rows_are_computed_at_once(fitted, monkeypatch):
    import recsys.pipeline as pipeline_module

    data, _, _, pipeline = fitted
    users = data.test.users[:20]
    whole = pipeline.score(users, data.test.history[users])
    monkeypatch.setattr(pipeline_module, "_FALLBACK_ROWS", 3)
    np.testing.assert_array_equal(pipeline.score(users, data.test.history[users]), whole)
    assert whole.dtype == np.float32 and np.isfinite(whole).all()


@pytest.mark.parametrize("screened", [False, True], ids=["dense-selection", "screen"])
def test_linear_models_hand_their_rows_moments_to_the_candidates_with_the_same_features(fitted, monkeypatch,
                                                                                       screened):
    """LightFM's block is lazy (its z-scores from its factors' moments, its top items from the screen on a large
    catalogue; here forced onto the small one): the same candidate table as its dense scores give."""
    data, _, _, pipeline = fitted
    if screened:  # a screen needs a catalogue past its heap: 10 per source, heaps of 2 x 10 + 4 of the 60 items
        monkeypatch.setattr(factor_scores, "SCREEN_MIN_ITEMS", 0)
        monkeypatch.setattr(factor_scores, "SCREEN_NATIVE", True)
        monkeypatch.setattr(factor_scores, "SCREEN_SLACK", 4)
        built: list[int] = []
        screen = factor_scores.Screen.candidates
        monkeypatch.setattr(factor_scores.Screen, "candidates",
                            lambda self, user, *a, **k: built.append(len(user)) or screen(self, user, *a, **k))
        state = replace(pipeline.state, candidates=replace(pipeline.state.candidates, n_per_source=10))
        pipeline = RankingPipeline(state, name=pipeline.name, cold=pipeline.cold)
    users = data.test.users[:12]
    history = data.test.history[users]
    scores = pipeline.stage_scores(users, history)
    assert isinstance(scores["lightfm"], FactorScores)
    mean, std = scores["lightfm"].moments
    dense = scores["lightfm"].dense().astype(np.float64)
    np.testing.assert_allclose(mean, dense.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, dense.std(axis=1), rtol=1e-5, atol=1e-6)
    known = pipeline.candidate_table(users, history, scores=scores)
    read = pipeline.candidate_table(users, history, scores=scores | {"lightfm": scores["lightfm"].dense()})
    np.testing.assert_allclose(known["score_lightfm"].to_numpy(), read["score_lightfm"].to_numpy(), rtol=1e-4,
                               atol=1e-5)
    assert known.drop("score_lightfm").equals(read.drop("score_lightfm"))
    assert bool(built) if screened else True  # the forced screen ranked LightFM's block
