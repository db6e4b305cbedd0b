"""Fine-tuning modes of the item encoder on the tiny BERT: what trains, the freeze:N cache, pooling, dropout."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from recsys.text_encoder import mean_pool
from training.encoder_modes import FineTuneConfig, ItemEncoder, build_encoder, count_parameters

# peft 0.21 calls a transformers 5 method that is deprecated; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

TEXTS = ["the complete guide", "a movie", "the book of the movie for a guide", "guide to the movie"]
ALL_MODES = ["zero-shot", "full", "lora", "bitfit", "freeze:0", "freeze:1", "prompt"]
TRAINING_MODES = [m for m in ALL_MODES if m != "zero-shot"]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


@pytest.fixture(scope="module")
def expected_trainable(tiny_bert_dir) -> dict[str, int]:
    """Trainable counts written out from the tiny config (the pooler is dropped by build_encoder)."""
    c = AutoConfig.from_pretrained(tiny_bert_dir)
    d, i, n_layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    # q, k, v, attention output: 4 (d*d + d); FFN: d*i + i + i*d + d; two LayerNorms: 4d.
    layer = 4 * (d * d + d) + (d * i + i + i * d + d) + 4 * d
    embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * d + 2 * d
    # Biases: q, k, v, out (4d), FFN (i + d), LayerNorms (2d); plus the embeddings' LayerNorm bias.
    biases = n_layers * (4 * d + i + d + 2 * d) + d
    r = FineTuneConfig().lora_r
    return {"zero-shot": 0, "full": embeddings + n_layers * layer,
            "lora": n_layers * 2 * r * (d + d),  # query and value: A [r, d] + B [d, r] each
            "bitfit": biases, "freeze:0": n_layers * layer, "freeze:1": (n_layers - 1) * layer,
            "prompt": FineTuneConfig().prompt_tokens * d}


def batch(tokenizer, texts, padding: bool | str = True, **kwargs):
    enc = tokenizer(texts, padding=padding, return_tensors="pt", **kwargs)
    return enc["input_ids"], enc["attention_mask"]


def build(tiny_bert_dir, mode: str, **kwargs) -> ItemEncoder:
    torch.manual_seed(0)
    return build_encoder(tiny_bert_dir, FineTuneConfig(mode=mode, **kwargs))


def plain_vectors(tiny_bert_dir, ids, mask):
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        return mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_trainable_counts_and_gradients(tiny_bert_dir, tokenizer, expected_trainable, mode):
    encoder = build(tiny_bert_dir, mode)
    trainable, total = count_parameters(encoder)
    assert trainable == expected_trainable[mode]
    full = expected_trainable["full"]
    assert total == full + {"lora": expected_trainable["lora"], "prompt": expected_trainable["prompt"]}.get(mode, 0)
    if mode == "zero-shot":
        return
    ids, mask = batch(tokenizer, TEXTS)
    encoder(ids, mask, item_keys=TEXTS).pow(2).sum().backward()
    with_grad = {n for n, p in encoder.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert any(encoder.get_parameter(n).grad.abs().sum() > 0 for n in with_grad)


def test_which_parameters_train(tiny_bert_dir):
    names = {mode: {n for n, p in build(tiny_bert_dir, mode).named_parameters() if p.requires_grad}
             for mode in ("bitfit", "freeze:1", "lora", "prompt")}
    assert all(n.endswith("bias") for n in names["bitfit"])
    assert all(".encoder.layer.1." in n for n in names["freeze:1"])
    assert names["lora"] and all("lora_" in n and (".query." in n or ".value." in n) for n in names["lora"])
    assert names["prompt"] == {"transformer.prompt_encoder.default.embedding.weight"}


def test_zero_shot_is_mean_pool_of_the_plain_model_and_ignores_padding(tiny_bert_dir, tokenizer):
    encoder = build(tiny_bert_dir, "zero-shot")
    ids, mask = batch(tokenizer, TEXTS)
    torch.testing.assert_close(encoder(ids, mask), plain_vectors(tiny_bert_dir, ids, mask))
    long_ids, long_mask = batch(tokenizer, TEXTS[:1], padding="max_length", max_length=20)
    alone = encoder(*batch(tokenizer, TEXTS[:1]))
    torch.testing.assert_close(encoder(long_ids, long_mask), alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(encoder(ids, mask)[:1], alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["freeze:0", "freeze:1"])
def test_freeze_split_equals_the_plain_forward_up_to_half_precision(tiny_bert_dir, tokenizer, mode):
    """The frozen part's output is held in float16: vectors move by its rounding, no more."""
    encoder = build(tiny_bert_dir, mode).eval()
    ids, mask = batch(tokenizer, TEXTS)
    split, plain = encoder(ids, mask), plain_vectors(tiny_bert_dir, ids, mask)
    torch.testing.assert_close(split, plain, atol=1e-3, rtol=0)
    assert not torch.equal(split, plain)  # rounded, not skipped


