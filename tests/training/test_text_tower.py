"""The text tower end to end on synthetic data with a tiny BERT: learning, modes, resume, seeds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch
from pytorch_lightning.loggers import CSVLogger

from features.split import SplitConfig
from recsys.errors import NotFittedError, RecsysError
from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.io import Dataset
from recsys.scorers import Scorer, TextScorer
from recsys.scorers.text_head import PAD, history_windows
from recsys.synthetic import SyntheticConfig, generate_synthetic
from training.baseline_specs import baseline_specs
from training.encoder_modes import FineTuneConfig
from training.fit_models import ModelSpec, evaluate_specs
from training.fit_text import TextTowerRecommender, with_mode
from training.text_data import build_examples
from training.text_tower import TextTowerConfig, tower_name


@pytest.fixture(scope="module")
def data():
    items, inter = generate_synthetic(SyntheticConfig(n_users=80, n_items=80, sessions_per_user=8, slate_size=6,
                                                      seed=1))
    return build_eval_data(Dataset(items, inter), EvalConfig(split=SplitConfig("global", 0.1, 0.2), n_bootstrap=200))


def _config(model_dir, mode="full", **kw) -> TextTowerConfig:
    # the tiny BERT's "pretrained" weights are random: these tests study what fine-tuning does, so no fallback
    base = dict(model=str(model_dir), finetune=FineTuneConfig(mode=mode), max_epochs=3, lr=3e-4, batch_size=32,
                patience=10, pretrained_fallback=False)
    return TextTowerConfig(**(base | kw))


def test_history_windows_take_only_earlier_positives():
    users = np.array([0, 0, 0, 1, 1])
    items = np.array([10, 11, 12, 20, 21])
    times = np.array([1, 2, 3, 5, 6])
    out = history_windows(users, items, times, np.array([0, 0, 1, 2]), np.array([3, 9, 5, 9]), 2)
    assert out.tolist() == [[10, 11], [11, 12], [PAD, PAD], [PAD, PAD]]  # strictly before; user 2 has none


def _windows_by_loop(users, items, times, query_users, query_times, length):
    out = np.full((len(query_users), length), PAD, dtype=np.int64)
    for row, (u, t) in enumerate(zip(query_users, query_times, strict=True)):
        earlier = items[(users == u) & (times < t)][-length:]
        if len(earlier):
            out[row, length - len(earlier):] = earlier
    return out


@pytest.mark.parametrize("unit", ["ns", "us", "s"])
def test_history_windows_take_any_number_of_users_and_any_time_span(unit):
    """50,000 users with times in nanoseconds across a century: no int64 overflow, the same windows as a loop."""
    rng = np.random.default_rng(0)
    n_users, m = 50_000, 200_000
    per_second = {"ns": 10**9, "us": 10**6, "s": 1}[unit]
    century = 100 * 365 * 86_400 * per_second  # 1925-2025 in ns is 3.2e18, near the int64 limit
    users = np.sort(rng.integers(0, n_users, m))
    times = np.zeros(m, dtype=np.int64)
    starts = np.searchsorted(users, np.arange(n_users))
    for u0, u1 in zip(starts, np.append(starts[1:], m), strict=True):
        times[u0:u1] = np.sort(rng.integers(-century // 2, century // 2, u1 - u0))
    items = rng.integers(0, 1_000, m)
    query_users = np.concatenate([rng.integers(0, n_users, 300), [n_users - 1, n_users + 5]])
    query_times = np.concatenate([rng.integers(-century // 2, century // 2, 300), [century, 0]])
    got = history_windows(users, items, times, query_users, query_times, 4)
    np.testing.assert_array_equal(got, _windows_by_loop(users, items, times, query_users, query_times, 4))
    assert (got[-2] >= 0).any() and (got[-1] == PAD).all()  # the last user's whole history; an unknown user none


def test_examples_from_impressions_label_shown_items(data):
    ex = build_examples(data.test.fit.events, positives=("click", "purchase"), history_length=5, use_impressions=True)
    shown = data.test.fit.events.filter(pl.col("event") == "impression").unique(["impression_id", "item_idx"])
    assert len(ex) == shown.height and 0 < ex.labels.mean() < 0.5
    assert set(np.unique(ex.labels)) == {0.0, 1.0}
    # every history item of an example is one of the user's positives before it
    pos = data.test.fit.events.filter(pl.col("event") != "impression")
    first = pos.group_by("user_idx", "item_idx").agg(pl.col("timestamp").min().dt.epoch("us"))
    earliest = {(u, i): t for u, i, t in first.iter_rows()}
    for row in range(0, len(ex), 97):
        for item in ex.history[row][ex.history[row] >= 0]:
            assert earliest[(int(ex.users[row]), int(item))] < ex.times[row]


def test_fine_tuned_beats_zero_shot_and_a_text_blind_baseline(data, tiny_bert_dir):
    specs = [ModelSpec("zero_shot", lambda _: TextTowerRecommender(_config(tiny_bert_dir, "zero-shot"))),
             ModelSpec("text_full", lambda _: TextTowerRecommender(_config(tiny_bert_dir, max_epochs=12))),
             *baseline_specs(["popularity"])]
    result = evaluate_specs(data, specs)
    # The impression protocol: rank each test impression's shown items (clicked vs not).
    auc = {m.name: float(np.nanmean(m.impressions["auc"])) for m in result.models}
    assert auc["text_full"] > auc["zero_shot"] + 0.02, auc
    assert auc["text_full"] > auc["popularity"] + 0.05, auc


def test_loss_falls_and_metrics_are_logged(data, tiny_bert_dir, tmp_path):
    logger = CSVLogger(tmp_path, name="tower")
    model = TextTowerRecommender(_config(tiny_bert_dir, max_epochs=4), logger_=logger)
    model.fit(data.test.fit)
    metrics = pl.read_csv(tmp_path / "tower" / "version_0" / "metrics.csv")
    per_epoch = metrics.filter(pl.col("train/loss_epoch").is_not_null())["train/loss_epoch"].to_list()
    assert len(per_epoch) == 4 and per_epoch[-1] < per_epoch[0]
    assert metrics["valid/auc"].drop_nulls().len() == 5  # the pretrained weights (epoch 0), then each epoch
    assert model.stats_["trainable_params"] == model.stats_["total_params"] > 0
    assert model.stats_["examples_per_s"] > 0 and 0.5 < model.stats_["best_valid_auc"] <= 1.0


@pytest.mark.parametrize("mode", ["bitfit", "lora", "freeze:1"])
def test_each_mode_changes_only_its_parameters(data, tiny_bert_dir, mode):
    model = TextTowerRecommender(_config(tiny_bert_dir, mode, max_epochs=1))
    model.fit(data.test.fit)
    fresh = TextTowerRecommender(_config(tiny_bert_dir, "zero-shot"))
    fresh.fit(data.test.fit)
    trained = dict(model.module_.encoder.named_parameters())
    base = {name.split("base_model.model.")[-1]: p for name, p in fresh.module_.encoder.named_parameters()}
    changed, frozen_changed = 0, []
    for name, param in trained.items():
        key = name.split("base_model.model.")[-1].replace(".base_layer", "")
        if key in base and param.shape == base[key].shape:
            moved = not torch.equal(param, base[key])
            changed += moved
            if moved and not param.requires_grad:
                frozen_changed.append(name)
    assert frozen_changed == [] and (changed > 0 or mode == "lora")
    assert 0 < model.stats_["trainable_params"] < model.stats_["total_params"]


def test_same_seed_same_metrics(data, tiny_bert_dir):
    a, b = (TextTowerRecommender(_config(tiny_bert_dir, max_epochs=2)) for _ in range(2))
    scorer_a, scorer_b = a.fit(data.test.fit), b.fit(data.test.fit)
    assert a.stats_["best_valid_auc"] == b.stats_["best_valid_auc"]
    assert torch.equal(a.item_vectors_, b.item_vectors_)
    assert torch.equal(scorer_a.item_vectors_, scorer_b.item_vectors_)
    users = np.arange(5)
    np.testing.assert_array_equal(scorer_a.score(users, data.test.history[:5]),
                                  scorer_b.score(users, data.test.history[:5]))


def test_resume_continues_from_the_last_checkpoint(data, tiny_bert_dir, tmp_path):
    cfg = _config(tiny_bert_dir, max_epochs=1, checkpoint_dir=str(tmp_path))
    first = TextTowerRecommender(cfg)
    first.fit(data.test.fit)
    assert (tmp_path / "last.ckpt").exists() and first.stats_["epochs"] == 1
    step_after_one = torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"]
    resumed = TextTowerRecommender(replace(cfg, max_epochs=2, resume=True))
    resumed.fit(data.test.fit)
    assert resumed.stats_["epochs"] == 2
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 2 * step_after_one


def test_a_checkpoint_that_would_run_code_is_refused_on_resume(data, tiny_bert_dir, tmp_path):
    """Resuming reads tensors and plain values only: a crafted last.ckpt cannot execute anything."""
    import pickle
    from pathlib import Path

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    cfg = _config(tiny_bert_dir, max_epochs=1, checkpoint_dir=str(tmp_path), resume=True)
    (tmp_path / "last.ckpt").write_bytes(pickle.dumps({"state_dict": {}, "global_step": Payload()}))
    with pytest.raises(RecsysError, match="last.ckpt: the checkpoint holds more than tensors"):
        TextTowerRecommender(cfg).fit(data.test.fit)
    assert not marker.exists()


def test_a_clock_stops_fine_tuning_and_keeps_what_it_learned(data, tiny_bert_dir):
    """``max_minutes`` bounds the training's wall time however many epochs were asked for."""
    free = TextTowerRecommender(_config(tiny_bert_dir, max_epochs=3))
    free.fit(data.test.fit)
    clocked = TextTowerRecommender(_config(tiny_bert_dir, max_epochs=50, max_minutes=0.02))
    scorer = clocked.fit(data.test.fit)
    assert clocked.stats_["stopped_by_clock"] == 1.0 and free.stats_["stopped_by_clock"] == 0.0
    assert clocked.stats_["epochs"] < 50 and clocked.stats_["train_wall_s"] < 1.2 + 0.02 * 60
    assert np.isfinite(scorer.score(np.arange(3), data.test.history[:3])).all()
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        _config(tiny_bert_dir, max_minutes=0)
    # early stopping scores a capped sample of the holdout
    capped = TextTowerRecommender(_config(tiny_bert_dir, max_epochs=1, max_holdout_examples=7))
    capped.fit(data.test.fit)
    assert capped.stats_["holdout_examples"] == 7 < free.stats_["holdout_examples"]


