"""Runtime scorers stored as data: save/load gives identical scores, bad folders are refused with a reason."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from cluster_data import TWO_CLUSTERS
from transformers import AutoModel, AutoTokenizer

from recsys import contract as C
from recsys.errors import RecsysError
from recsys.indexing import FitInput
from recsys.scorers import (
    KINDS,
    FactorScorer,
    ItemItemScorer,
    PopularityScorer,
    RandomScorer,
    Scorer,
    TextScorer,
    load_scorer,
    save_scorer,
)
from recsys.scorers import text as text_module
from recsys.scorers.base import ARRAYS, load_arrays, save_arrays
from recsys.scorers.factor_scores import BoostedFactorScores
from recsys.scorers.text import EncoderSource, TextEncoder
from recsys.scorers.text_head import PAD, TowerHead
from recsys.scorers.text_lexical import LexicalIndex
from recsys.scorers.text_neighbours import NeighbourIndex
from recsys.text_encoder import render_item_texts
from training.fit_lightfm import LightFMConfig, LightFMRecommender

RNG = np.random.default_rng(0)
N_USERS, N_ITEMS, DIM = 6, 5, 3
USERS = np.array([4, 0, 2])
# Rows aligned with USERS; a weight of 2 and an explicit zero check that scorers binarise.
HISTORY = sp.csr_matrix(np.array([[1, 0, 2, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 1]], dtype=np.float32))
ITEMS = pl.DataFrame({C.ITEM_ID: [f"i{i}" for i in range(N_ITEMS)],
                      C.TITLE: ["the complete guide", "a movie", "the book of the movie", "guide to a book", "movie"],
                      C.CATEGORY: ["book", "movie", "book", "book", "movie"]})
TEMPLATE = "{title}. {category}"


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _ease_like() -> np.ndarray:
    weights = _f32(N_ITEMS, N_ITEMS)
    np.fill_diagonal(weights, 0.0)
    return weights


def _knn_like() -> sp.csr_matrix:
    return sp.csr_matrix(np.where(RNG.random((N_ITEMS, N_ITEMS)) < 0.4, _f32(N_ITEMS, N_ITEMS), 0.0)
                         .astype(np.float32))


ARRAY_SCORERS = {
    "popularity": lambda: PopularityScorer("popularity_recent", np.array([3, 0, 1, 7, 2], dtype=np.float32)),
    "item_item_dense": lambda: ItemItemScorer("ease", _ease_like()),
    "item_item_sparse": lambda: ItemItemScorer("itemknn", _knn_like()),
    "factors": lambda: FactorScorer("als", _f32(N_USERS, DIM), _f32(N_ITEMS, DIM)),
    "factors_biases_state": lambda: FactorScorer(
        "lightfm", _f32(N_USERS, DIM), _f32(N_ITEMS, DIM), _f32(N_USERS), _f32(N_ITEMS),
        {"item_embeddings": _f32(N_ITEMS + 2, DIM), "user_bias_momentum": _f32(N_USERS)}),
}


@pytest.mark.parametrize("make", ARRAY_SCORERS.values(), ids=ARRAY_SCORERS.keys())
def test_array_scorers_round_trip_bit_identically(tmp_path, make):
    scorer = make()
    save_scorer(scorer, tmp_path / "model")
    loaded = load_scorer(tmp_path / "model")
    assert type(loaded) is type(scorer) and loaded.name == scorer.name and isinstance(loaded, Scorer)
    expected = scorer.score(USERS, HISTORY)
    assert expected.shape == (3, N_ITEMS) and expected.dtype == np.float32
    np.testing.assert_array_equal(loaded.score(USERS, HISTORY), expected)
    assert loaded.score(USERS, HISTORY).dtype == np.float32
    assert json.loads((tmp_path / "model" / "scorer.json").read_text())["kind"] == scorer.KIND


def test_stored_arrays_come_back_as_they_were(tmp_path):
    dense, sparse, factors = (ARRAY_SCORERS[k]() for k in ("item_item_dense", "item_item_sparse",
                                                             "factors_biases_state"))
    for i, scorer in enumerate((dense, sparse, factors)):
        save_scorer(scorer, tmp_path / str(i))
    dense2, sparse2, factors2 = (load_scorer(tmp_path / str(i)) for i in range(3))
    assert isinstance(dense2.weights, np.ndarray) and np.array_equal(dense2.weights, dense.weights)
    assert sp.isspmatrix_csr(sparse2.weights) and sparse2.weights.shape == (N_ITEMS, N_ITEMS)
    assert (sparse2.weights != sparse.weights).nnz == 0 and sparse2.weights.dtype == np.float32
    assert factors2.state.keys() == factors.state.keys()
    assert all(np.array_equal(factors2.state[k], v) for k, v in factors.state.items())
    np.testing.assert_array_equal(factors2.user_bias, factors.user_bias)
    np.testing.assert_array_equal(factors2.item_bias, factors.item_bias)
    no_bias = ARRAY_SCORERS["factors"]()
    save_scorer(no_bias, tmp_path / "plain")
    plain = load_scorer(tmp_path / "plain")
    assert plain.user_bias is None and plain.item_bias is None and plain.state == {}


def test_scores_by_hand():
    """The formulas on the literal block: counts, binarised history @ W, dot products plus biases."""
    pop = PopularityScorer("popularity", np.array([3, 0, 1, 7, 2], dtype=np.float32))
    np.testing.assert_array_equal(pop.score(USERS, HISTORY), np.tile([3, 0, 1, 7, 2], (3, 1)))
    weights = np.arange(25, dtype=np.float32).reshape(5, 5)
    # user 4 has items 0 and 2 (weight 2 counts once), user 0 nothing, user 2 items 1 and 4
    expected = np.stack([weights[0] + weights[2], np.zeros(5), weights[1] + weights[4]])
    np.testing.assert_array_equal(ItemItemScorer("ease", weights).score(USERS, HISTORY), expected)
    np.testing.assert_array_equal(ItemItemScorer("knn", sp.csr_matrix(weights)).score(USERS, HISTORY), expected)
    u, v = np.eye(6, 2, dtype=np.float32), np.arange(10, dtype=np.float32).reshape(5, 2)
    ub, ib = np.arange(6, dtype=np.float32), np.full(5, 0.5, dtype=np.float32)
    # user 4 has a zero factor row (eye(6, 2)): only its bias 4 and the item bias are left
    np.testing.assert_array_equal(FactorScorer("f", u, v, ub, ib).score(USERS, HISTORY),
                                  [[4.5] * 5, v[:, 0] + 0.5, [2.5] * 5])


@pytest.mark.parametrize("make", ARRAY_SCORERS.values(), ids=ARRAY_SCORERS.keys())
def test_a_history_of_the_wrong_shape_is_refused(make):
    with pytest.raises(ValueError, match=r"expected \(3, 5\)"):
        make().score(USERS, HISTORY[:2])


def test_random_scorer_is_not_storable(tmp_path):
    with pytest.raises(TypeError, match=r"RandomScorer cannot be stored.*storable scorers: factors, item_item, "
                                        r"popularity, text"):
        save_scorer(RandomScorer(N_ITEMS, seed=1), tmp_path / "random")
    assert sorted(KINDS) == ["factors", "item_item", "popularity", "text"]


def test_unknown_kind_is_refused_with_its_name(tmp_path):
    folder = tmp_path / "model"
    save_scorer(ARRAY_SCORERS["popularity"](), folder)
    settings = json.loads((folder / "scorer.json").read_text())
    (folder / "scorer.json").write_text(json.dumps(settings | {"kind": "hologram"}))
    with pytest.raises(RecsysError, match=r"unknown scorer kind 'hologram'; this recsys reads factors, item_item, "
                                          r"popularity, text"):
        load_scorer(folder)


def test_missing_or_broken_files_are_refused(tmp_path):
    with pytest.raises(RecsysError, match=r"scorer\.json: missing; the model folder is incomplete"):
        load_scorer(tmp_path)
    folder = tmp_path / "model"
    save_scorer(ARRAY_SCORERS["factors"](), folder)
    shutil.rmtree(folder / ARRAYS)
    with pytest.raises(RecsysError, match=r"arrays: missing; the model folder is incomplete"):
        load_scorer(folder)
    (folder / "scorer.json").write_text("{not json")
    with pytest.raises(RecsysError, match=r"scorer\.json: not valid JSON"):
        load_scorer(folder)


def test_an_object_array_is_neither_written_nor_read(tmp_path):
    with pytest.raises(TypeError, match=r"array 'item_counts' has dtype object"):
        save_scorer(PopularityScorer("popularity", np.array([1.0, "x"], dtype=object)), tmp_path / "written")
    folder = tmp_path / "model"
    save_scorer(ARRAY_SCORERS["popularity"](), folder)
    # a tampered artifact: the loader must refuse to unpickle it, and say which file
    np.save(folder / ARRAYS / "item_counts.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(RecsysError, match=r"item_counts.npy: not a plain numeric array .*Python objects"):
        load_scorer(folder)


# -- factors against LightFM ---------------------------------------------------------------------


@pytest.mark.parametrize("use_item_features", [True, False])
def test_factor_scorer_equals_lightfm_predict(tmp_path, use_item_features):
    features = sp.csr_matrix(np.repeat(np.eye(2, dtype=np.float32), 5, axis=0))
    data = FitInput(TWO_CLUSTERS, TWO_CLUSTERS, features, seed=1)
    trainer = LightFMRecommender(LightFMConfig(no_components=2, epochs=1, use_item_features=use_item_features))
    scorer = trainer.fit(data)
    users = np.arange(12)
    reference = trainer.predict_loop(users)
    np.testing.assert_allclose(scorer.score(users, TWO_CLUSTERS), reference, rtol=1e-5, atol=1e-6)
    save_scorer(scorer, tmp_path / "lightfm")
    np.testing.assert_array_equal(load_scorer(tmp_path / "lightfm").score(users, TWO_CLUSTERS),
                                  scorer.score(users, TWO_CLUSTERS))


# -- text ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_parts(tiny_bert_dir):
    """A tiny-BERT encoder, its tokenizer and a head whose query and temperature are not at their init."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    transformer = AutoModel.from_pretrained(tiny_bert_dir).eval()
    torch.manual_seed(0)
    head = TowerHead(32, "cosine")
    with torch.no_grad():
        head.pool.query.copy_(torch.randn(32))
        head.pool.key.weight.add_(0.1 * torch.randn(32, 32))
        head.log_temperature.fill_(1.5)
    return tokenizer, transformer, head.eval()


