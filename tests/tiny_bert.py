"""A tiny BERT (2 layers, hidden 32) and WordPiece tokenizer built in code: no download.

The vocabulary covers the synthetic data's words (``recsys.synthetic``) plus single letters,
so real item texts tokenise into known pieces instead of ``[UNK]``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from recsys.synthetic import _DESCRIPTION_TEMPLATES, _FILLERS, _TITLE_TEMPLATES, TOPICS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocabulary() -> list[str]:
    common = "a an and of the for to with complete book guide movie"
    text = " ".join([*_TITLE_TEMPLATES, *_DESCRIPTION_TEMPLATES, *_FILLERS, common,
                     *(" ".join([cat, *nouns, *adjs, topic]) for topic, (cat, nouns, adjs) in TOPICS.items())])
    words = sorted({w for w in re.findall(r"[a-z]+", text.lower())})
    pieces = [*string.ascii_lowercase, *string.digits, *".,:;!?&'()-|[]{}"]
    return SPECIAL + sorted(set(words) | set(pieces)) + [f"##{c}" for c in string.ascii_lowercase]


def make_tiny_bert(path: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Write a randomly initialised tiny BERT and its tokenizer to ``path``; returns ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    # transformers 5 ignores ``vocab_file`` here; a vocab mapping works.
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(_vocabulary())}, do_lower_case=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