def test_freeze_cache_is_used_and_exact(tiny_bert_dir, tokenizer):
    encoder = build(tiny_bert_dir, "freeze:1").eval()
    embedded: list[int] = []  # rows run through the frozen part, per call
    encoder.transformer.embeddings.register_forward_hook(lambda m, args, kw, out: embedded.append(out.shape[0]),
                                                         with_kwargs=True)
    ids, mask = batch(tokenizer, TEXTS)
    first = encoder(ids, mask, item_keys=TEXTS)
    assert embedded == [4] and encoder.cache_size == 4
    assert torch.equal(encoder(ids, mask, item_keys=TEXTS), first)
    assert embedded == [4]  # second call: all four from the cache
    torch.testing.assert_close(encoder(ids[:2], mask[:2], item_keys=torch.tensor([7, 8])), first[:2])
    encoder(ids[1:2], mask[1:2], item_keys=torch.tensor([8]))  # tensor keys hit the cache too
    assert embedded == [4, 2] and encoder.cache_size == 6
    del encoder._cache[7], encoder._cache[8]

    # Another composition and padding: only the new item runs the frozen part; vectors per item unchanged.
    texts = [TEXTS[2], "a complete book", TEXTS[0]]
    ids2, mask2 = batch(tokenizer, texts, padding="max_length", max_length=24)
    second = encoder(ids2, mask2, item_keys=texts)
    assert embedded == [4, 2, 1] and encoder.cache_size == 5
    torch.testing.assert_close(second[[0, 2]], first[[2, 0]], atol=1e-6, rtol=1e-5)
    uncached = encoder(ids2, mask2)
    torch.testing.assert_close(second, uncached, atol=1e-6, rtol=1e-5)

    encoder.clear_cache()
    assert encoder.cache_size == 0
    torch.testing.assert_close(encoder(ids, mask, item_keys=TEXTS), first, atol=1e-6, rtol=1e-5)


def test_freeze_cache_holds_half_precision(tiny_bert_dir, tokenizer):
    """The cache is float16 (half the memory on large catalogues); what it returns is float32."""
    frozen = build(tiny_bert_dir, "freeze:1").eval()
    ids, mask = batch(tokenizer, TEXTS)
    assert frozen(ids, mask, item_keys=TEXTS).dtype == torch.float32
    assert all(row.dtype == torch.float16 for row in frozen._cache.values())


def test_freeze_cache_works_in_training_mode(tiny_bert_dir, tokenizer):
    encoder = build(tiny_bert_dir, "freeze:1")
    assert encoder.training and not encoder.transformer.embeddings.training
    assert not encoder.transformer.encoder.layer[0].training and encoder.transformer.encoder.layer[1].training
    ids, mask = batch(tokenizer, TEXTS)
    encoder(ids, mask, item_keys=TEXTS)
    cached = dict(encoder._cache)
    encoder.clear_cache()
    encoder(ids, mask, item_keys=TEXTS)  # dropout in the upper layer does not reach the cached part
    assert all(torch.equal(cached[k], encoder._cache[k]) for k in TEXTS)
    assert cached[TEXTS[1]].shape == (int(mask[1].sum()), encoder.hidden_size)  # trimmed to the real tokens


