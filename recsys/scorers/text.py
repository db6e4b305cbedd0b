"""The fitted text tower in its serving form: encoder, head, catalogue vectors and user windows.

Training (``training/fit_text.py``) fine-tunes in any mode and hands over a :class:`TextScorer`
whose encoder is a plain Hugging Face transformer: LoRA adapters are merged into its weights,
freeze:N is just the whole model, and prompt tuning keeps its learned virtual tokens as an
array prepended to the word embeddings. So serving needs neither peft nor training code, and
the encoder is stored as a Hugging Face folder (safetensors), never as serialised Python objects.

The scorer ranks users by pooling their stored recent items (plus, where training weighed them in,
the lexical term of ``recsys.scorers.text_lexical`` and the neighbour term of
``recsys.scorers.text_neighbours``, both over their whole history), re-reads newer
histories without refitting (the tower is inductive), and encodes items that arrived after training.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import nn

from recsys import contract as C
from recsys.errors import RecsysError
from recsys.scorers.base import StoredScorer, load_arrays, read_json, save_arrays
from recsys.scorers.factor_scores import BoostedFactorScores, FactorScores, ItemSide
from recsys.scorers.text_head import TowerHead, history_windows
from recsys.scorers.text_lexical import ARRAY_PREFIX, LexicalIndex
from recsys.scorers.text_neighbours import ARRAY_PREFIX as NEIGHBOUR_PREFIX
from recsys.scorers.text_neighbours import NeighbourIndex
from recsys.text_encoder import fast_cpu_linears, mean_pool, render_item_texts

__all__ = ["EncoderSource", "ItemTokens", "TextEncoder", "TextScorer", "user_windows"]

ENCODER_FOLDER = "encoder"
BOOST_MAX_SHARE = 0.005
"""Largest share of a block's pairs the neighbour term may boost for the block to stay a product plus a sparse
boost; past it the block is dense. At 100k items, 512 users a block (``benchmarks/text_block.py``): 500 boosted
items a user (0.5%) read as fast as the dense block, 2,500 (2.5%) took 2.3 times as long."""


def user_windows(events: pl.DataFrame, n_users: int, positives: tuple[str, ...], length: int,
                 users: np.ndarray | None = None) -> np.ndarray:
    """int64 [n_users, length]: each user's last ``length`` positive items (most recent last, -1 padded).

    Args:
        events: indexed rows with ``user_idx``, ``item_idx``, ``event``, ``timestamp``.
        users: only these users' windows, in this order ([len(users), length]); None: every user.
    """
    pos = events.filter(pl.col(C.EVENT).is_in(list(positives))).sort(C.USER_IDX, C.TS)
    times = pos[C.TS].dt.epoch("us").to_numpy().astype(np.int64)
    query = np.arange(n_users, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    end = np.full(len(query), np.iinfo(np.int64).max // 4, dtype=np.int64)
    return history_windows(pos[C.USER_IDX].to_numpy().astype(np.int64), pos[C.ITEM_IDX].to_numpy().astype(np.int64),
                           times, query, end, length)


class ItemTokens:
    """Every catalogue item tokenised once (truncated, unpadded); batches are padded on demand."""

    def __init__(self, texts: list[str], tokenizer, max_length: int) -> None:
        encoded = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
        self.ids = [np.asarray(ids, dtype=np.int64) for ids in encoded]
        self.lengths = np.array([len(ids) for ids in self.ids], dtype=np.int64)
        self.pad_id = tokenizer.pad_token_id or 0

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask [len(items), longest], dynamically padded."""
        width = int(self.lengths[items].max()) if len(items) else 1
        ids = np.full((len(items), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(items), width), dtype=np.int64)
        for row, item in enumerate(items):
            n = self.lengths[item]
            ids[row, :n] = self.ids[item]
            mask[row, :n] = 1
        return torch.from_numpy(ids), torch.from_numpy(mask)


