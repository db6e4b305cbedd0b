"""The serving form of every fine-tuning mode: a plain transformer that pools exactly as the training encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from recsys.scorers import TextScorer, load_scorer, save_scorer
from recsys.scorers.text import EncoderSource, TextEncoder
from recsys.scorers.text_head import TowerHead
from recsys.text_encoder import mean_pool
from training.encoder_modes import FineTuneConfig, ItemEncoder, build_encoder, serving_encoder

# peft 0.21 calls a transformers 5 method that is deprecated; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

TEXTS = ["the complete guide", "a movie", "the book of the movie for a guide", "guide to the movie"]
MODES = ["lora", "prompt", "bitfit", "freeze:1", "full", "zero-shot"]


@pytest.fixture(scope="module")
def tokens(tiny_bert_dir) -> tuple[torch.Tensor, torch.Tensor]:
    enc = AutoTokenizer.from_pretrained(tiny_bert_dir)(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture(scope="module")
def plain(tiny_bert_dir, tokens) -> torch.Tensor:
    """float [4, 32]: the pretrained tiny BERT, mean-pooled (what every untouched mode reproduces)."""
    ids, mask = tokens
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        return mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)


def trained_encoder(tiny_bert_dir, mode: str) -> ItemEncoder:
    """The training encoder of ``mode``; LoRA's B matrices (zero at init) are perturbed so the adapter acts."""
    torch.manual_seed(0)
    encoder = build_encoder(tiny_bert_dir, FineTuneConfig(mode=mode))
    if mode == "lora":
        with torch.no_grad():
            for name, param in encoder.named_parameters():
                if "lora_B" in name:
                    param.copy_(0.1 * torch.randn_like(param))
    return encoder.eval()


def _tolerance(mode: str) -> float:
    """freeze:N trains on its frozen layers' output rounded to float16; the serving transformer runs whole."""
    return 1e-3 if mode.startswith("freeze") else 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_serving_encoder_pools_as_the_training_encoder(tiny_bert_dir, tokens, plain, mode):
    encoder = trained_encoder(tiny_bert_dir, mode)
    ids, mask = tokens
    with torch.no_grad():
        expected = encoder(ids, mask)
        served = serving_encoder(encoder)
        got = served(ids, mask)
    assert isinstance(served, TextEncoder) and not served.training
    assert got.shape == (len(TEXTS), 32)
    assert torch.allclose(got, expected, atol=_tolerance(mode)), (got - expected).abs().max()
    # lora and prompt change the vectors: the serving form carries the adapter, not the bare base model
    assert torch.allclose(got, plain, atol=1e-5) == (mode not in ("lora", "prompt"))


@pytest.mark.parametrize("mode", MODES)
def test_serving_encoder_holds_no_peft_module(tiny_bert_dir, mode):
    served = serving_encoder(trained_encoder(tiny_bert_dir, mode))
    assert not any("lora" in n for n, _ in served.named_modules())
    assert not type(served.transformer).__module__.startswith("peft")
    assert not any(type(m).__module__.startswith("peft") for m in served.modules())
    # only prompt tuning keeps an array beside the transformer: its 8 learned virtual tokens
    assert tuple(served.prompt.shape) == ((8, 32) if mode == "prompt" else (0,))


def test_lora_merge_leaves_the_training_encoder_as_it_was(tiny_bert_dir, tokens):
    encoder = trained_encoder(tiny_bert_dir, "lora")
    ids, mask = tokens
    with torch.no_grad():
        before = encoder(ids, mask)
        served = serving_encoder(encoder)
        assert served.transformer is not encoder.transformer
        assert any("lora_B" in n for n, _ in encoder.named_parameters())  # still adapters, not merged in place
        assert torch.equal(encoder(ids, mask), before)


def test_prompt_serving_copies_the_learned_tokens_and_ignores_padding(tiny_bert_dir, tokens):
    encoder = trained_encoder(tiny_bert_dir, "prompt")
    served = serving_encoder(encoder)
    learned = encoder.transformer.prompt_encoder.default.embedding.weight
    assert torch.equal(served.prompt, learned.detach())
    with torch.no_grad():
        learned.mul_(2.0)  # training on after the snapshot does not move the served prompt
    assert not torch.equal(served.prompt, learned.detach())
    ids, mask = tokens
    with torch.no_grad():
        alone = served(ids[1:2, : int(mask[1].sum())], mask[1:2, : int(mask[1].sum())])
        torch.testing.assert_close(served(ids, mask)[1:2], alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["lora", "prompt", "freeze:1"])
def test_stored_serving_encoder_still_pools_as_the_training_encoder(tiny_bert_dir, tokens, tmp_path, mode):
    """Through save_scorer/load_scorer (safetensors, prompt as an array): the training vectors come back."""
    encoder = trained_encoder(tiny_bert_dir, mode)
    ids, mask = tokens
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    scorer = TextScorer(f"text_{mode}", EncoderSource.of(serving_encoder(encoder), tokenizer), TowerHead(32).eval(),
                        torch.zeros(3, 32), np.full((2, 4), -1), "{title}", 16, ("click",))
    save_scorer(scorer, tmp_path / "text")
    loaded = load_scorer(tmp_path / "text")
    with torch.no_grad():
        expected = encoder(ids, mask)
        got = loaded.encoder(ids, mask)
    assert not type(loaded.encoder.transformer).__module__.startswith("peft")
    assert torch.allclose(got, expected, atol=_tolerance(mode)), (got - expected).abs().max()