def _text_scorer(text_parts, prompt: torch.Tensor | None) -> TextScorer:
    tokenizer, transformer, head = text_parts
    encoder = TextEncoder(transformer, prompt).eval()
    windows = np.array([[PAD, PAD, 1], [PAD, PAD, PAD], [0, 3, 3], [PAD, 2, 4], [4, 1, 0], [PAD, PAD, 2]])
    empty = TextScorer("text_lora", EncoderSource.of(encoder, tokenizer), head, torch.zeros(0, 32), windows, TEMPLATE,
                       max_length=16, positives=(C.CLICK, C.PURCHASE), encode_batch_size=2)
    return empty.with_items(ITEMS)  # the catalogue vectors, through the encoder


@pytest.mark.parametrize("prompted", [False, True], ids=["plain", "prompt"])
def test_text_scorer_round_trips_bit_identically(tmp_path, text_parts, prompted):
    torch.manual_seed(1)
    scorer = _text_scorer(text_parts, torch.randn(4, 32) if prompted else None)
    assert scorer.item_vectors_.shape == (N_ITEMS, 32)
    save_scorer(scorer, tmp_path / "text")
    assert (tmp_path / "text" / "encoder" / "model.safetensors").is_file()
    assert not list((tmp_path / "text").rglob("*.bin")) and not list((tmp_path / "text").rglob("*.pt"))
    loaded = load_scorer(tmp_path / "text")
    assert isinstance(loaded, TextScorer) and isinstance(loaded, Scorer) and loaded.name == "text_lora"
    assert (loaded.template, loaded.max_length, loaded.positives, loaded.encode_batch_size) == (
        TEMPLATE, 16, (C.CLICK, C.PURCHASE), 2)
    np.testing.assert_array_equal(loaded.user_history_, scorer.user_history_)
    assert torch.equal(loaded.encoder.prompt, scorer.encoder.prompt)
    expected = scorer.score(USERS, HISTORY)
    assert expected.shape == (3, N_ITEMS) and expected.dtype == np.float32 and np.isfinite(expected).all()
    np.testing.assert_array_equal(loaded.score(USERS, HISTORY), expected)
    # the stored encoder (and tokenizer, template, prompt) encodes new items exactly as before
    assert torch.equal(loaded.encode(ITEMS), scorer.encode(ITEMS))
    assert torch.equal(loaded.encode(ITEMS), scorer.item_vectors_)


