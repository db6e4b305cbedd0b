"""The text tower judged on items it never trained on: held-out items, their negatives, the pretrained
fallback, and the item terms weighed on them (the text-read appeal, the lexical term)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from pytorch_lightning.loggers import Logger

from features.split import SplitConfig
from recsys import contract as C
from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.io import Dataset
from recsys.scorers.text_head import TowerHead
from recsys.scorers.text_lexical import LexicalIndex
from recsys.scorers.text_neighbours import NeighbourIndex
from recsys.synthetic import SyntheticConfig, generate_synthetic
from training.encoder_modes import FineTuneConfig
from training.fit_text import TextTowerRecommender, with_mode
from training.text_data import Examples, build_examples, held_out_items, holdout_negatives, split_holdout
from training.text_item_terms import HeldOutUsers, ImpressionJudge, NewItemJudge, fit_item_terms, held_out_users
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


def test_a_budget_draws_examples_before_their_windows_and_keeps_the_whole_window_counts(data, examples):
    events = data.test.fit.events
    drawn = build_examples(events, positives=("click", "purchase"), history_length=5, use_impressions=False,
                           budget=50, seed=7)
    keep = np.sort(np.random.default_rng(7).choice(len(examples), 50, replace=False))
    expected = examples.take(keep)  # the draw the tower made after building every window
    assert len(drawn) == 50 < len(examples)
    for field in ("users", "items", "labels", "history", "times"):
        assert np.array_equal(getattr(drawn, field), getattr(expected, field)), field
    assert len(np.unique(drawn.group)) == len(drawn)  # positives only: each example is its own group
    items, labels = drawn.everything()  # the popularity correction still counts the whole window
    assert np.array_equal(items, examples.items) and np.array_equal(labels, examples.labels)
    assert examples.everything()[0] is examples.items  # nothing drawn: the examples are the window
    big = build_examples(events, positives=("click", "purchase"), history_length=5, use_impressions=False,
                         budget=len(examples), seed=7)
    assert big.population is None and np.array_equal(big.history, examples.history)


@pytest.mark.parametrize("impressions", [False, True])
def test_examples_are_the_same_at_every_build(impressions):
    """Group ids and order come from the log alone: a hash-ordered ``unique`` numbered them differently at each
    build (all but a handful of 100,000 positives-only group ids moved from one build to the next)."""
    rng = np.random.default_rng(0)
    n = 200_000
    events = pl.DataFrame({C.USER_IDX: rng.integers(0, 5_000, n), C.ITEM_IDX: rng.integers(0, 3_000, n),
                           C.EVENT: rng.choice(["click", "impression"], n),
                           C.IMPRESSION_ID: rng.integers(0, 20_000, n).astype(str),
                           C.TS: pl.Series(rng.integers(0, 10**6, n) * 10**6).cast(pl.Datetime("us"))})

    def build() -> Examples:
        return build_examples(events, positives=("click",), history_length=5, use_impressions=impressions)

    first = build()
    for _ in range(3):
        again = build()
        for field in ("users", "items", "labels", "history", "times", "group"):
            assert np.array_equal(getattr(again, field), getattr(first, field)), field


def _config(model_dir, **kw) -> TextTowerConfig:
    base = dict(model=str(model_dir), finetune=FineTuneConfig(mode="full"), max_epochs=2, lr=3e-4, batch_size=32,
                patience=10, impressions="no")
    return TextTowerConfig(**(base | kw))


def test_held_out_items_leave_training_with_every_example(examples):
    seen = np.unique(examples.items)
    held = held_out_items(seen, 0.2, seed=3)
    train, holdout = split_holdout(examples, 0.1, held=held)
    assert len(held) == round(0.2 * len(seen)) and np.array_equal(np.unique(holdout.items), held)
    assert not np.isin(train.items, held).any()  # no example of a held-out item is trained on
    assert not np.isin(train.history, held).any() and not np.isin(holdout.history, held).any()  # nor read as history
    assert (train.history >= 0).any(axis=1).mean() > 0.5  # the other history items stay
    assert len(train) + len(holdout) == len(examples)
    assert np.array_equal(held_out_items(seen, 0.2, seed=3), held)
    assert not np.array_equal(held_out_items(seen, 0.2, seed=4), held)
    # without held-out items: the newest share by time
    train, holdout = split_holdout(examples, 0.1)
    assert train.times.max() <= holdout.times.min()
    with pytest.raises(ValueError, match=r"held-out item share must be in \(0, 1\)"):
        held_out_items(seen, 1.0)


def test_held_out_items_are_a_share_of_the_pool_not_of_the_sample(examples):
    """Drawn from every item with an event, a held-out item need not have a training example: the share is of
    the catalogue's items, as new items are, not of the popular items a sample of events holds."""
    sampled = np.unique(examples.items)
    pool = np.arange(sampled.max() + 1 + len(sampled))  # as many items again with events but no sampled example
    held = held_out_items(pool, 0.2, seed=0)
    assert len(held) == round(0.2 * len(pool)) and not np.isin(held, sampled).all()
    train, holdout = split_holdout(examples, 0.1, held=held)
    assert np.isin(np.unique(holdout.items), held).all() and not np.isin(train.items, held).any()