def test_a_freeze_tower_hands_its_zero_shot_twin_the_pretrained_catalogue(data, tiny_bert_dir):
    """freeze:N's frozen layers are the pretrained ones: encoding before training gives zero-shot's vectors."""
    fine = TextTowerRecommender(_config(tiny_bert_dir, "freeze:1", max_epochs=1), keep_pretrained=True)
    fine.fit(data.test.fit)
    zero = TextTowerRecommender(_config(tiny_bert_dir, "zero-shot"))
    zero.fit(data.test.fit)
    # up to the float16 the frozen layers' output is held in (training.encoder_modes.FROZEN_DTYPE)
    torch.testing.assert_close(fine.pretrained_vectors_, zero.item_vectors_, rtol=0, atol=1e-3)
    assert not torch.allclose(fine.item_vectors_, fine.pretrained_vectors_)  # training moved the top layer
    twin = TextTowerRecommender(_config(tiny_bert_dir, "zero-shot"), item_vectors=fine.pretrained_vectors_)
    scorer = twin.fit(data.test.fit)
    assert scorer.item_vectors_ is fine.pretrained_vectors_
    users = np.arange(6)
    np.testing.assert_allclose(scorer.score(users, data.test.history[:6]),
                               zero.scorer().score(users, data.test.history[:6]), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="only for a zero-shot tower"):
        TextTowerRecommender(_config(tiny_bert_dir, "freeze:1"), item_vectors=fine.pretrained_vectors_)


