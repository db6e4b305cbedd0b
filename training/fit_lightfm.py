"""LightFM hybrid matrix factorisation on binarised interactions, with optional item features.

Item features are ``[identity | data.item_features]`` with every row normalised to sum to 1,
as ``lightfm.data.Dataset`` builds them: the identity columns keep one free embedding per item,
the feature columns let items that share a category or tag share signal, so a cold item
(no interactions) is still placed by its features.

``LightFMConfig(identity=False, text_features=n)`` is LightFM's documented cold-start path
(``lightfm_text`` in the baselines): no per-item identity column, so every item, new or old, is
the sum of its features' embeddings; the features are its ``n`` most frequent TF-IDF terms of title
and description. A new item's representation then comes from its words only.

Choosing the number of epochs on the validation window without refitting from scratch::

    model = LightFMRecommender(LightFMConfig(epochs=50))
    model.fit_epochs(train, epochs=range(5, 51, 5), on_epoch=lambda n, m: log(n, evaluate(m)))

or, step by step, ``model.partial_fit(train, epochs=5)`` repeatedly. With ``num_threads=1``
training ``a`` then ``b`` more epochs gives exactly the model of one ``a + b`` epoch fit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

from recsys.config import check_above, check_at_least
from recsys.errors import NotFittedError
from recsys.indexing import FitInput
from recsys.scorers import FactorScorer, binarize

__all__ = ["LOSSES", "LightFMConfig", "LightFMRecommender"]

logger = logging.getLogger(__name__)

LOSSES = ("warp", "bpr", "logistic", "warp-kos")
"""Losses LightFM implements."""
_STATE = tuple(f"{side}_{suffix}" for side in ("item", "user") for suffix in (
    "embeddings", "embedding_gradients", "embedding_momentum", "biases", "bias_gradients", "bias_momentum"))
"""LightFM's parameter and adagrad arrays: what a warm-started update continues from."""