def test_holdout_negatives_are_other_held_out_items(examples):
    _, holdout = split_holdout(examples, 0.1, held=held_out_items(np.unique(examples.items), 0.25, seed=0))
    negatives = holdout_negatives(holdout, 80, 20, items_held=True, seed=1)
    assert negatives.shape == (len(holdout), 20)
    assert np.isin(negatives, np.unique(holdout.items)).all()
    assert (negatives != holdout.items[:, None]).all()  # never the positive itself
    assert len(np.unique(negatives)) == len(np.unique(holdout.items))  # every held-out item is drawn
    anywhere = holdout_negatives(holdout, 80, 20, items_held=False, seed=1)
    assert not np.isin(anywhere, np.unique(holdout.items)).all()


def test_the_new_item_judge_sees_users_as_the_new_item_protocol_does():
    """Users with a held-out positive, their held-out positives as truth, their history and window without any
    held-out item; a seeded sample where there are more users than the cap."""
    events = pl.DataFrame({C.USER_IDX: [0, 0, 0, 1, 1, 2, 3, 3], C.ITEM_IDX: [1, 5, 2, 5, 6, 3, 6, 1],
                           C.EVENT: ["click"] * 7 + ["impression"],
                           C.TS: pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 8), "1d",
                                                   eager=True)})
    users = held_out_users(events, 4, 8, np.array([6, 5]), ("click",), length=3)
    np.testing.assert_array_equal(users.items, [5, 6])
    assert users.truth.toarray().tolist() == [[True, False], [True, True], [False, True]]  # users 0, 1 and 3
    history = users.history.toarray()
    assert history[:, [5, 6]].sum() == 0  # no held-out item in any history
    np.testing.assert_array_equal(history[0].nonzero()[0], [1, 2])
    assert history[2].sum() == 0  # user 3 only saw item 1: an impression is not a positive
    np.testing.assert_array_equal(users.windows, [[-1, 1, 2], [-1, -1, -1], [-1, -1, -1]])
    assert held_out_users(events, 4, 8, np.array([5, 6]), ("click",), length=3, max_users=1).truth.shape == (1, 2)
    # judged on purchases (rated data): only users with a purchase on a held-out item; histories keep every positive
    bought = events.with_columns(pl.when((pl.col(C.USER_IDX) == 0) & (pl.col(C.ITEM_IDX) == 5)).then(pl.lit("purchase"))
                                 .otherwise(pl.col(C.EVENT)).alias(C.EVENT))
    judged = held_out_users(bought, 4, 8, np.array([5, 6]), ("click", "purchase"), length=3, relevant=("purchase",))
    assert judged.truth.toarray().tolist() == [[True, False]]
    np.testing.assert_array_equal(judged.history.toarray()[0].nonzero()[0], [1, 2])