class TextEncoder(nn.Module):
    """Mean-pooled item vectors from a plain transformer, with optional learned virtual tokens.

    Args:
        transformer: a Hugging Face encoder (``AutoModel``), eval mode.
        prompt: float [P, d] virtual-token embeddings prepended to every text (prompt tuning), or None.
    """

    def __init__(self, transformer: nn.Module, prompt: torch.Tensor | None = None) -> None:
        super().__init__()
        self.transformer = transformer
        self.register_buffer("prompt", prompt if prompt is not None else torch.empty(0), persistent=False)

    @property
    def hidden_size(self) -> int:
        return int(self.transformer.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """float [b, d]: the mean of the last hidden states over each text's real tokens (not the prompt)."""
        if self.prompt.numel() == 0:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return mean_pool(hidden, attention_mask)
        # what peft's prompt tuning does for feature extraction: [prompt | words], the mask covering both
        b, p = input_ids.shape[0], self.prompt.shape[0]
        words = self.transformer.get_input_embeddings()(input_ids)
        embeds = torch.cat([self.prompt.to(words.dtype).unsqueeze(0).expand(b, -1, -1), words], dim=1)
        mask = torch.cat([torch.ones(b, p, dtype=attention_mask.dtype), attention_mask], dim=1)
        hidden = self.transformer(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return mean_pool(hidden[:, p:], attention_mask)


class EncoderSource:
    """The tower's encoder and tokenizer: in memory, or read from their Hugging Face folder on first use.

    Ranking known users and items needs only the stored catalogue vectors; the encoder is needed
    only to encode items that arrived after training. Reading it (and importing the model's
    transformers code, several seconds) is therefore deferred until then, so loading a registered
    model for export or serving does not pay for it. Thread-safe: served models encode from
    several threads.
    """

    def __init__(self, folder: Path | None = None, prompt: torch.Tensor | None = None, *,
                 encoder: TextEncoder | None = None, tokenizer: Any = None) -> None:
        if encoder is None and folder is None:
            raise ValueError("EncoderSource needs an encoder or the folder it is stored in")
        self.folder = folder
        self._prompt = prompt
        self._loaded = (encoder, tokenizer) if encoder is not None else None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, encoder: TextEncoder, tokenizer: Any) -> EncoderSource:
        """An encoder already in memory (training hands its serving encoder over this way)."""
        return cls(encoder=encoder, tokenizer=tokenizer)

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def prompt(self) -> torch.Tensor:
        """float [P, d] learned virtual tokens; empty when the tower was not prompt-tuned."""
        if self._loaded is not None:
            return self._loaded[0].prompt
        return self._prompt if self._prompt is not None else torch.empty(0)

    def get(self) -> tuple[TextEncoder, Any]:
        """The encoder (eval mode) and its tokenizer, read from the folder the first time."""
        with self._lock:
            if self._loaded is None:
                if not (self.folder / "config.json").is_file():
                    raise RecsysError(f"{self.folder}: the text encoder folder is gone (was the model folder removed "
                                      "after loading?); load the model again")
                self._loaded = _read_encoder(self.folder, self._prompt)
            return self._loaded

    def save(self, folder: Path) -> None:
        """The encoder and tokenizer as a Hugging Face folder (safetensors) at ``folder``."""
        if self._loaded is None:  # never used since it was read: the stored files are already the encoder
            shutil.copytree(self.folder, folder)
            return
        encoder, tokenizer = self._loaded
        encoder.transformer.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)