def test_text_scorer_score_by_hand(text_parts):
    """A user is the attention-pooled mean of its window; the score is temperature x cosine; no history -> 0."""
    scorer = _text_scorer(text_parts, None)
    vectors, head = scorer.item_vectors_, scorer.head
    with torch.no_grad():
        window = vectors[[2, 4]]  # user 3's window: [PAD, 2, 4]
        weights = torch.softmax(head.pool.key(window) @ head.pool.query / np.sqrt(32), dim=0)
        user = (weights[:, None] * window).sum(0)
        cosine = torch.nn.functional.cosine_similarity(user[None, :], vectors, dim=1)
    scores = scorer.score(np.array([3, 1]), sp.csr_matrix((2, N_ITEMS), dtype=np.float32))
    np.testing.assert_allclose(scores[0], (np.exp(1.5) * cosine).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores[1], np.zeros(N_ITEMS, np.float32))  # user 1 has no history


def test_text_read_appeal_adds_to_every_users_scores_and_survives_storage(tmp_path, text_parts):
    """The appeal is a linear reading of each item's unit vector, the same for every user, stored with the head;
    a model stored before the appeal existed (no appeal arrays) loads with none."""
    scorer = _text_scorer(text_parts, None)
    plain = scorer.score(USERS, HISTORY)
    torch.manual_seed(3)
    with torch.no_grad():
        scorer.head.appeal.weight.copy_(torch.randn(1, 32))
        scorer.head.appeal.bias.fill_(0.5)
        unit = torch.nn.functional.normalize(scorer.item_vectors_, dim=-1)
        appeal = (unit @ scorer.head.appeal.weight[0] + 0.5).numpy()
    scores = scorer.score(USERS, HISTORY)
    np.testing.assert_allclose(scores - plain, np.broadcast_to(appeal, plain.shape), rtol=1e-5, atol=1e-5)
    save_scorer(scorer, tmp_path / "text")
    np.testing.assert_array_equal(load_scorer(tmp_path / "text").score(USERS, HISTORY), scores)
    for name in ("head.appeal.weight", "head.appeal.bias"):
        (tmp_path / "text" / ARRAYS / f"{name}.npy").unlink()
    older = load_scorer(tmp_path / "text")
    np.testing.assert_allclose(older.score(USERS, HISTORY), plain, rtol=1e-6, atol=1e-6)
    np.save(tmp_path / "text" / ARRAYS / "head.other.npy", np.zeros(3, np.float32))
    with pytest.raises(RecsysError, match=r"the text head's arrays do not match .*unexpected \['other'\]"):
        load_scorer(tmp_path / "text")


