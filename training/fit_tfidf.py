"""TF-IDF of item text: the lexical peer of the text tower, and the token features of ``lightfm_text``.

A new item has no events but has text. TF-IDF over the same title and description asks how much
of what a pretrained or fine-tuned encoder finds on new items is already in the words: a user's
profile is the mean of their history items' L2-normalised TF-IDF rows, an item's score its cosine
with that profile. Everything stays sparse (items x vocabulary, users x vocabulary), so a large
catalogue with a large vocabulary costs only its non-zeros.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from recsys.config import check_at_least
from recsys.indexing import FitInput
from recsys.scorers import binarize, check_block

__all__ = ["TEXT_TEMPLATE", "TfidfConfig", "TfidfRecommender", "TfidfScorer", "item_tfidf"]

logger = logging.getLogger(__name__)

TEXT_TEMPLATE = "{title}. {description}"
"""The words of ``lightfm_text``: title and description (category and tags are LightFM's other features)."""


def item_tfidf(items: pl.DataFrame, max_features: int | None = None, min_df: int = 1,
               template: str | None = TEXT_TEMPLATE) -> sp.csr_matrix:
    """float32 [n_items, vocabulary] L2-normalised TF-IDF rows of each item's text.

    Args:
        items: the catalogue in item-index order (``FitInput.items``).
        max_features: keep the most frequent terms only (None: every term).
        min_df: terms in fewer items are dropped.
        template: the text read (``render_item_texts``); None: the text tower's default template.

    Returns:
        One row per item (an item without words has an empty row); the vocabulary is the whole
        catalogue's, new items included: their text is known, only their events are held out.
    """
    from recsys.text_encoder import DEFAULT_TEMPLATE, render_item_texts  # loads torch, so only here

    texts = render_item_texts(items, DEFAULT_TEMPLATE if template is None else template)
    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=min_df, max_features=max_features,
                                 dtype=np.float32)
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # no term at all (empty texts, or only stop words): nothing to read
        logger.warning("tfidf: the item texts hold no words; every item gets an empty row")
        return sp.csr_matrix((len(texts), 1), dtype=np.float32)
    return sp.csr_matrix(matrix, dtype=np.float32)


@dataclass(frozen=True)
class TfidfScorer:
    """``score(u, j) = cos(mean of u's history rows of X, X[j])`` with ``X`` the L2-normalised TF-IDF rows.

    Not stored in a registered model: it is an evaluation peer, not a served model.
    """

    name: str
    tfidf: sp.csr_matrix
    """float32 [n_items, vocabulary], rows L2-normalised."""

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """float32 [b, n_items]; a user without history scores 0 everywhere."""
        check_block(users, history, self.tfidf.shape[0])
        counts = np.maximum(np.diff(sp.csr_matrix(history).indptr), 1).astype(np.float32)
        profile = sp.diags(1.0 / counts) @ (binarize(history) @ self.tfidf)
        profile = normalize(profile, norm="l2", copy=False)  # the mean's norm does not change a user's order
        return np.asarray((profile @ self.tfidf.T).toarray(), dtype=np.float32)


@dataclass(frozen=True)
class TfidfConfig:
    """Settings of :class:`TfidfRecommender`."""

    min_df: int = 1
    """Terms in fewer items are dropped; >= 1."""
    template: str | None = None
    """The text read; None: the text tower's template (title, category, tags, description), so that the
    lexical peer reads exactly what the tower reads (``recsys train`` passes the run's ``text.template``)."""

    def __post_init__(self) -> None:
        check_at_least(self, min_df=1)


class TfidfRecommender:
    """Content-based TF-IDF: nothing is learned from events, so new items rank exactly like old ones."""

    name = "tfidf"

    def __init__(self, config: TfidfConfig = TfidfConfig()) -> None:
        self.config = config

    def fit(self, data: FitInput) -> TfidfScorer:
        """TF-IDF rows of the catalogue's text.

        Raises:
            ValueError: ``data.items`` is None (the catalogue text is needed).
        """
        if data.items is None:
            raise ValueError("tfidf reads item text: FitInput.items must hold the catalogue")
        return TfidfScorer(self.name, item_tfidf(data.items, min_df=self.config.min_df, template=self.config.template))