def _users(holdout: Examples, held: np.ndarray, n: int) -> HeldOutUsers:
    """One judged user per held-out positive: their window is its history, their history the same items."""
    rows = np.repeat(np.arange(len(holdout)), holdout.history.shape[1])
    history = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, holdout.history.ravel())), shape=(len(holdout), n))
    columns = np.searchsorted(held, holdout.items)
    truth = sp.csr_matrix((np.ones(len(holdout), bool), (np.arange(len(holdout)), columns)),
                          shape=(len(holdout), len(held)))
    return HeldOutUsers(held, holdout.history, history, truth)


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
    return vectors, train, _users(holdout, held, n)


def test_the_appeal_is_kept_where_it_ranks_held_out_items_better():
    vectors, train, users = _appeal_case(1.0)
    head = TowerHead(16)
    stats, lexical, _ = fit_item_terms(head, vectors, None, train, NewItemJudge(head, vectors, users))
    assert lexical is None and stats["lexical_weight"] == 0
    assert stats["appeal_weight"] > 0
    assert stats["terms_score_appeal"] > stats["terms_score_match"] + 0.05
    with torch.no_grad():
        read = head.item_appeal(vectors).numpy()
    unit = torch.nn.functional.normalize(vectors, dim=-1).numpy()
    assert np.corrcoef(read, unit[:, 0])[0, 1] > 0.9  # it learned the direction that carries popularity


def test_the_appeal_stays_zero_where_it_does_not_carry_over_to_new_items():
    vectors, train, users = _appeal_case(-1.0)
    head = TowerHead(16)
    stats, _, _ = fit_item_terms(head, vectors, None, train, NewItemJudge(head, vectors, users))
    assert stats["appeal_weight"] == 0 and stats["terms_score_appeal"] == stats["terms_score_match"]
    assert not head.appeal.weight.any() and not head.appeal.bias.any()


def _lexical_case(shared: bool):
    """Uninformative item vectors; each item's tokens name one of 10 topics plus a word of its own. Each
    held-out positive's history is of the positive's topic (``shared``) or of another topic."""
    rng = np.random.default_rng(5)
    n, topics = 200, 10
    vectors = torch.from_numpy(rng.normal(size=(n, 16)).astype(np.float32))
    topic = np.arange(n) % topics
    tokens = [np.array([1000 + topic[i], 2000 + i]) for i in range(n)]
    lexical = LexicalIndex.fit(tokens, 3000, special_ids=[0])
    held = np.arange(150, 200)
    positives = rng.choice(held, size=300)
    history_topic = topic[positives] if shared else (topic[positives] + 1 + rng.integers(topics - 1, size=300)) % topics
    history = np.stack([rng.choice(np.flatnonzero(topic[:150] == t), size=4) for t in history_topic])
    holdout = Examples(np.zeros(300, np.int64), positives, np.ones(300, np.float32), history, np.arange(300),
                       np.arange(300))
    train = Examples(np.zeros(150, np.int64), np.arange(150), np.ones(150, np.float32),
                     rng.integers(150, size=(150, 4)), np.arange(150), np.arange(150))
    return vectors, lexical, train, holdout, held


@pytest.mark.parametrize("judge", ["new_items", "impressions"])
def test_the_lexical_term_is_weighed_in_where_held_out_items_share_words_with_the_history(judge):
    """Both judges: held-out items ranked for their users (Recall@20), and each positive against its
    negatives (AUC, the judge of logs with impressions)."""
    vectors, lexical, train, holdout, held = _lexical_case(shared=True)
    head = TowerHead(16)
    judged = (NewItemJudge(head, vectors, _users(holdout, held, 200), lexical) if judge == "new_items" else
              ImpressionJudge(head, vectors, holdout, holdout_negatives(holdout, 200, 20, items_held=True, seed=0),
                              lexical))
    stats, weighed, _ = fit_item_terms(head, vectors, lexical, train, judged)
    _assert_weighed_in(stats, "lexical", weighed, lexical, judged.lexical_scale, margin=0.2)
    assert weighed.active