def _stored_and_grown(scorer: TextScorer, folder) -> tuple[TextScorer, TextScorer, sp.csr_matrix]:
    """The scorer saved and loaded back (scoring exactly as before), the loaded one grown by the same texts again as
    new items, and the histories widened to the grown catalogue."""
    save_scorer(scorer, folder)
    loaded = load_scorer(folder)
    np.testing.assert_array_equal(loaded.score(USERS, HISTORY), scorer.score(USERS, HISTORY))
    again = ITEMS.with_columns(pl.concat_str(pl.lit("new-"), pl.col(C.ITEM_ID)).alias(C.ITEM_ID))
    history = sp.hstack([HISTORY, sp.csr_matrix((3, N_ITEMS), dtype=np.float32)], format="csr")
    return loaded, loaded.with_items(again), history


def _tfidf_by_hand(ids: list[np.ndarray], vocab: int, special: list[int]) -> np.ndarray:
    """Unit rows of count x log((1 + n) / (1 + df)), special tokens and tokens in every item weighing 0."""
    counts = np.zeros((len(ids), vocab))
    for row, tokens in enumerate(ids):
        np.add.at(counts[row], tokens, 1.0)
    idf = np.log((1 + len(ids)) / (1 + (counts > 0).sum(0)))
    idf[special] = 0.0
    rows = counts * idf
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def test_the_lexical_term_adds_its_weight_times_the_token_tfidf_cosine_and_survives_storage(tmp_path, text_parts):
    """Items are TF-IDF rows of their WordPiece tokens, a user the unit mean of their history's rows; the term adds
    weight x cosine to the dense scores, is stored as arrays, and new items get rows under the stored idf."""
    tokenizer = text_parts[0]
    scorer = _text_scorer(text_parts, None)
    ids = scorer.tokens(ITEMS).ids
    lexical = LexicalIndex.fit(ids, len(tokenizer), tokenizer.all_special_ids)
    assert not lexical.active and lexical.idf[tokenizer.cls_token_id] == 0
    rows = _tfidf_by_hand(ids, len(tokenizer), tokenizer.all_special_ids)
    np.testing.assert_allclose(lexical.items.toarray(), rows, rtol=1e-5, atol=1e-6)
    worded = replace(scorer, lexical=lexical.with_weight(3.0))
    plain = scorer.score(USERS, HISTORY)
    seen = HISTORY.toarray() > 0  # the whole history (an explicit zero is not seen), not the tower's window
    profiles = np.stack([rows[s].mean(0) if s.any() else np.zeros(rows.shape[1]) for s in seen])
    profiles /= np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
    scores = worded.score(USERS, HISTORY)
    np.testing.assert_allclose(scores - plain, 3.0 * profiles @ rows.T, rtol=1e-4, atol=1e-5)
    assert (scores - plain).max() > 0.5  # shared words ("book", "movie", "guide") really add
    loaded, grown, history = _stored_and_grown(worded, tmp_path / "text")
    assert loaded.lexical.weight == 3.0
    # new items: their rows come from the stored tokenizer and idf (the same text gives the same rows)
    assert grown.lexical.items.shape == (2 * N_ITEMS, len(tokenizer))
    np.testing.assert_allclose(grown.lexical.items[N_ITEMS:].toarray(), rows, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grown.score(USERS, history)[:, N_ITEMS:], scores, rtol=1e-5, atol=1e-5)
    # a model stored without the term (before it existed, or where its weight was 0) scores the dense match alone
    for path in (tmp_path / "text" / ARRAYS).glob("lexical.*"):
        path.unlink()
    assert load_scorer(tmp_path / "text").lexical is None
    np.testing.assert_allclose(load_scorer(tmp_path / "text").score(USERS, HISTORY), plain, rtol=1e-6, atol=1e-6)