def test_freeze_cache_rejects_a_changed_item(tiny_bert_dir, tokenizer):
    encoder = build(tiny_bert_dir, "freeze:1")
    encoder(*batch(tokenizer, ["a movie"]), item_keys=["x"])
    with pytest.raises(ValueError, match=r"item 'x': cached frozen-layer output has 4 tokens.*clear_cache"):
        encoder(*batch(tokenizer, ["the complete movie guide"]), item_keys=["x"])
    with pytest.raises(ValueError, match="item_keys has 1 entries for a batch of 2"):
        encoder(*batch(tokenizer, TEXTS[:2]), item_keys=["x"])


def test_prompt_pools_real_tokens_and_is_attended_to(tiny_bert_dir, tokenizer):
    encoder = build(tiny_bert_dir, "prompt").eval()
    ids, mask = batch(tokenizer, TEXTS)
    out = encoder(ids, mask)
    alone = encoder(*batch(tokenizer, TEXTS[1:2]))
    torch.testing.assert_close(out[1:2], alone, atol=1e-6, rtol=1e-5)  # padding does not change an item
    with torch.no_grad():
        encoder.transformer.prompt_encoder.default.embedding.weight.mul_(2.0)
    assert not torch.allclose(encoder(ids, mask), out, atol=1e-4)


@pytest.mark.parametrize("mode", TRAINING_MODES)
def test_dropout_on_in_training_off_in_eval(tiny_bert_dir, tokenizer, mode):
    encoder = build(tiny_bert_dir, mode, dropout=0.3)
    ids, mask = batch(tokenizer, TEXTS)
    assert not torch.allclose(encoder(ids, mask), encoder(ids, mask))
    encoder.eval()
    torch.testing.assert_close(encoder(ids, mask), encoder(ids, mask))


def test_zero_shot_has_no_dropout_even_in_train_mode(tiny_bert_dir, tokenizer):
    encoder = build(tiny_bert_dir, "zero-shot", dropout=0.3).train()
    ids, mask = batch(tokenizer, TEXTS)
    assert not encoder.transformer.training
    assert torch.equal(encoder(ids, mask), encoder(ids, mask))


def test_dropout_setting_reaches_the_encoder(tiny_bert_dir):
    encoder = build(tiny_bert_dir, "full", dropout=0.25)
    assert encoder.transformer.config.hidden_dropout_prob == 0.25
    assert encoder.transformer.embeddings.dropout.p == 0.25


def test_config_defaults_and_frozen_layers():
    assert FineTuneConfig().mode == "lora" and FineTuneConfig().frozen_layers == 0
    assert FineTuneConfig(mode="freeze:3").frozen_layers == 3
    assert FineTuneConfig(lora_targets=["query"]).lora_targets == ("query",)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "x"}, r"Invalid mode 'x'\. Must be one of zero-shot, full, lora, bitfit, freeze:N, prompt"),
    ({"mode": "freeze:N"}, "Invalid mode 'freeze:N'"),
    ({"mode": "freeze:-1"}, "Invalid mode 'freeze:-1'"),
    ({"mode": "freeze:1.5"}, "Invalid mode 'freeze:1.5'"),
    ({"lora_r": 0}, r"FineTuneConfig\.lora_r must be >= 1; got 0"),
    ({"lora_alpha": 0}, r"FineTuneConfig\.lora_alpha must be >= 1; got 0"),
    ({"prompt_tokens": 0}, r"FineTuneConfig\.prompt_tokens must be >= 1; got 0"),
    ({"lora_dropout": 1.0}, r"FineTuneConfig\.lora_dropout must be in \[0, 1\); got 1\.0"),
    ({"dropout": -0.1}, r"FineTuneConfig\.dropout must be in \[0, 1\); got -0\.1"),
    ({"lora_targets": "query"}, r"lora_targets must be a non-empty tuple of module names"),
    ({"lora_targets": ()}, r"lora_targets must be a non-empty tuple"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FineTuneConfig(**kwargs)


def test_freeze_all_layers_is_rejected(tiny_bert_dir):
    with pytest.raises(ValueError, match=r"freezes all 2 layers.*N < 2, or zero-shot"):
        build_encoder(tiny_bert_dir, FineTuneConfig(mode="freeze:2"))