def _assert_weighed_in(stats: dict, term: str, weighed, given, scale: float, margin: float) -> None:
    """The term (``lexical`` or ``neighbour``) was chosen, bought more than ``margin`` of held-out Recall@20 alone
    and in the chosen weights, and is weighed in logits."""
    alone = stats["terms_score_lexical" if term == "lexical" else "terms_score_neighbours"]
    assert stats[f"{term}_weight"] > 0 and weighed.weight > 0
    assert alone > stats["terms_score_match"] + margin and stats["terms_score_chosen"] >= alone
    # the weight in logits is the chosen grid weight times the match's spread per unit of the term's spread
    assert weighed.weight == pytest.approx(stats[f"{term}_weight"] * scale)
    assert given.weight == 0  # the index given is not changed


def test_the_lexical_term_stays_off_where_words_do_not_follow_the_choices():
    vectors, lexical, train, holdout, held = _lexical_case(shared=False)
    head = TowerHead(16)
    stats, weighed, _ = fit_item_terms(head, vectors, lexical, train,
                                       NewItemJudge(head, vectors, _users(holdout, held, 200), lexical))
    assert stats["lexical_weight"] == 0 and not weighed.active
    assert stats["terms_score_lexical"] == stats["terms_score_match"]


def _neighbour_case(twins: bool):
    """Uninformative pooled windows; each held-out item is a near copy of one trained item (its twin). Each held-out
    positive's history holds its item's twin among other trained items (``twins``), or another held-out item's."""
    rng = np.random.default_rng(8)
    n, d = 200, 16
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    held, trained = np.arange(150, 200), np.arange(150)
    twin = rng.choice(trained, size=len(held), replace=False)
    vectors[held] = vectors[twin] + 0.05 * rng.normal(size=(len(held), d)).astype(np.float32)
    positives = rng.choice(held, size=300)
    others = rng.choice(np.setdiff1d(trained, twin), size=(300, 4))
    history = np.concatenate([twin[positives - 150, None] if twins else twin[(positives - 149) % 50, None], others], 1)
    windows = rng.choice(trained, size=(300, 4))  # the pooled match reads windows that say nothing
    rows = np.repeat(np.arange(300), history.shape[1])
    users = HeldOutUsers(held, windows, sp.csr_matrix((np.ones(len(rows), np.float32), (rows, history.ravel())),
                                                      shape=(300, n)),
                         sp.csr_matrix((np.ones(300, bool), (np.arange(300), positives - 150)), shape=(300, len(held))))
    train = Examples(np.zeros(150, np.int64), trained, np.ones(150, np.float32), rng.integers(150, size=(150, 4)),
                     np.arange(150), np.arange(150))
    vectors = torch.from_numpy(vectors)
    head = TowerHead(d)
    judged = NewItemJudge(head, vectors, users, None, NeighbourIndex.fit(vectors, trained, held, k=5))
    serving = NeighbourIndex.fit(vectors, np.arange(n), np.array([], np.int64))  # every item chosen: no rows
    return head, vectors, train, judged, serving


def test_the_neighbour_term_is_weighed_in_where_held_out_items_resemble_items_of_the_history():
    head, vectors, train, judged, serving = _neighbour_case(twins=True)
    stats, lexical, weighed = fit_item_terms(head, vectors, None, train, judged, serving)
    assert lexical is None
    _assert_weighed_in(stats, "neighbour", weighed, serving, judged.neighbour_scale, margin=0.3)