def test_scoring_before_fit_and_names(data, tiny_bert_dir):
    model = TextTowerRecommender(_config(tiny_bert_dir, "zero-shot"))
    assert not isinstance(model, Scorer) and not hasattr(model, "score")  # only fit() hands out a scorer
    with pytest.raises(NotFittedError, match="call fit"):
        model.scorer()
    with pytest.raises(NotFittedError, match="call fit"):
        model.quantized()
    assert tower_name(_config(tiny_bert_dir, "freeze:4")) == "text_freeze4" and model.name == "zero_shot"
    assert with_mode(_config(tiny_bert_dir, "lora"), "zero-shot").finetune.mode == "zero-shot"
    with pytest.raises(ValueError, match="Must be one of cosine, dot"):
        _config(tiny_bert_dir, similarity="euclid")


def test_positives_only_data_trains_with_sampled_negatives(data, tiny_bert_dir):
    model = TextTowerRecommender(_config(tiny_bert_dir, max_epochs=2, impressions="no"))
    scorer = model.fit(data.test.fit)
    assert model.stats_["train_examples"] > 0 and model.stats_["best_valid_auc"] > 0.5
    scores = scorer.score(np.arange(4), data.test.history[:4])
    assert scores.shape == (4, len(data.item_ids)) and np.isfinite(scores).all()


