"""The fitted text tower in its serving form: encoder, head, catalogue vectors and user windows.

``training.fit_text.TextTowerRecommender`` owns fine-tuning; once fitted it hands over a
:class:`TextScorer`, which is what the registered model carries. It scores users exactly as
the recommender did, re-reads newer histories without refitting (the tower is inductive),
and encodes items that arrived after training so they compete in the lists at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import nn

from recsys import contract as C
from recsys.text_encoder import fast_cpu_linears, render_item_texts
from recsys.text_tower import TowerHead, history_windows

__all__ = ["TextScorer", "user_windows"]


def user_windows(events: pl.DataFrame, n_users: int, positives: tuple[str, ...], length: int) -> np.ndarray:
    """int64 [n_users, length]: each user's last ``length`` positive items (most recent last, -1 padded).

    Args:
        events: indexed rows with ``user_idx``, ``item_idx``, ``event``, ``timestamp``.
    """
    pos = events.filter(pl.col(C.EVENT).is_in(list(positives))).sort(C.USER_IDX, C.TS)
    times = pos[C.TS].dt.epoch("us").to_numpy().astype(np.int64)
    end = np.full(n_users, np.iinfo(np.int64).max // 4, dtype=np.int64)
    return history_windows(pos[C.USER_IDX].to_numpy().astype(np.int64), pos[C.ITEM_IDX].to_numpy().astype(np.int64),
                           times, np.arange(n_users, dtype=np.int64), end, length)


@dataclass(frozen=True)
class TextScorer:
    """The text tower at scoring time (a ``Recommender`` that is already fitted)."""

    name: str
    encoder: nn.Module
    """``training.encoder_modes.ItemEncoder`` (eval mode, no cached activations)."""
    head: TowerHead
    tokenizer: object
    item_vectors_: torch.Tensor
    """float32 [n_items, d] catalogue vectors."""
    user_history_: np.ndarray
    """int64 [n_users, L] each user's recent positive items."""
    template: str
    max_length: int
    positives: tuple[str, ...]
    encode_batch_size: int = 128

    def fit(self, data) -> TextScorer:
        """Already fitted; kept for the ``Recommender`` protocol."""
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items] match logits; users pool their stored recent items (``history``: shape only)."""
        if history.shape[1] != self.item_vectors_.shape[0]:
            raise ValueError(f"history has {history.shape[1]} items; the text tower has {self.item_vectors_.shape[0]}")
        window = torch.from_numpy(self.user_history_[np.asarray(users)])
        with torch.inference_mode():
            vectors = self.head.users(self.item_vectors_[window.clamp(min=0)], window >= 0)
            return self.head.logits(vectors, self.item_vectors_).numpy().astype(np.float32, copy=False)

    def with_history(self, events: pl.DataFrame, n_users: int) -> TextScorer:
        """The same tower pooling each user's recent positives in ``events`` (indexed rows)."""
        return replace(self, user_history_=user_windows(events, n_users, self.positives,
                                                        self.user_history_.shape[1]))

    def encode(self, items: pl.DataFrame) -> torch.Tensor:
        """float32 [len(items), d]: vectors of contract item rows, through the fine-tuned encoder."""
        from training.text_data import ItemTokens  # tokenisation helper shared with training

        tokens = ItemTokens(render_item_texts(items, self.template), self.tokenizer, self.max_length)
        out = torch.empty((items.height, self.item_vectors_.shape[1]))
        order = np.argsort(tokens.lengths, kind="stable")
        self.encoder.eval()
        with torch.inference_mode(), fast_cpu_linears(self.encoder):
            for start in range(0, len(order), self.encode_batch_size):
                rows = order[start:start + self.encode_batch_size]
                ids, mask = tokens.batch(rows)
                out[torch.from_numpy(rows)] = self.encoder(ids, mask)  # no item keys: nothing cached
        return out

    def with_items(self, items: pl.DataFrame) -> TextScorer:
        """The catalogue extended by ``items`` (contract rows, appended in order), encoded now."""
        vectors = torch.cat([self.item_vectors_, self.encode(items)]) if items.height else self.item_vectors_
        return replace(self, item_vectors_=vectors)
