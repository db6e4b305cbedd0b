"""The text tower judged on items it never trained on: held-out items, their negatives, the pretrained
fallback and the text-read appeal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from features.split import SplitConfig
from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.io import Dataset
from recsys.scorers.text_head import TowerHead
from recsys.synthetic import SyntheticConfig, generate_synthetic
from training.encoder_modes import FineTuneConfig
from training.fit_text import TextTowerRecommender, with_mode
from training.text_appeal import fit_appeal
from training.text_data import Examples, build_examples, holdout_negatives, split_holdout
from training.text_tower import TextTowerConfig


@pytest.fixture(scope="module")
def data():
    items, inter = generate_synthetic(SyntheticConfig(n_users=80, n_items=80, sessions_per_user=8, slate_size=6,
                                                      seed=1))
    return build_eval_data(Dataset(items, inter), EvalConfig(split=SplitConfig("global", 0.1, 0.2), n_bootstrap=200))


@pytest.fixture(scope="module")
def examples(data):
    return build_examples(data.test.fit.events, positives=("click", "purchase"), history_length=5,
                          use_impressions=False)


def _config(model_dir, **kw) -> TextTowerConfig:
    base = dict(model=str(model_dir), finetune=FineTuneConfig(mode="full"), max_epochs=2, lr=3e-4, batch_size=32,
                patience=10, impressions="no")
    return TextTowerConfig(**(base | kw))


def test_held_out_items_leave_training_with_every_example(examples):
    train, holdout = split_holdout(examples, 0.1, items_share=0.2, seed=3)
    held = np.unique(holdout.items)
    seen = np.unique(examples.items)
    assert len(held) == round(0.2 * len(seen))
    assert not np.isin(train.items, held).any()  # no example of a held-out item is trained on
    assert len(train) + len(holdout) == len(examples)
    assert np.array_equal(np.unique(split_holdout(examples, 0.1, items_share=0.2, seed=3)[1].items), held)
    assert not np.array_equal(np.unique(split_holdout(examples, 0.1, items_share=0.2, seed=4)[1].items), held)
    # without held-out items: the newest share by time
    train, holdout = split_holdout(examples, 0.1)
    assert train.times.max() <= holdout.times.min()
    with pytest.raises(ValueError, match=r"held-out item share must be in \[0, 1\)"):
        split_holdout(examples, 0.1, items_share=1.0)


def test_holdout_negatives_are_other_held_out_items(examples):
    _, holdout = split_holdout(examples, 0.1, items_share=0.25, seed=0)
    negatives = holdout_negatives(holdout, 80, 20, items_held=True, seed=1)
    assert negatives.shape == (len(holdout), 20)
    assert np.isin(negatives, np.unique(holdout.items)).all()
    assert (negatives != holdout.items[:, None]).all()  # never the positive itself
    assert len(np.unique(negatives)) == len(np.unique(holdout.items))  # every held-out item is drawn
    anywhere = holdout_negatives(holdout, 80, 20, items_held=False, seed=1)
    assert not np.isin(anywhere, np.unique(holdout.items)).all()


def _appeal_case(sign: float):
    """Items whose vectors carry their popularity along one direction; held-out positives follow it (sign 1)
    or run against it (sign -1)."""
    rng = np.random.default_rng(0)
    n, d = 200, 16
    vectors = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32))
    unit = torch.nn.functional.normalize(vectors, dim=-1).numpy()
    appeal = unit[:, 0]
    trained, held = np.arange(150), np.arange(150, 200)
    counts = np.round(np.exp(3 * (appeal[trained] - appeal[trained].min()))).astype(int) + 1
    items = np.repeat(trained, counts)
    history = rng.integers(n, size=(len(items), 4))
    train = Examples(np.zeros(len(items), np.int64), items, np.ones(len(items), np.float32), history,
                     np.arange(len(items)), np.arange(len(items)))
    weights = np.exp(sign * 4 * appeal[held])
    positives = rng.choice(held, size=300, p=weights / weights.sum())
    holdout = Examples(np.zeros(300, np.int64), positives, np.ones(300, np.float32), rng.integers(n, size=(300, 4)),
                       np.arange(300), np.arange(300))
    negatives = holdout_negatives(holdout, n, 20, items_held=True, seed=0)
    return vectors, train, holdout, negatives


def test_the_appeal_is_kept_where_it_ranks_held_out_items_better():
    vectors, train, holdout, negatives = _appeal_case(1.0)
    head = TowerHead(16)
    stats = fit_appeal(head, vectors, train, holdout, negatives)
    assert stats["appeal_weight"] > 0
    assert stats["holdout_auc_appeal"] > stats["holdout_auc_match"] + 0.1
    with torch.no_grad():
        read = head.item_appeal(vectors).numpy()
    unit = torch.nn.functional.normalize(vectors, dim=-1).numpy()
    assert np.corrcoef(read, unit[:, 0])[0, 1] > 0.9  # it learned the direction that carries popularity


def test_the_appeal_stays_zero_where_it_does_not_carry_over_to_new_items():
    vectors, train, holdout, negatives = _appeal_case(-1.0)
    head = TowerHead(16)
    stats = fit_appeal(head, vectors, train, holdout, negatives)
    assert stats["appeal_weight"] == 0 and stats["holdout_auc_appeal"] == stats["holdout_auc_match"]
    assert not head.appeal.weight.any() and not head.appeal.bias.any()


def test_positives_only_tower_is_judged_on_items_it_never_trained_on(data, tiny_bert_dir):
    model = TextTowerRecommender(_config(tiny_bert_dir, holdout_items=0.2))
    model.fit(data.test.fit)
    stats = model.stats_
    assert stats["holdout_examples"] > 0 and 0 < stats["train_examples"]
    assert 0.0 <= stats["pretrained_valid_auc"] <= 1.0
    assert stats["best_valid_auc"] >= stats["pretrained_valid_auc"]  # never worse than where it started
    assert "appeal_weight" in stats and stats["holdout_auc_appeal"] >= stats["holdout_auc_match"]


def test_fine_tuning_that_ruins_the_encoder_falls_back_to_the_pretrained_weights(data, tiny_bert_dir):
    """A learning rate that wrecks the encoder loses to the pretrained weights on the held-out items: those are kept,
    so the catalogue vectors are the zero-shot twin's."""
    config = _config(tiny_bert_dir, lr=3.0, head_lr=3.0, warmup_ratio=0.0, grad_clip=0.0, holdout_items=0.3)
    model = TextTowerRecommender(config)
    model.fit(data.test.fit)
    assert model.stats_["kept_pretrained"] == 1.0
    assert model.stats_["best_valid_auc"] == model.stats_["pretrained_valid_auc"]
    zero = TextTowerRecommender(with_mode(config, "zero-shot"))
    zero.fit(data.test.fit)
    torch.testing.assert_close(model.item_vectors_, zero.item_vectors_)