@dataclass(frozen=True)
class LightFMConfig:
    """Settings of :class:`LightFMRecommender`."""

    loss: str = "warp"
    """Training loss, one of :data:`LOSSES`."""
    no_components: int = 64
    """Embedding dimension; >= 1."""
    learning_rate: float = 0.05
    """Initial adagrad learning rate; > 0."""
    item_alpha: float = 1e-6
    """L2 penalty on item feature embeddings; >= 0."""
    user_alpha: float = 1e-6
    """L2 penalty on user embeddings; >= 0."""
    epochs: int = 30
    """Epochs run by ``fit``; >= 1."""
    num_threads: int = 1
    """Hogwild training threads; >= 1. Only 1 is reproducible for a given seed."""
    use_item_features: bool = True
    """Add ``FitInput.item_features`` to the identity features (ignored when they are None)."""
    identity: bool = True
    """Give each item its own identity feature (a free embedding). False: items are only their
    features, so what is learned on old items carries to new ones through shared words."""
    text_features: int = 0
    """Add the item's most frequent ``text_features`` TF-IDF terms of title and description
    (``FitInput.items``) as features; 0 = none."""
    use_weights: bool = False
    """Weight each (user, item) by its event-weight sum in ``FitInput.interactions`` (click 1,
    purchase 2 by default; the run's ``event_weights``) through LightFM's ``sample_weight``,
    instead of counting every positive once."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"LightFMConfig.loss {self.loss!r} is invalid; must be one of {', '.join(LOSSES)}")
        check_at_least(self, no_components=1, item_alpha=0, user_alpha=0, epochs=1, num_threads=1, text_features=0)
        if not self.identity and not self.text_features and not self.use_item_features:
            raise ValueError("LightFMConfig: without identity features items need use_item_features or text_features")
        check_above(self, learning_rate=0)


class LightFMRecommender:
    """LightFM on the binarised train matrix; fast block scoring from cached representations.

    ``score(u, i) = <user_emb[u], item_repr[i]> + user_bias[u] + item_bias[i]``, where
    ``item_repr = item_features @ item_embeddings`` (likewise the biases); exactly
    ``LightFM.predict``. ``history`` at scoring time is not folded in: users must be the ones
    seen in ``fit``.
    """

    name = "lightfm"

    def __init__(self, config: LightFMConfig = LightFMConfig()) -> None:
        self.config = config
        if config.text_features and not config.identity:
            self.name = "lightfm_text"
        self.model_: LightFM | None = None
        """The underlying ``lightfm.LightFM``, set by ``fit``/``partial_fit``."""
        self.item_features_: sp.csr_matrix | None = None
        """float32 [n_items, n_items + n_features] row-normalised features, or None (identity)."""
        self.epochs_trained_ = 0
        """Epochs run since the model was (re)initialised."""
        self._item_biases: np.ndarray | None = None
        self._item_embeddings: np.ndarray | None = None

    def fit(self, data: FitInput) -> FactorScorer:
        """Train a fresh model for ``config.epochs`` epochs.

        Args:
            data: ``interactions`` float32 [n_users, n_items] (binarised here), optional
                ``item_features`` float32 [n_items, n_features], ``seed``.

        Returns:
            The fitted scorer (:meth:`scorer`).
        """
        self._reset()
        return self.partial_fit(data, epochs=self.config.epochs).scorer()

    def scorer(self) -> FactorScorer:
        """The model as it is now, as plain arrays (copies: later ``partial_fit`` calls do not move it).

        ``score(u, i) = <user_emb[u], item_repr[i]> + user_bias[u] + item_bias[i]``, exactly
        ``LightFM.predict``; the raw parameter and adagrad arrays ride along for warm starts.

        Raises:
            NotFittedError: before ``fit``.
        """
        model = self._fitted()
        user_biases, user_embeddings = model.get_user_representations()
        state = {name: np.array(getattr(model, name), copy=True) for name in _STATE}
        return FactorScorer(self.name, np.array(user_embeddings, copy=True), np.array(self._item_embeddings, copy=True),
                            np.array(user_biases, copy=True), np.array(self._item_biases, copy=True), state)

    def partial_fit(self, data: FitInput, epochs: int = 1) -> Self:
        """Continue training for ``epochs`` more epochs (starts a fresh model if none exists).

        Pass the same ``data`` on every call: the feature layout must not change.

        Args:
            data: as for :meth:`fit`.
            epochs: number of additional epochs; >= 1.

        Returns:
            self.

        Raises:
            ValueError: ``epochs`` < 1, or the number of feature columns changed since the
                model was initialised.
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1; got {epochs}")
        interactions = binarize(data.interactions).tocoo()
        weights = self._sample_weight(data) if self.config.use_weights else None
        features = self._build_item_features(data)
        if self.model_ is None:
            self.model_ = LightFM(
                no_components=self.config.no_components,
                loss=self.config.loss,
                learning_rate=self.config.learning_rate,
                item_alpha=self.config.item_alpha,
                user_alpha=self.config.user_alpha,
                random_state=np.random.RandomState(data.seed),
            )
        elif (features.shape[1] if features is not None else data.n_items) != self.model_.item_embeddings.shape[0]:
            raise ValueError(
                "the item feature columns differ from the ones the model was initialised with; "
                "pass the same FitInput to every partial_fit call, or call fit() to start over"
            )
        self.item_features_ = features
        self.model_.fit_partial(
            interactions, item_features=features, sample_weight=weights, epochs=epochs,
            num_threads=self.config.num_threads,
        )
        self.epochs_trained_ += epochs
        self._item_biases, self._item_embeddings = self.model_.get_item_representations(features)
        logger.debug("lightfm: %d epochs trained", self.epochs_trained_)
        return self

    def warm_start(self, parent: FactorScorer, data: FitInput, user_map: np.ndarray, item_map: np.ndarray
                   ) -> Self:
        """Start from ``parent``'s embeddings instead of random ones; then ``partial_fit`` updates them.

        The tables grow for new ids: row ``i`` of this model's users (items) copies the parent's
        row ``user_map[i]`` (``item_map[i]``), including LightFM's adagrad accumulators, and a
        ``-1`` gets LightFM's random initialisation. Category/tag feature embeddings start afresh
        (their columns may differ between the windows); each item's own embedding carries over.

        Args:
            parent: the previous version's LightFM scorer (its ``state`` holds LightFM's arrays).
            data: this window's fit input (its item features fix the new layout).
            user_map, item_map: int [n_users] / [n_items] parent index of each new index, or -1.
        """
        if not self.config.identity:
            raise ValueError("a warm start carries each item's own embedding over; this config has no identity "
                             "features")
        if not set(_STATE) <= set(parent.state):
            raise ValueError(f"the previous {parent.name!r} model carries no LightFM training state to continue from")
        source = parent.state
        features = self._build_item_features(data)
        model = LightFM(no_components=self.config.no_components, loss=self.config.loss,
                        learning_rate=self.config.learning_rate, item_alpha=self.config.item_alpha,
                        user_alpha=self.config.user_alpha, random_state=np.random.RandomState(data.seed))
        if source["user_embeddings"].shape[1] != model.no_components:
            raise ValueError(f"the parent LightFM has {source['user_embeddings'].shape[1]} components; this config "
                             f"{model.no_components}: they must match for a warm start")
        model._initialize(model.no_components, features.shape[1] if features is not None else data.n_items,
                          data.n_users)
        # the parent's item rows start with one identity row per item: row j is item j's own embedding
        for side, mapping in (("item", item_map), ("user", user_map)):
            mapping = np.asarray(mapping, dtype=np.int64)
            rows = np.flatnonzero(mapping >= 0)
            for name in (n for n in _STATE if n.startswith(side)):
                getattr(model, name)[rows] = source[name][mapping[rows]]
        self.model_, self.item_features_, self.epochs_trained_ = model, features, 0
        self._item_biases, self._item_embeddings = model.get_item_representations(features)
        return self

    def fit_epochs(self, data: FitInput, epochs: Iterable[int], on_epoch: Callable[[int, FactorScorer], None]) -> Self:
        """Train a fresh model once, calling ``on_epoch`` at each requested epoch count.

        ``fit_epochs(data, [5, 10, 20], cb)`` trains 20 epochs in total and calls ``cb(5, scorer)``,
        ``cb(10, scorer)``, ``cb(20, scorer)`` with the model's scorer at that point, so the
        callback can evaluate on the validation window and keep the best epoch count.

        Args:
            data: as for :meth:`fit`.
            epochs: strictly increasing epoch counts, each >= 1.
            on_epoch: called with (epochs trained so far, the scorer at that point).

        Returns:
            self, trained to the last epoch count.

        Raises:
            ValueError: ``epochs`` is empty, not strictly increasing, or starts below 1.
        """
        checkpoints = [int(e) for e in epochs]
        if not checkpoints or checkpoints[0] < 1 or (np.diff(checkpoints) <= 0).any():
            raise ValueError(
                f"epochs must be a non-empty, strictly increasing sequence of counts >= 1; got {checkpoints}"
            )
        self._reset()
        for checkpoint in checkpoints:
            self.partial_fit(data, epochs=checkpoint - self.epochs_trained_)
            on_epoch(checkpoint, self.scorer())
        return self

    def predict_loop(self, users: np.ndarray) -> np.ndarray:
        """Slow reference: ``LightFM.predict(user, all_items)`` once per user.

        Only for benchmarks and tests that check the scorer against LightFM itself; it
        loops over users in Python.

        Args:
            users: int [b] user indices seen in ``fit``.

        Returns:
            float32 [b, n_items].

        Raises:
            NotFittedError: before ``fit``.
        """
        model = self._fitted()
        n_items = self._item_embeddings.shape[0]
        items = np.arange(n_items, dtype=np.int32)
        out = np.empty((len(users), n_items), dtype=np.float32)
        for row, user in enumerate(np.asarray(users)):
            out[row] = model.predict(
                np.full(n_items, user, dtype=np.int32),
                items,
                item_features=self.item_features_,
                num_threads=self.config.num_threads,
            )
        return out

    def _reset(self) -> None:
        self.model_ = None
        self.epochs_trained_ = 0

    def _fitted(self) -> LightFM:
        if self.model_ is None or self._item_embeddings is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        return self.model_

    @staticmethod
    def _sample_weight(data: FitInput) -> sp.coo_matrix:
        """float32 COO with the event-weight sums, entry for entry where ``binarize`` puts a 1."""
        weights = sp.csr_matrix(data.interactions, dtype=np.float32, copy=True)
        weights.sum_duplicates()
        weights.data[weights.data <= 0] = 0
        weights.eliminate_zeros()
        return weights.tocoo()

    def _build_item_features(self, data: FitInput) -> sp.csr_matrix | None:
        """``[identity | item_features | text terms]`` (the parts the config asks for) with rows summing to 1,
        or None for identity only."""
        parts = []
        if self.config.use_item_features and data.item_features is not None:
            if data.item_features.shape[0] != data.n_items:
                raise ValueError(
                    f"item_features has {data.item_features.shape[0]} rows; expected one per item ({data.n_items})"
                )
            parts.append(data.item_features)
        if self.config.text_features:
            if data.items is None:
                raise ValueError("text_features reads item text: FitInput.items must hold the catalogue")
            from training.fit_tfidf import item_tfidf

            parts.append(item_tfidf(data.items, max_features=self.config.text_features))
        if self.config.identity:
            if not parts:
                return None
            parts.insert(0, sp.identity(data.n_items, dtype=np.float32, format="csr"))
        features = sp.hstack(parts, format="csr", dtype=np.float32)
        # l1 row normalisation, as lightfm.data.Dataset(normalize=True); with the identity every norm is >= 1,
        # without it an item with no feature keeps an empty row (it scores its bias, 0 for a new item)
        row_norms = np.asarray(abs(features).sum(axis=1)).ravel()
        scale = np.divide(1.0, row_norms, out=np.zeros_like(row_norms), where=row_norms > 0)
        return sp.csr_matrix(sp.diags(scale, format="csr") @ features, dtype=np.float32)