def test_int8_catalogue_encoding_stays_close_to_fp32(data, tiny_bert_dir):
    tower = TextTowerRecommender(_config(tiny_bert_dir, max_epochs=1))
    model = tower.fit(data.test.fit)
    int8 = tower.quantized()
    assert isinstance(int8, TextScorer) and model.name == "text_full"
    assert int8.name == "text_full_int8" and int8.item_vectors_.shape == model.item_vectors_.shape
    cosine = torch.nn.functional.cosine_similarity(int8.item_vectors_, model.item_vectors_, dim=1)
    assert cosine.min() > 0.9 and not torch.equal(int8.item_vectors_, model.item_vectors_)
    users, history = np.arange(10), data.test.history[:10]
    top = lambda s: np.argsort(-s, axis=1)[:, :10]  # noqa: E731
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top(model.score(users, history)),
                                                                   top(int8.score(users, history)), strict=True)])
    assert overlap > 0.6


def test_fit_returns_the_serving_scorer_whose_encoder_reproduces_the_catalogue(data, tiny_bert_dir):
    tower = TextTowerRecommender(_config(tiny_bert_dir, "lora", max_epochs=1))
    scorer = tower.fit(data.test.fit)
    assert isinstance(scorer, TextScorer) and isinstance(scorer, Scorer) and tower.scorer() is scorer
    assert scorer.name == tower.name == "text_lora"
    assert scorer.item_vectors_ is tower.item_vectors_ and scorer.user_history_ is tower.user_history_
    assert not any("lora" in n for n, _ in scorer.encoder.named_modules())  # merged: a plain transformer
    # the merged serving encoder encodes the catalogue as the training encoder did
    torch.testing.assert_close(scorer.encode(data.test.fit.items), tower.item_vectors_, atol=1e-5, rtol=1e-4)
    users = np.arange(6)
    scores = scorer.score(users, data.test.history[:6])
    assert scores.shape == (6, len(data.item_ids)) and scores.dtype == np.float32


def _earlier_events(data) -> pl.DataFrame:
    """The fit window's events before its middle timestamp: a shorter history for every user."""
    events = data.test.fit.events
    return events.filter(pl.col("timestamp") < events["timestamp"].sort()[events.height // 2])


def test_with_history_re_reads_the_users_recent_items(data, tiny_bert_dir):
    scorer = TextTowerRecommender(_config(tiny_bert_dir, "zero-shot")).fit(data.test.fit)
    n_users, length = len(data.user_ids), scorer.user_history_.shape[1]
    same = scorer.with_history(data.test.fit.events, n_users)
    np.testing.assert_array_equal(same.user_history_, scorer.user_history_)
    earlier = _earlier_events(data)
    shorter = scorer.with_history(earlier, n_users)
    assert shorter.encoder is scorer.encoder and shorter.item_vectors_ is scorer.item_vectors_  # nothing refits
    assert not np.array_equal(shorter.user_history_, scorer.user_history_)
    # slow reference: each user's positives in `earlier` (all of them while they fit the window)
    positives = earlier.filter(pl.col("event").is_in(["click", "purchase"]))
    checked = 0
    for user in range(n_users):
        items = sorted(positives.filter(pl.col("user_idx") == user)["item_idx"].to_list())
        if len(items) <= length:
            assert sorted(shorter.user_history_[user][shorter.user_history_[user] >= 0].tolist()) == items
            checked += 1
    assert checked > n_users // 2
    users = np.arange(8)
    assert not np.allclose(shorter.score(users, data.test.history[:8]), scorer.score(users, data.test.history[:8]))


def test_a_second_fit_returns_the_second_windows_scorer(data, tiny_bert_dir):
    tower = TextTowerRecommender(_config(tiny_bert_dir, "zero-shot"))
    first = tower.fit(replace(data.test.fit, events=_earlier_events(data)))
    second = tower.fit(data.test.fit)
    assert not np.array_equal(first.user_history_, second.user_history_)
    np.testing.assert_array_equal(second.user_history_, tower.user_history_)
