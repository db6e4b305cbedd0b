"""The scoring half of the two-tower text model: user pooling and the match score.

Item vectors come from the text encoder (``recsys.text_encoder`` / ``training.encoder_modes``).
A user is the attention-pooled vectors of their most recent history items, with a learned
query, and the match is a cosine with a learned temperature (or a scaled dot product),
mapped by a sigmoid to a click probability. Training lives in ``training/text_tower.py``;
this module holds what serving needs, so batch export and the pyfunc score the same way.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from features.arrays import distinct_ranks, search

__all__ = ["AttentionPooling", "TowerHead", "history_windows", "PAD"]

PAD = -1
"""Item index that pads history windows."""


class AttentionPooling(nn.Module):
    """Softmax attention over history item vectors with one learned query.

    With the query at zero (its initial value) every history item weighs the same, so an
    untrained head is exactly the mean of the history: the zero-shot user vector.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.key = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.key.weight)

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool history vectors.

        Args:
            vectors: float [b, L, d] history item vectors (padding rows arbitrary).
            mask: bool [b, L], True for real history items.

        Returns:
            float [b, d]; a user without history gets the zero vector.
        """
        logits = self.key(vectors) @ self.query / math.sqrt(vectors.shape[-1])
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)  # all-padding rows
        return (weights.unsqueeze(-1) * vectors).sum(dim=1)


class TowerHead(nn.Module):
    """User pooling plus the match score: ``temperature * cos(u, v)`` or ``(u . v) / sqrt(d)``."""

    def __init__(self, dim: int, similarity: Literal["cosine", "dot"] = "cosine", temperature: float = 10.0) -> None:
        super().__init__()
        self.pool = AttentionPooling(dim)
        self.similarity = similarity
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        # A global offset calibrates click probabilities (most shown items are not clicked)
        # without bending the similarity space; it does not change any ranking. It starts at
        # -temperature (cos = 1 means even odds): pretrained encoders put most pairs near
        # cos 0.8-0.9, and a zero start would begin every fit by predicting "click" everywhere.
        self.bias = nn.Parameter(torch.tensor(-float(temperature) if similarity == "cosine" else 0.0))
        # An item's appeal read from its text alone: a linear function of its (normalised) vector added to
        # every user's score. New items have no popularity, yet their text often says how widely they will be
        # chosen; zero (no effect) until ``training.text_item_terms`` fits it on the logs and weighs it on held-out
        # items. Not trained by the loss: logQ-corrected softmax would push it back toward zero.
        self.appeal = nn.Linear(dim, 1)
        nn.init.zeros_(self.appeal.weight)
        nn.init.zeros_(self.appeal.bias)
        self.appeal.requires_grad_(False)

    def users(self, history_vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """User vectors [b, d] from history item vectors [b, L, d] and their mask [b, L]."""
        return self.pool(history_vectors, mask)

    def item_space(self, items: torch.Tensor) -> torch.Tensor:
        """Item vectors as the score reads them: unit length (cosine) or as they are (dot)."""
        return nn.functional.normalize(items, dim=-1) if self.similarity == "cosine" else items

    def item_appeal(self, items: torch.Tensor) -> torch.Tensor:
        """The text-read appeal of items [n, d] -> [n] (zero until fitted)."""
        return self.appeal(self.item_space(items)).squeeze(-1)

    def _user_side(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """User vectors as the score reads them, and the scale of the match: temperature (cosine) or 1/sqrt(d)."""
        if self.similarity == "cosine":
            return nn.functional.normalize(users, dim=-1), self.log_temperature.exp()
        return users, 1.0 / math.sqrt(users.shape[-1])

    def match_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The user-item match alone, every user against every item: [b, d] x [n, d] -> [b, n]."""
        users, scale = self._user_side(users)
        return scale * users @ self.item_space(items).T

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Match logits of every user against every item, plus each item's appeal: [b, d] x [n, d] -> [b, n]."""
        return self.match_logits(users, items) + self.item_appeal(items)[None, :]

    def catalogue_side(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The items' half of :meth:`logits` ([n, d] space, [n] appeal): fixed while serving, so computed once."""
        space = self.item_space(items)
        return space, self.appeal(space).squeeze(-1)

    def user_factors(self, users: torch.Tensor) -> torch.Tensor:
        """The user side of :meth:`logits_at`: ``scale * user`` [b, d], whose product with a :meth:`catalogue_side`'s
        space plus its appeal is the logits."""
        users, scale = self._user_side(users)
        return scale * users

    def logits_at(self, users: torch.Tensor, side: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """:meth:`logits` against a :meth:`catalogue_side` (the same numbers, without the items' half again)."""
        return self.product_at(self.user_factors(users), side)

    @staticmethod
    def product_at(scaled: torch.Tensor, side: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The logits of :meth:`user_factors`' user side against a :meth:`catalogue_side`: [b, d] -> [b, n]."""
        space, appeal = side
        return torch.addmm(appeal[None, :], scaled, space.T)  # one [b, n] pass: the product lands on the appeal

    def pair_match(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The user-item match alone of aligned pairs: [b, d] x [b, d] -> [b]."""
        users, scale = self._user_side(users)
        return scale * (users * self.item_space(items)).sum(-1)

    def pair_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Click logits of aligned pairs (match + appeal), offset by the learned bias: [b, d] x [b, d] -> [b]."""
        return self.pair_match(users, items) + self.item_appeal(items) + self.bias


def history_windows(user_sorted: np.ndarray, item_sorted: np.ndarray, time_sorted: np.ndarray,
                    query_users: np.ndarray, query_times: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` history items of each query strictly before its time (vectorised).

    Args:
        user_sorted, item_sorted, time_sorted: int64 [m] positive events sorted by (user, time).
        query_users, query_times: int64 [q] whose history is wanted; time as int64 (e.g. us).
        length: window length L.

    Returns:
        int64 [q, L] item indices, most recent last, left-padded with ``PAD``.
    """
    if len(item_sorted) == 0 or len(query_users) == 0:
        return np.full((len(query_users), length), PAD, dtype=np.int64)
    # user-major keys over time *ranks* (not raw times), so any unit, span or number of users fits int64:
    # an event's rank is its position among the distinct event times; a query's is the number of distinct
    # times before it, so "rank < query rank" is exactly "time < query time".
    times, ranks = distinct_ranks(time_sorted)
    stride = np.int64(len(times) + 1)
    keys = user_sorted.astype(np.int64) * stride + ranks
    query_users = np.asarray(query_users, dtype=np.int64)
    qkeys = query_users * stride + search(times, query_times)
    end = search(keys, qkeys)
    start = search(keys, query_users * stride)
    offsets = np.arange(-length, 0)
    pos = end[:, None] + offsets[None, :]
    valid = pos >= start[:, None]
    return np.where(valid, item_sorted[np.clip(pos, 0, max(len(item_sorted) - 1, 0))], PAD).astype(np.int64)