def _neighbour_terms_by_hand(vectors: np.ndarray, anchors: list[int], k: int, history: np.ndarray) -> np.ndarray:
    """[b, n] the mean over each history's items (> 0) of their cosine with each item, where the history item is one
    of the item's ``k`` most similar anchors other than itself (cosines cut at 0)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = np.zeros((len(unit), len(unit)))
    for j in range(len(unit)):
        others = [a for a in anchors if a != j]
        sims = unit[others] @ unit[j]
        for a in np.argsort(-sims)[:k]:
            rows[j, others[a]] = max(sims[a], 0.0)
    seen = (history > 0).astype(float)
    return (seen @ rows.T) / np.maximum(seen.sum(1, keepdims=True), 1)


def test_the_neighbour_term_adds_the_histories_closeness_to_each_item_and_survives_storage(tmp_path, text_parts,
                                                                                          monkeypatch):
    """Every item keeps its k nearest chosen items (never itself); a user's term is the mean over the whole history
    of those cosines, times the weight; new items get neighbours among the same chosen items."""
    scorer = _text_scorer(text_parts, None)
    vectors = scorer.item_vectors_.numpy()
    index = NeighbourIndex.fit(scorer.item_vectors_, np.array([0, 1, 2]), k=2)
    assert not index.active and index.k == 2 and index.rows.diagonal().max() == 0
    near = replace(scorer, neighbours=index.with_weight(5.0))
    plain = scorer.score(USERS, HISTORY)
    scores = near.score(USERS, HISTORY)
    expected = _neighbour_terms_by_hand(vectors, [0, 1, 2], 2, HISTORY.toarray())
    np.testing.assert_allclose(scores - plain, 5.0 * expected, rtol=1e-5, atol=1e-5)
    assert (scores - plain).max() > 0.5 and (scores - plain)[1].max() == 0  # no history, no term
    # the pipeline's read: the product plus a sparse boost, or the dense block where the boost covers much of it
    monkeypatch.setattr(text_module, "BOOST_MAX_SHARE", 1.0)
    lazy = near.block_scores(USERS, HISTORY)
    assert isinstance(lazy, BoostedFactorScores) and lazy.boost.nnz
    np.testing.assert_allclose(lazy.dense(), scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lazy.moments[0], scores.astype(np.float64).mean(1), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(text_module, "BOOST_MAX_SHARE", 0.1)  # 3 users x 5 items: a boost on 2 pairs is too many
    np.testing.assert_array_equal(near.block_scores(USERS, HISTORY), scores)
    loaded, grown, history = _stored_and_grown(near, tmp_path / "text")
    assert loaded.neighbours.weight == 5.0
    # items added later (the same texts again) find their neighbours among the fitted anchors: their twins first
    assert grown.neighbours.rows.shape == (2 * N_ITEMS, 2 * N_ITEMS)
    added = grown.score(USERS, history) - replace(grown, neighbours=None).score(USERS, history)
    np.testing.assert_allclose(added[:, :N_ITEMS], scores - plain, rtol=1e-4, atol=1e-4)
    both = np.concatenate([vectors, vectors])
    copies = _neighbour_terms_by_hand(both, [0, 1, 2], 2, history.toarray())[:, N_ITEMS:]
    np.testing.assert_allclose(added[:, N_ITEMS:], 5.0 * copies, rtol=1e-4, atol=1e-4)
    assert grown.neighbours.rows[N_ITEMS, 0] == pytest.approx(1.0, abs=1e-5)  # a copy of item 0 neighbours item 0
    # a model stored without the term (before it existed, or where its weight was 0) scores without it
    for path in (tmp_path / "text" / ARRAYS).glob("neighbours.*"):
        path.unlink()
    assert load_scorer(tmp_path / "text").neighbours is None
    np.testing.assert_allclose(load_scorer(tmp_path / "text").score(USERS, HISTORY), plain, rtol=1e-6, atol=1e-6)


def test_text_encoder_prepends_the_prompt_and_pools_only_the_words(text_parts):
    tokenizer, transformer, _ = text_parts
    batch = tokenizer(render_item_texts(ITEMS, TEMPLATE), padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.manual_seed(2)
    prompt = torch.randn(3, 32)
    with torch.no_grad():
        out = TextEncoder(transformer, prompt)(ids, mask)
        words = transformer.get_input_embeddings()(ids)
        embeds = torch.cat([prompt.expand(len(ids), -1, -1), words], dim=1)
        full_mask = torch.cat([torch.ones(len(ids), 3, dtype=mask.dtype), mask], dim=1)
        hidden = transformer(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state[:, 3:]
        expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        assert not torch.allclose(out, TextEncoder(transformer)(ids, mask), atol=1e-4)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_a_loaded_text_scorer_reads_its_encoder_only_to_encode_new_items(tmp_path, text_parts):
    """Ranking known items needs the stored vectors only; the encoder is read when new items arrive."""
    scorer = _text_scorer(text_parts, torch.randn(4, 32))
    save_scorer(scorer, tmp_path / "text")
    loaded = load_scorer(tmp_path / "text")
    expected = scorer.score(USERS, HISTORY)
    np.testing.assert_array_equal(loaded.score(USERS, HISTORY), expected)
    assert not loaded.source.loaded  # scoring did not read the encoder
    save_scorer(loaded, tmp_path / "again")  # saved unread: the stored folder is copied as it is
    assert not loaded.source.loaded
    first, second = tmp_path / "text" / "encoder", tmp_path / "again" / "encoder"
    for name in ("model.safetensors", "config.json", "tokenizer_config.json"):
        assert (second / name).read_bytes() == (first / name).read_bytes()
    again = load_scorer(tmp_path / "again")
    assert torch.equal(again.encode(ITEMS), scorer.item_vectors_) and again.source.loaded
    assert torch.equal(again.encoder.prompt, scorer.encoder.prompt)
    # a model folder removed after loading: the first new item says so instead of a transformers traceback
    shutil.rmtree(tmp_path / "text" / "encoder")
    with pytest.raises(RecsysError, match=r"the text encoder folder is gone"):
        loaded.with_items(ITEMS)


def test_text_scorer_without_an_encoder_folder_is_refused(tmp_path, text_parts):
    scorer = _text_scorer(text_parts, None)
    save_scorer(scorer, tmp_path / "text")
    (tmp_path / "text" / "encoder" / "config.json").unlink()
    with pytest.raises(RecsysError, match=r"no Hugging Face encoder folder .*the model folder is incomplete"):
        load_scorer(tmp_path / "text")
    with pytest.raises(ValueError, match=r"history has 4 items; the text tower has 5"):
        scorer.score(USERS, sp.csr_matrix((3, 4), dtype=np.float32))


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_the_catalogue_side_computed_once_gives_the_same_logits(similarity):
    torch.manual_seed(5)
    head = TowerHead(16, similarity).eval()
    with torch.no_grad():
        head.appeal.weight.copy_(torch.randn(1, 16))
        head.appeal.bias.fill_(0.25)
    users, items = torch.randn(4, 16), torch.randn(30, 16)
    with torch.inference_mode():
        assert torch.equal(head.logits_at(users, head.catalogue_side(items)), head.logits(users, items))


def test_a_text_scorer_re_reads_its_catalogue_side_when_the_head_changes_in_place(text_parts):
    scorer = _text_scorer(text_parts, None)
    with torch.inference_mode():  # the catalogue as training leaves it: inference tensors
        scorer = replace(scorer, item_vectors_=scorer.item_vectors_.clone())
    first = scorer.score(USERS, HISTORY)
    np.testing.assert_array_equal(scorer.score(USERS, HISTORY), first)  # from the cached side
    bias = scorer.head.appeal.bias
    before = float(bias)
    with torch.no_grad():
        bias.add_(1.0)
    try:
        np.testing.assert_allclose(scorer.score(USERS, HISTORY) - first, 1.0, atol=1e-5)
    finally:
        with torch.no_grad():
            bias.fill_(before)  # the head is the module's fixture


def test_stored_arrays_are_mapped_copy_on_write_so_a_write_never_reaches_the_model(tmp_path):
    """Loading maps the files (what is never read costs no memory); a write stays in the process."""
    save_arrays(tmp_path, {"factors": np.arange(12, dtype=np.float32).reshape(3, 4), "empty": np.zeros((0, 2))})
    loaded = load_arrays(tmp_path)
    assert isinstance(loaded["factors"].base, np.memmap) and loaded["empty"].shape == (0, 2)
    loaded["factors"][1] = -1.0
    assert (load_arrays(tmp_path)["factors"][1] == [4, 5, 6, 7]).all()


# -- exact row moments -----------------------------------------------------------------------------


def _dense_moments(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wide = scores.astype(np.float64)
    return wide.mean(axis=1), wide.std(axis=1)


@pytest.mark.parametrize("make", [ARRAY_SCORERS["factors"], ARRAY_SCORERS["factors_biases_state"]],
                         ids=["factors", "biases"])
def test_factor_scores_come_with_their_rows_exact_moments(make):
    scorer = make()
    lazy = scorer.block_scores(USERS, HISTORY)
    scores = scorer.score(USERS, HISTORY)
    np.testing.assert_allclose(lazy.dense(), scores, rtol=1e-6, atol=1e-6)
    mean, std = lazy.moments
    expected_mean, expected_std = _dense_moments(scores)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, expected_std, rtol=1e-5, atol=1e-6)
    assert mean.shape == std.shape == (len(USERS),)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_text_scores_come_with_their_rows_exact_moments_but_not_with_a_lexical_term(text_parts, similarity):
    """The logits are [scale * user, 1] . [space, appeal]: their moments come from the items' side, appeal
    included; the lexical term is not a product of vectors, so a tower with one gives none."""
    scorer = _text_scorer(text_parts, None)
    head = TowerHead(32, similarity)
    head.load_state_dict(scorer.head.state_dict())
    torch.manual_seed(5)
    with torch.no_grad():
        head.appeal.weight.copy_(torch.randn(1, 32))
        head.appeal.bias.fill_(-0.3)
    scorer = replace(scorer, head=head.eval())
    users = np.arange(6)
    history = sp.csr_matrix((6, N_ITEMS), dtype=np.float32)
    lazy = scorer.block_scores(users, history)
    scores = scorer.score(users, history)
    np.testing.assert_allclose(lazy.dense(), scores, rtol=1e-5, atol=1e-5)
    mean, std = lazy.moments
    expected_mean, expected_std = _dense_moments(scores)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, expected_std, rtol=1e-4, atol=1e-5)
    assert std[1] == pytest.approx(expected_std[1], abs=1e-5)  # no history: the appeal's spread alone
    tokenizer = text_parts[0]
    lexical = LexicalIndex.fit(scorer.tokens(ITEMS).ids, len(tokenizer), tokenizer.all_special_ids).with_weight(3.0)
    worded = replace(scorer, lexical=lexical).block_scores(USERS, HISTORY)
    assert isinstance(worded, np.ndarray) and not np.allclose(worded, scorer.score(USERS, HISTORY))