def test_the_neighbour_term_stays_off_where_the_history_does_not_hold_the_neighbours():
    head, vectors, train, judged, serving = _neighbour_case(twins=False)
    stats, _, weighed = fit_item_terms(head, vectors, None, train, judged, serving)
    assert stats["neighbour_weight"] == 0 and weighed.weight == 0
    assert stats["terms_score_neighbours"] == stats["terms_score_match"]


def test_positives_only_tower_is_judged_on_items_it_never_trained_on(data, tiny_bert_dir):
    model = TextTowerRecommender(_config(tiny_bert_dir, holdout_items=0.2))
    model.fit(data.test.fit)
    stats = model.stats_
    assert stats["holdout_examples"] > 0 and 0 < stats["train_examples"]
    assert 0.0 <= stats["pretrained_valid_auc"] <= 1.0
    assert stats["best_valid_auc"] >= stats["pretrained_valid_auc"]  # never worse than where it started
    assert "appeal_weight" in stats and stats["terms_score_appeal"] >= stats["terms_score_match"]
    assert stats["terms_score_chosen"] >= max(stats["terms_score_appeal"], stats["terms_score_lexical"])
    assert stats["terms_score_chosen"] >= stats["terms_score_neighbours"]
    # each term is stored only where the holdout weighed it in
    assert (model.scorer().lexical is not None) == (stats["lexical_weight"] > 0)
    assert (model.scorer().neighbours is not None) == (stats["neighbour_weight"] > 0)


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


class _Metrics(Logger):
    """Lightning's metrics, kept in memory: what a tracking run would record."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    name, version = "memory", 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_a_budget_draw_trains_through_the_whole_schedule(data, tiny_bert_dir):
    """The warm-up and the decay are sized from the examples drawn, not from the whole window: a draw of a third
    is past its warm-up (10% of its steps) by the first logged step and has decayed to nothing by its last."""
    window = len(build_examples(data.test.fit.events, positives=("click", "purchase"), history_length=5,
                                use_impressions=False))
    config = _config(tiny_bert_dir, max_train_examples=window // 3, batch_size=4, holdout_items=0.2, patience=5)
    metrics = _Metrics()
    model = TextTowerRecommender(config, logger_=metrics)
    model.fit(data.test.fit)
    factors = [row["train/lr_factor"] for row in metrics.rows if "train/lr_factor" in row]
    assert model.stats_["train_examples"] < window // 3 and model.stats_["epochs"] == config.max_epochs
    assert len(factors) >= 3  # Lightning logs every tenth step
    assert factors[0] > 0.8 and factors[-1] < 0.1  # sized from the window, these read about 0.55 and 0.8
    assert all(later <= earlier for earlier, later in zip(factors, factors[1:], strict=False))


def test_items_nobody_chose_in_training_are_never_sampled_as_negatives(data, tiny_bert_dir):
    """New items and the items held out to judge the tower are alike to it: never a negative, the same popularity
    correction, so the judge sees held-out items as the tower will see new ones."""
    model = TextTowerRecommender(_config(tiny_bert_dir, holdout_items=0.25, max_epochs=1))
    model.fit(data.test.fit)
    module = model.module_
    positives = data.test.fit.events.filter(pl.col(C.EVENT).is_in(["click", "purchase"]))
    chosen = np.unique(positives[C.ITEM_IDX].to_numpy())
    pool = module.negative_pool.numpy()
    assert np.isin(pool, chosen).all()  # only items with a positive in the window ...
    held = np.setdiff1d(chosen, pool)  # ... less the held-out ones
    assert len(held) == round(0.25 * len(chosen))
    never = np.setdiff1d(np.arange(data.test.fit.n_items), pool)
    assert np.allclose(module.log_q[never].numpy(), module.log_q.min().item())  # held out or new: one correction
    assert (module.log_q[pool] > module.log_q.min()).all()