@dataclass(frozen=True)
class TextScorer(StoredScorer):
    """The text tower at scoring time."""

    KIND: ClassVar[str] = "text"
    name: str
    source: EncoderSource
    """The encoder and tokenizer, read on first use (only new items need them)."""
    head: TowerHead
    item_vectors_: torch.Tensor
    """float32 [n_items, d] catalogue vectors."""
    user_history_: np.ndarray
    """int64 [n_users, L] each user's recent positive items."""
    template: str
    max_length: int
    positives: tuple[str, ...]
    encode_batch_size: int = 128
    lexical: LexicalIndex | None = None
    """The words the history shares with each item (``recsys.scorers.text_lexical``); None or weight 0: off."""
    neighbours: NeighbourIndex | None = None
    """How much of the history each item resembles (``recsys.scorers.text_neighbours``); None or weight 0:
    off."""

    @property
    def encoder(self) -> TextEncoder:
        return self.source.get()[0]

    @property
    def tokenizer(self) -> Any:
        return self.source.get()[1]

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items] logits; users pool their stored recent items (``history``: the lexical and neighbour
        terms read it, where the tower has them, else its shape only)."""
        self._check_items(history)
        with torch.inference_mode():
            scaled = self._scaled_users(users)
        return self._logits(scaled, history)

    def _logits(self, scaled: torch.Tensor, history: sp.csr_matrix, terms: sp.csr_matrix | None = None) -> np.ndarray:
        """The dense logits of the user side ``scaled``, with the active terms (``terms``: the neighbour term's, where
        the caller has them already)."""
        with torch.inference_mode():
            logits = self.head.product_at(scaled, self._catalogue).numpy().astype(np.float32, copy=False)
        if self.lexical is not None and self.lexical.active:
            self.lexical.add_logits(logits, history)
        if self.neighbours is not None and self.neighbours.active:
            self.neighbours.add_logits(logits, history, terms)
        return logits

    def block_scores(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray | FactorScores:
        """The block's scores as the ranked pipeline reads them: the logits ``scale * user . item + appeal`` as
        :class:`~recsys.scorers.factor_scores.FactorScores` (never the dense product), with the neighbour term as
        its sparse boost (the items near each user's history); or the dense logits with a lexical term (not a
        product of user and item vectors, and on every item) or a boost on more than :data:`BOOST_MAX_SHARE` of
        the block."""
        if self.lexical is not None and self.lexical.active:
            return self.score(users, history)
        self._check_items(history)
        with torch.inference_mode():
            scaled = self._scaled_users(users)
        if self.neighbours is not None and self.neighbours.active:
            terms = self.neighbours.terms(history)
            if terms.nnz > BOOST_MAX_SHARE * terms.shape[0] * terms.shape[1]:  # long histories: dense is cheaper
                return self._logits(scaled, history, terms)
            return BoostedFactorScores(scaled.numpy(), self._item_side, terms * np.float32(self.neighbours.weight))
        return FactorScores(scaled.numpy(), self._item_side)

    def _check_items(self, history: sp.csr_matrix) -> None:
        if history.shape[1] != self.item_vectors_.shape[0]:
            raise ValueError(f"history has {history.shape[1]} items; the text tower has {self.item_vectors_.shape[0]}")

    def _scaled_users(self, users: np.ndarray) -> torch.Tensor:
        """The user side of the logits (``scale * user`` [b, d]) from each user's stored recent items."""
        window = torch.from_numpy(self.user_history_[np.asarray(users)])
        return self.head.user_factors(self.head.users(self.item_vectors_[window.clamp(min=0)], window >= 0))

    @property
    def _item_side(self) -> ItemSide:
        """The catalogue's side ``[space, appeal]`` as :class:`FactorScores` reads it, kept while ``_catalogue`` is."""
        side = self._catalogue
        found = self.__dict__.get("_item_side_cache")
        if found is not None and found[0] is side:
            return found[1]
        space, appeal = side
        item_side = ItemSide(space.numpy(), appeal.numpy())
        object.__setattr__(self, "_item_side_cache", (side, item_side))
        return item_side

    @property
    def _catalogue(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The catalogue's side of the logits, computed once while the vectors and the head stay as they are
        (every block normalised every item vector and read its appeal again). Keyed on the tensors' version
        counters, so a head changed in place is re-read."""
        key = tuple(0 if t.is_inference() else t._version  # an inference tensor cannot change outside inference mode
                    for t in (self.item_vectors_, *self.head.parameters()))
        found = self.__dict__.get("_catalogue_cache")
        if found is not None and found[0] == key:
            return found[1]
        with torch.inference_mode():
            side = self.head.catalogue_side(self.item_vectors_)
        object.__setattr__(self, "_catalogue_cache", (key, side))  # a cache, not a field: replace() starts afresh
        return side

    def with_history(self, events: pl.DataFrame, n_users: int) -> TextScorer:
        """The same tower pooling each user's recent positives in ``events`` (indexed rows)."""
        return replace(self, user_history_=user_windows(events, n_users, self.positives,
                                                        self.user_history_.shape[1]))

    def encode(self, items: pl.DataFrame) -> torch.Tensor:
        """float32 [len(items), d]: vectors of contract item rows, through the fine-tuned encoder."""
        return self._encode_tokens(self.tokens(items))

    def tokens(self, items: pl.DataFrame) -> ItemTokens:
        """Contract item rows rendered with the tower's template and tokenised."""
        return ItemTokens(render_item_texts(items, self.template), self.source.get()[1], self.max_length)

    def _encode_tokens(self, tokens: ItemTokens) -> torch.Tensor:
        encoder = self.encoder
        out = torch.empty((len(tokens.lengths), self.item_vectors_.shape[1]))
        order = np.argsort(tokens.lengths, kind="stable")
        encoder.eval()
        with torch.inference_mode(), fast_cpu_linears(encoder):
            for start in range(0, len(order), self.encode_batch_size):
                rows = order[start:start + self.encode_batch_size]
                ids, mask = tokens.batch(rows)
                out[torch.from_numpy(rows)] = encoder(ids, mask)
        return out

    def with_items(self, items: pl.DataFrame) -> TextScorer:
        """The catalogue extended by ``items`` (contract rows, appended in order), encoded now."""
        if not items.height:
            return self
        tokens = self.tokens(items)
        vectors = torch.cat([self.item_vectors_, self._encode_tokens(tokens)])
        lexical = self.lexical.with_items(tokens.ids) if self.lexical is not None else None
        neighbours = self.neighbours.with_items(vectors) if self.neighbours is not None else None
        return replace(self, item_vectors_=vectors, lexical=lexical, neighbours=neighbours)

    # ---- storage ---------------------------------------------------------------------------
    def save(self, folder: Path) -> dict[str, Any]:
        """The encoder and tokenizer as a Hugging Face folder (safetensors); head, vectors, windows as arrays."""
        self.source.save(folder / ENCODER_FOLDER)
        arrays = {f"head.{k}": v.detach().numpy() for k, v in self.head.state_dict().items()}
        arrays |= {"item_vectors": self.item_vectors_.numpy(), "user_history": self.user_history_}
        if self.source.prompt.numel():
            arrays["prompt"] = self.source.prompt.detach().numpy()
        for term in (self.lexical, self.neighbours):
            if term is not None:
                arrays |= term.arrays()
        save_arrays(folder, arrays)
        return {"similarity": self.head.similarity, "template": self.template, "max_length": self.max_length,
                "positives": list(self.positives), "encode_batch_size": self.encode_batch_size}

    @classmethod
    def load(cls, folder: Path, settings: dict[str, Any]) -> TextScorer:
        path = folder / ENCODER_FOLDER
        if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
            raise RecsysError(f"{path}: no Hugging Face encoder folder (config.json and safetensors weights); "
                              "the model folder is incomplete")
        arrays = load_arrays(folder)
        prompt = torch.from_numpy(arrays["prompt"]) if "prompt" in arrays else None
        head_state = {k.removeprefix("head."): torch.from_numpy(v) for k, v in arrays.items() if k.startswith("head.")}
        vectors = torch.from_numpy(arrays["item_vectors"])
        head = TowerHead(vectors.shape[1], settings["similarity"])
        # models registered before the text-read appeal existed have none: theirs stays zero, as it was
        missing, unexpected = head.load_state_dict(head_state, strict=False)
        if unexpected or any(not key.startswith("appeal.") for key in missing):
            raise RecsysError(f"{folder}: the text head's arrays do not match (missing {missing}, "
                              f"unexpected {unexpected}); the model folder is from another version or damaged")
        return cls(settings["name"], EncoderSource(path, prompt), head.eval(), vectors,
                   arrays["user_history"], settings["template"], int(settings["max_length"]),
                   tuple(settings["positives"]), int(settings["encode_batch_size"]),
                   LexicalIndex.from_arrays({k: v for k, v in arrays.items() if k.startswith(ARRAY_PREFIX)}),
                   NeighbourIndex.from_arrays({k: v for k, v in arrays.items() if k.startswith(NEIGHBOUR_PREFIX)}))


def _read_encoder(path: Path, prompt: torch.Tensor | None) -> tuple[TextEncoder, Any]:
    """The stored encoder (eval mode) and tokenizer of a Hugging Face folder, safetensors only."""
    model_class, tokenizer_class = _encoder_classes(path)
    # safetensors only: a pytorch_model.bin is deserialised as Python objects. Items are mean-pooled: no pooler
    # (BERT-like models take add_pooling_layer; transformers keeps an unknown keyword as a config attribute)
    transformer = model_class.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                              add_pooling_layer=False).eval()
    tokenizer = tokenizer_class.from_pretrained(path, local_files_only=True)
    return TextEncoder(transformer, prompt).eval(), tokenizer


def _encoder_classes(path: Path) -> tuple[Any, Any]:
    """The model and tokenizer classes the folder names (``architectures``, ``tokenizer_class``).

    Naming them directly skips the Auto* lookup tables, which import far more of transformers
    than the one model needs (about half a second of every model load); Auto* is the fallback.
    """
    import transformers

    config = read_json(path / "config.json")
    tokenizer_config = read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    model = getattr(transformers, (config.get("architectures") or [""])[0], None) or transformers.AutoModel
    tokenizer = getattr(transformers, tokenizer_config.get("tokenizer_class") or "", None) or transformers.AutoTokenizer
    return model, tokenizer

