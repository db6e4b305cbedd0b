"""Fitting the ranked pipeline: stage-one models, a label window, and the LightGBM ranker on top.

``fit(data)`` sees one window (train, or train + valid) and holds out the latest
``label_fraction`` of each user's positive events inside it: stage-one models (text tower,
LightFM, EASE, recent popularity) fit on the rest, candidates and features are built as of
each user's cut, and the held-out events label the ranker. Then the collaborative models
refit on the whole window and the text tower re-reads the users' histories (it is inductive:
no second fine-tuning), so at scoring time every feature means what it meant in training.
With ``history = train+valid`` and the default fraction, the label window is about the
valid window: the ranker learns from the valid window's labels with features from before it.

Ablations share one :class:`StageOne` per window: each variant only trains its own ranker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm.auto import tqdm

from features.table import FeatureConfig, feature_columns
from recsys import contract as C
from recsys.candidates import CandidateConfig, candidate_recall
from recsys.config import check_above, check_at_least
from recsys.console import bars
from recsys.errors import NotFittedError
from recsys.evaluation.bootstrap import paired_bootstrap
from recsys.evaluation.eval_data import EvalConfig
from recsys.evaluation.metrics import ranking_metrics
from recsys.indexing import FitInput, fit_input
from recsys.memory import peak_rss_mb, release
from recsys.pipeline import ColdExposure, PipelineState, RankingPipeline
from recsys.ranker import RankerEnsemble
from recsys.scorers import FactorScorer, Scorer, TextScorer
from recsys.topk import top_k
from training.fit_baselines import (
    EASEConfig,
    EASERecommender,
    ItemKNNConfig,
    ItemKNNRecommender,
    PopularityConfig,
    PopularityRecommender,
)
from training.fit_lightfm import LightFMConfig, LightFMRecommender
from training.fit_models import Tuned
from training.fit_ranker import RankerConfig, RankerReport, cross_validated_iterations, fit_rankers, out_of_fold
from training.fit_text import TextTowerRecommender, WarmText, with_mode
from training.text_tower import TextTowerConfig
from training.warm_start import WarmStart

__all__ = ["PipelineConfig", "StageOne", "PipelineRecommender", "StageView", "ColdExposureView", "label_split",
           "refit_for_shipping", "VARIANTS", "NO_NEW_ITEMS"]

logger = logging.getLogger(__name__)

CF_MODELS = ("lightfm", "ease", "itemknn")
VARIANTS = {"pipeline": (), "pipeline_no_text": ("text",), "pipeline_no_cf": CF_MODELS, "pipeline_no_ease": ("ease",),
            "pipeline_no_new": ()}
"""Ablations: name -> stage-one models left out (their candidates and their features). ``pipeline_no_new``
keeps every model and lets no new item be a candidate instead (:data:`NO_NEW_ITEMS`)."""
NO_NEW_ITEMS = "pipeline_no_new"
"""The ablation without new-item handling: no source proposes a new item, so its ranker never sees one and
its lists hold one only below all of its candidates. The full pipeline's new items reach its lists on merit
(no quota by default): this variant is what its overall recall is compared with."""


@dataclass(frozen=True)
class PipelineConfig:
    """The ranked pipeline's stages after the text tower (whose config is ``TrainConfig.text``)."""

    label_fraction: float = 0.125
    """Latest share of each user's positives that labels the ranker (1/8 of train+valid = the valid window)."""
    lightfm: LightFMConfig = field(default_factory=LightFMConfig)
    """LightFM, the collaborative model (its ``epochs`` is replaced by the best of ``lightfm_epochs``)."""
    lightfm_epochs: tuple[int, ...] = (10, 20, 40, 80)
    """Epoch counts tried on the label window (NDCG@10); strictly increasing."""
    ease_l2: float = 500.0
    """L2 of EASE, a second collaborative source and feature; 0 leaves EASE out."""
    itemknn_neighbours: tuple[int, ...] = (50, 200)
    """Neighbourhood sizes of item-kNN tried on the label window (NDCG@10); empty leaves item-kNN out."""
    sources: tuple[str, ...] = ("lightfm", "text", "ease", "itemknn", "popularity_recent")
    """Stage-one models whose top-N become candidates."""
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    ranker_base: bool = True
    """Also fit a ranker that starts from the stage-one score ranking the label window best (LightGBM
    ``init_score``: the trees learn corrections of it), and keep it only where it ranks the held-out
    fold users better than boosting from zero (paired 95% CI above 0). On a small label window the
    base wins (the trees alone cannot even match it); on a large one boosting from zero usually does."""
    max_label_users: int = 20000
    """Label users sampled (seeded) to train the ranker and to judge stage one's choices (LightFM's
    epochs, item-kNN's neighbourhood, the text gate); bounds the feature table and the scoring on large logs."""
    block_size: int = 512
    """Users per candidate/feature block."""
    ablations: bool = True
    """Also evaluate the pipeline without text, without CF, without EASE, without new-item candidates, and each
    tower alone."""
    cold: ColdExposure = field(default_factory=ColdExposure)
    """Cold exposure of the pipeline itself: new-item slots in the first page (default none)."""
    cold_curve_slots: tuple[int, ...] = (2, 4, 6, 10)
    """Slot counts evaluated for the trade-off curve (NDCG@10 vs new-item Recall@20), at ``cold.page``."""
    cold_curve_places: tuple[str, ...] = ("spread", "end")
    """Placements evaluated for the curve (see ``ColdExposure.place``)."""
    text_gate: bool = True
    """Keep the fine-tuned text tower only where it ranks the label window better than the zero-shot
    encoder (mean paired NDCG@10 difference > 0); otherwise the zero-shot tower is the text model."""
    gate: bool = True
    """Keep the ranker only where it ranks the label users better than the best stage-one model alone,
    each user scored by the fold booster that did not learn from them; otherwise that model is
    what the pipeline serves (no ranker)."""
    gate_min_users: int = 30
    """Fewer judged label users than this: too few to judge, so no gate (the ranker is kept)."""

    def __post_init__(self) -> None:
        check_above(self, label_fraction=0)
        check_at_least(self, gate_min_users=1)
        check_at_least(self, ease_l2=0, max_label_users=1, block_size=1)
        try:
            _cold_curve(self)
        except ValueError as error:
            raise ValueError(f"PipelineConfig.cold_curve_slots / cold_curve_places: {error}") from None
        if self.label_fraction >= 1:
            raise ValueError(f"PipelineConfig.label_fraction must be < 1; got {self.label_fraction}")
        check_epoch_grid(self.lightfm_epochs, "PipelineConfig.lightfm_epochs")
        known = {"lightfm", "text", "ease", "itemknn", "popularity_recent"}
        if unknown := [s for s in self.sources if s not in known]:
            raise ValueError(f"Invalid PipelineConfig.sources {unknown}. Must be among {', '.join(sorted(known))}")

    def cold_curve(self) -> list[ColdExposure]:
        """The cold-exposure settings of the trade-off curve."""
        return _cold_curve(self)


def _cold_curve(config: PipelineConfig) -> list[ColdExposure]:
    return [ColdExposure(n, config.cold.page, place) for place in config.cold_curve_places
            for n in config.cold_curve_slots]


def label_split(events: pl.DataFrame, fraction: float, positives: Sequence[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each user's latest ``fraction`` of positives (and anything at or after the first of them) -> labels.

    Every user with at least two positives gets at least one label event and keeps at least one
    earlier one (``ceil(n * fraction)``, at most ``n - 1``).

    Returns:
        (earlier events, cuts): ``cuts`` has ``user_idx`` and ``cut`` (the first label event's time)
        for users with a label window; users with one positive keep everything.
    """
    pos = events.filter(pl.col(C.EVENT).is_in(list(positives))).sort(C.USER_IDX, C.TS, C.ITEM_IDX)
    n = pl.len().over(C.USER_IDX)
    # at least one label for every user with two positives, never all of them: each keeps a history
    n_label = pl.min_horizontal((n * fraction).ceil().cast(pl.Int64), n - 1)
    order = pl.int_range(pl.len()).over(C.USER_IDX)
    cuts = (pos.filter(order >= n - n_label)
            .group_by(C.USER_IDX).agg(pl.col(C.TS).min().alias("cut")).sort(C.USER_IDX))
    earlier = events.join(cuts, on=C.USER_IDX, how="left").filter(
        pl.col("cut").is_null() | (pl.col(C.TS) < pl.col("cut"))).drop("cut")
    return earlier, cuts


def _labels(events: pl.DataFrame, cuts: pl.DataFrame, positives: Sequence[str], seen: sp.csr_matrix) -> pl.DataFrame:
    """Graded labels of the label window: purchase 2, other positives 1; items seen before the cut dropped."""
    later = events.join(cuts, on=C.USER_IDX).filter(pl.col(C.TS) >= pl.col("cut"))
    labels = (later.filter(pl.col(C.EVENT).is_in(list(positives)))
              .group_by(C.USER_IDX, C.ITEM_IDX)
              .agg(pl.when(pl.col(C.EVENT) == C.PURCHASE).then(2).otherwise(1).max().cast(pl.Int32).alias(C.LABEL)))
    users, items = labels[C.USER_IDX].to_numpy(), labels[C.ITEM_IDX].to_numpy()
    fresh = np.asarray(seen[users, items]).ravel() == 0
    return labels.filter(pl.Series(fresh)).sort(C.USER_IDX, C.ITEM_IDX)


def _truth(labels: pl.DataFrame, users: np.ndarray, n_items: int) -> sp.csr_matrix:
    """bool [len(users), n_items]: the label items of ``users`` (sorted, unique); other users' labels are left out."""
    labels = labels.filter(pl.col(C.USER_IDX).is_in(users.tolist()))
    rows = np.searchsorted(users, labels[C.USER_IDX].to_numpy())
    return sp.csr_matrix((np.ones(len(rows), bool), (rows, labels[C.ITEM_IDX].to_numpy())),
                         shape=(len(users), n_items))


def candidate_ndcg(table: pl.DataFrame, column: str, k: int = 10) -> float:
    """Mean NDCG@k (binary relevance: ``label`` > 0) of ordering each user's candidates by ``column``.

    Users without a positive candidate are left out: no order can help them.
    """
    ranked = table.select(C.USER_IDX, (pl.col(C.LABEL) > 0).cast(pl.Float64).alias("rel"),
                          pl.col(column).fill_nan(None).fill_null(float("-inf")).alias("s"))
    gain = pl.col("rel") / (pl.col("_r") + 1).log(2)
    dcg = ranked.with_columns(pl.col("s").rank("ordinal", descending=True).over(C.USER_IDX).alias("_r"))
    ideal = ranked.with_columns(pl.col("rel").rank("ordinal", descending=True).over(C.USER_IDX).alias("_r"))
    per_user = (dcg.filter(pl.col("_r") <= k).group_by(C.USER_IDX).agg(gain.sum().alias("dcg"))
                .join(ideal.filter(pl.col("_r") <= k).group_by(C.USER_IDX).agg(gain.sum().alias("idcg")), on=C.USER_IDX)
                .filter(pl.col("idcg") > 0))
    return float((per_user["dcg"] / per_user["idcg"]).mean()) if per_user.height else 0.0


def check_epoch_grid(grid, name: str) -> None:
    """``ValueError`` naming ``name`` unless ``grid`` is strictly increasing epoch counts >= 1 (one training is
    scored at each)."""
    epochs = list(grid)
    if not epochs or epochs[0] < 1 or any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):
        raise ValueError(f"{name} must be strictly increasing counts >= 1; got {epochs}")


LABEL_BLOCK = 1024
"""Label users a gate scores at once (:func:`label_ndcg`)."""


def label_ndcg(model: Scorer, users: np.ndarray, history: sp.csr_matrix, truth: sp.csr_matrix, *,
               block: int = LABEL_BLOCK) -> np.ndarray:
    """float [len(users)] NDCG@10 of ``model`` ranking the whole catalogue (``history`` excluded) against ``truth``.

    Scored ``block`` users at a time (rows of ``history`` and ``truth`` align with ``users``): the gates
    score thousands of label users, and all at once their scores alone were 670 MB at 50k items, the
    text tower's twice over (the run's peak at 2M events).
    """
    top = [top_k(model.score(users[at], history[at]), 10, exclude=history[at])
           for at in (slice(start, start + block) for start in range(0, len(users), block))]
    return ranking_metrics(np.vstack(top) if top else np.empty((0, 10), np.int64), truth, (10,))["ndcg@10"]


def _table_ndcg(table: pl.DataFrame, scores: np.ndarray, users: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Per-user NDCG@10 of candidates ordered by ``scores`` (rows of ``table``), items outside them ranked below.

    With at least ten candidates a user this is the pipeline's full-catalogue NDCG@10 (relevant
    items that are not candidates cannot reach the first ten either way).
    """
    order = (table.select(C.USER_IDX, C.ITEM_IDX, pl.Series("s", scores))
             .with_columns(pl.col("s").rank("ordinal", descending=True).over(C.USER_IDX).alias("r"))
             .filter(pl.col("r") <= 10))
    top = np.full((len(users), 10), -1, dtype=np.int64)
    rows = np.searchsorted(users, order[C.USER_IDX].to_numpy())
    top[rows, order["r"].to_numpy() - 1] = order[C.ITEM_IDX].to_numpy()
    return ranking_metrics(top, truth, (10,))["ndcg@10"]


def _paired(a: np.ndarray, b: np.ndarray, seed: int) -> dict[str, float]:
    """Mean of ``a`` and ``b`` and their paired bootstrap difference (95% CI) over the same users."""
    p = paired_bootstrap(a, b, n_resamples=500, seed=seed)
    return {"a": float(np.nanmean(a)), "b": float(np.nanmean(b)), "diff": p.mean_diff, "low": p.low,
            "high": p.high}


class StageOne:
    """The stage-one models of a window, fit once and shared by the pipeline and its ablations.

    After ``fit``: ``inner`` (models fit before the label cut), ``full`` (the same models for the
    whole window), ``labels``, ``cuts``, ``inner_data`` and ``stats`` (timings, choices, metrics).
    """

    def __init__(self, config: PipelineConfig, text: TextTowerConfig, *, eval_config: EvalConfig = EvalConfig(),
                 text_logger=None, show_progress: bool = False, warm: WarmStart | None = None,
                 text_from: StageOne | None = None) -> None:
        self.config, self.text_config, self.eval_config = config, text, eval_config
        self.warm = warm
        """An update: start the text tower and LightFM from this previous version (``recsys train --from``)."""
        self.text_from = text_from
        """Shipping (:meth:`fit_full`): reuse this fitted stage one's kept tower (inductive: it re-reads histories)."""
        self.text_logger, self.show_progress = text_logger, show_progress
        self._data: FitInput | None = None
        self.inner: dict[str, Scorer] = {}
        self.full: dict[str, Scorer] = {}
        self.stats: dict[str, dict[str, float]] = {}
        self.lightfm_curve: dict[int, float] = {}
        self.towers: dict[str, Scorer] = {}
        """Every text tower fitted (zero-shot and fine-tuned), by result name, for the whole window."""
        self.text_kept: str | None = None
        """The tower the text gate kept as the pipeline's ``text`` model."""

    def fit(self, data: FitInput) -> Self:
        """Split off the label window, fit every stage-one model; a second call with the same data is free."""
        if self._data is data:
            return self
        if data.events is None or data.items is None:
            raise ValueError("the ranked pipeline needs FitInput.events and FitInput.items (build_eval_data sets them)")
        cfg = self.config
        start = time.perf_counter()
        # every positive labels the ranker, graded (purchase 2, others 1), whatever the evaluation judges: on
        # rated data judged on purchases, labelling only those cost 0.010 NDCG@10 on MovieLens (0.104 vs 0.114)
        positives = self.eval_config.positives
        earlier, self.cuts = label_split(data.events, cfg.label_fraction, positives)
        self.inner_data = fit_input(earlier, (data.n_users, data.n_items), self.eval_config, data.item_features,
                                    data.items)
        self.labels = _labels(data.events, self.cuts, positives, self.inner_data.interactions)
        self.label_users = np.unique(self.labels[C.USER_IDX].to_numpy())
        if len(self.label_users) == 0:
            raise ValueError("the label window has no positives: too little history per user for the ranker "
                             f"(label_fraction={cfg.label_fraction}); raise it or use more data")
        # the label users that train the ranker and judge stage one's choices (a seeded sample on large logs)
        self.sampled_users = self.label_users
        if len(self.label_users) > cfg.max_label_users:
            self.sampled_users = np.sort(np.random.default_rng(data.seed).choice(self.label_users, cfg.max_label_users,
                                                                                 replace=False))
        self.stats["split"] = {"seconds": time.perf_counter() - start, "label_users": len(self.label_users),
                               "label_pairs": self.labels.height, "inner_events": earlier.height,
                               "window_events": data.events.height}
        self._fit_text(data)
        release()  # the text tower's activation cache and training state are gone: give their pages back
        self.stats["text_tower"] = self.stats.get("text_tower", {}) | {"peak_rss_mb": peak_rss_mb()}
        self._fit_cf(data)
        self.stats["cf_other"] |= {"peak_rss_mb": peak_rss_mb()}
        self._data = data
        return self

    def fit_full(self, data: FitInput, only: str | None = None) -> Self:
        """The whole-window models with the choices already made (shipping: no label window, no inner fits).

        Args:
            data: what the models learn from (every event).
            only: fit just this stage-one model (the one that serves alone); None = all of them.

        The config carries one LightFM epoch count and one item-kNN neighbourhood (the chosen
        ones), and ``text_from`` the evaluated stage one whose kept tower re-reads ``data``.
        """
        if data.events is None or data.items is None:
            raise ValueError("the ranked pipeline needs FitInput.events and FitInput.items (build_eval_data sets them)")
        cfg = self.config
        start = time.perf_counter()

        def wanted(model: str) -> bool:
            return only is None or only == model

        if wanted("text") and "text" in cfg.sources and self.text_from is not None:
            self.text_kept = self.text_from.text_kept
            self.full["text"] = self.towers[self.text_kept] = self.text_from.full["text"].with_history(
                data.events, data.n_users)
        parent = self.warm.parent.state.models.get("lightfm") if self.warm is not None else None
        epochs = cfg.lightfm_epochs[-1]
        if wanted("lightfm") and isinstance(parent, FactorScorer) and parent.state:  # an update continues its parent
            fit = self.warm.with_replay(data)
            self.full["lightfm"] = LightFMRecommender(cfg.lightfm).warm_start(
                parent, fit, self.warm.user_map, self.warm.item_map).partial_fit(fit, epochs=epochs).scorer()
        elif wanted("lightfm"):
            self.full["lightfm"] = LightFMRecommender(replace(cfg.lightfm, epochs=epochs)).fit(data)
        if wanted("ease") and cfg.ease_l2 > 0:
            self.full["ease"] = EASERecommender(EASEConfig(l2=cfg.ease_l2)).fit(data)
        if wanted("itemknn") and "itemknn" in cfg.sources and cfg.itemknn_neighbours:
            self.full["itemknn"] = ItemKNNRecommender(ItemKNNConfig(neighbours=cfg.itemknn_neighbours[-1])).fit(data)
        if wanted("popularity_recent"):
            self.full["popularity_recent"] = PopularityRecommender(PopularityConfig("recent")).fit(data)
        self.stats["full_fit"] = {"seconds": time.perf_counter() - start}
        self._data = data
        return self

    def release_inner(self) -> None:
        """Forget the label window (the models fit before the label cut, their data, labels and cuts) once no
        ranker will be trained on it; the whole-window models, the towers and the choices stay."""
        self.inner, self.inner_data, self.labels, self.cuts = {}, None, None, None

    def release_label_window(self) -> None:
        """Forget what only the evaluation reads: the label-window fits, their data, labels and cuts, and
        every whole-window model but the text tower (shipping re-reads its histories; the others refit).
        The choices and stats stay, which is all :func:`refit_for_shipping` takes."""
        self.release_inner()
        self._data = None
        self.full = {name: model for name, model in self.full.items() if name == "text"}
        self.towers = {name: model for name, model in self.towers.items() if name == self.text_kept}

    def _fit_text(self, data: FitInput) -> None:
        if "text" not in self.config.sources:
            return
        start = time.perf_counter()
        warm = None
        if self.warm is not None and isinstance(self.warm.parent.state.models.get("text"), TextScorer):
            update = self.warm.config
            warm = WarmText(self.warm.parent.state.models["text"], update.l2sp, self.warm.replay)
        gated = self.config.text_gate and self.text_config.finetune.mode != "zero-shot" and warm is None
        tower = TextTowerRecommender(self.text_config, logger_=self.text_logger, warm=warm, keep_pretrained=gated)
        inner = {tower.name: tower.fit(self.inner_data)}
        self.stats["text_tower"] = {"seconds": time.perf_counter() - start} | tower.stats_
        # an update (--from) continues its parent's tower: the registry's gate against the parent judges it
        if gated:  # freeze:N encoded the zero-shot vectors on its way (its frozen layers are the pretrained ones)
            zero = TextTowerRecommender(with_mode(self.text_config, "zero-shot"),
                                        item_vectors=tower.pretrained_vectors_)
            inner[zero.name] = zero.fit(self.inner_data)
            self.text_kept = self._text_gate(tower.name, zero.name, inner)
        else:
            self.text_kept = tower.name
        self.towers = {name: model.with_history(data.events, data.n_users) for name, model in inner.items()}
        self.inner["text"], self.full["text"] = inner[self.text_kept], self.towers[self.text_kept]

    def _text_gate(self, fine: str, zero: str, inner: dict[str, Scorer]) -> str:
        """The fine-tuned tower if it ranks the label window better than zero-shot (mean paired NDCG@10).

        Neither tower saw the label window: the fine-tuned one trained on the events before the cuts.
        """
        users = self.sampled_users
        truth, history = _truth(self.labels, users, self.inner_data.n_items), self.inner_data.interactions[users]
        gate = _paired(label_ndcg(inner[fine], users, history, truth), label_ndcg(inner[zero], users, history, truth),
                       seed=self.inner_data.seed)
        kept = fine if gate["diff"] > 0 else zero
        self.stats["text_gate"] = {"fine_ndcg@10": gate["a"], "zero_shot_ndcg@10": gate["b"], "diff": gate["diff"],
                                   "diff_low": gate["low"], "diff_high": gate["high"], "kept_fine": float(kept == fine),
                                   "users": float(len(users))}
        logger.info("text gate on %d label users: %s NDCG@10 %.4f vs zero-shot %.4f (diff %+.4f [%+.4f, %+.4f]); "
                    "keeping %s", len(users), fine, gate["a"], gate["b"], gate["diff"], gate["low"], gate["high"], kept)
        return kept

    def _fit_cf(self, data: FitInput) -> None:
        cfg, inner = self.config, self.inner_data
        start = time.perf_counter()
        users = self.sampled_users
        truth, history = _truth(self.labels, users, data.n_items), inner.interactions[users]

        def ndcg(n_epochs: int, model: FactorScorer) -> None:
            self.lightfm_curve[n_epochs] = float(np.nanmean(label_ndcg(model, users, history, truth)))

        parent = self.warm.parent.state.models.get("lightfm") if self.warm is not None else None
        if isinstance(parent, FactorScorer) and parent.state:  # update: continue the previous version's LightFM
            best = self.warm.config.lightfm_epochs

            def updated(fit: FitInput) -> FactorScorer:
                fit = self.warm.with_replay(fit)
                return LightFMRecommender(cfg.lightfm).warm_start(parent, fit, self.warm.user_map, self.warm.item_map
                                                                  ).partial_fit(fit, epochs=best).scorer()

            lightfm = updated(inner)
            ndcg(best, lightfm)
            self.inner["lightfm"], self.full["lightfm"] = lightfm, updated(data)
        else:
            lightfm = LightFMRecommender(cfg.lightfm).fit_epochs(inner, cfg.lightfm_epochs, ndcg).scorer()
            best = max(self.lightfm_curve, key=self.lightfm_curve.get)
            if best != cfg.lightfm_epochs[-1]:
                lightfm = LightFMRecommender(replace(cfg.lightfm, epochs=best)).fit(inner)
            self.inner["lightfm"] = lightfm
            self.full["lightfm"] = LightFMRecommender(replace(cfg.lightfm, epochs=best)).fit(data)
        self.stats["lightfm"] = {"seconds": time.perf_counter() - start, "best_epochs": best,
                                 "label_ndcg@10": self.lightfm_curve[best]}
        start = time.perf_counter()
        if cfg.ease_l2 > 0:
            self.inner["ease"] = EASERecommender(EASEConfig(l2=cfg.ease_l2)).fit(inner)
            self.full["ease"] = EASERecommender(EASEConfig(l2=cfg.ease_l2)).fit(data)
        if "itemknn" in cfg.sources and cfg.itemknn_neighbours:
            self._fit_itemknn(data, users, history, truth)
        self.inner["popularity_recent"] = PopularityRecommender(PopularityConfig("recent")).fit(inner)
        self.full["popularity_recent"] = PopularityRecommender(PopularityConfig("recent")).fit(data)
        self.stats["cf_other"] = {"seconds": time.perf_counter() - start}

    def _fit_itemknn(self, data: FitInput, users: np.ndarray, history: sp.csr_matrix, truth: sp.csr_matrix) -> None:
        """Item-kNN (sparse, cheap), its neighbourhood chosen on the label window: a strong CF source on many logs."""
        fits = {n: ItemKNNRecommender(ItemKNNConfig(neighbours=n)).fit(self.inner_data)
                for n in self.config.itemknn_neighbours}
        scores = {n: float(np.nanmean(label_ndcg(m, users, history, truth))) for n, m in fits.items()}
        best = max(scores, key=scores.get)
        self.inner["itemknn"] = fits[best]
        self.full["itemknn"] = ItemKNNRecommender(ItemKNNConfig(neighbours=best)).fit(data)
        self.stats["itemknn"] = {"neighbours": best, "label_ndcg@10": scores[best]}


def _positive_events(data: FitInput, positives: Sequence[str]) -> pl.DataFrame:
    return data.events.filter(pl.col(C.EVENT).is_in(list(positives))).select(C.USER_IDX, C.ITEM_IDX, C.TS)


def _catalogue(items: pl.DataFrame) -> pl.DataFrame:
    # the title is for explanations and the user inspector; no feature reads it
    keep = [c for c in (C.TITLE, C.CATEGORY, C.PUBLISHED_AT, C.DESCRIPTION) if c in items.columns]
    indexed = items if C.ITEM_IDX in items.columns else items.with_row_index(C.ITEM_IDX)  # catalogue order
    return indexed.with_columns(pl.col(C.ITEM_IDX).cast(pl.Int64)).select(C.ITEM_IDX, *keep)


def _normalised_vectors(models: dict[str, Scorer]) -> np.ndarray | None:
    tower = models.get("text")
    if tower is None:
        return None
    vectors = np.asarray(tower.item_vectors_, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class PipelineRecommender:
    """The ranked pipeline (or one ablation of it) behind the ``Recommender`` protocol.

    Args:
        stage_one: shared stage-one models (fit once per window for all variants).
        name: result name; ``without`` names the stage-one models this variant leaves out.
    """

    def __init__(self, stage_one: StageOne, *, name: str = "pipeline", without: Sequence[str] = (),
                 cold: ColdExposure = ColdExposure(), gate: bool = False, keep: str | None = None,
                 ranker: RankerEnsemble | None = None, baselines: Mapping[str, Tuned] | None = None,
                 fallback: Tuned | None = None, new_items: bool = True, frees_label_window: bool = False) -> None:
        self.stage_one, self.name, self.without, self.cold = stage_one, name, tuple(without), cold
        self.frees_label_window = frees_label_window
        """No later variant trains a ranker on ``stage_one``: once this one's ranker is trained, the label window
        (inner models, their data, labels, cuts) and the training table go before the whole-window state is built
        and evaluated. At 20M events the evaluation had set the run's peak (12.5 GB) with them alive; with this
        and the other cuts of its series the run peaked at 9.7 GB, while packaging."""
        self.new_items = new_items
        """False: no new item is a candidate (the ``pipeline_no_new`` ablation)."""
        self.gate = gate
        """Keep the ranker only if it beats the best stage-one model alone on the label users (out-of-fold)."""
        self.baselines = baselines
        """The run's baselines as the valid window tuned them (filled by ``evaluate_specs`` before this fits):
        where the ranker loses the gate, the best of them there serves alone. None or empty: the best
        stage-one model alone serves."""
        self.keep = keep
        """A decision already taken (shipping refit): ``ranker``, or the model that serves alone."""
        self.fallback_ = fallback
        """The baseline that serves alone (its tuned setting, refit on each fit's data), or None."""
        self.ranker = ranker
        """A ranker already trained (shipping refit, ``keep="ranker"``): it ranks the refit models' candidates."""
        self.kept_: str = "ranker"
        """What the fitted pipeline ranks with: ``ranker``, or the stage-one model that won the gate."""
        self.gate_: dict[str, float] = {}
        """The gate's figures (judged users, NDCG@10 of both sides, paired difference and its CI)."""
        self.pipeline_: RankingPipeline | None = None
        self.report_: RankerReport | None = None
        self.stats_: dict[str, float] = {}
        self.train_table_: pl.DataFrame | None = None
        """The ranker's training table (features and labels of the label window; None once released)."""
        self.feature_summary_: str = ""
        """``describe()`` of the training table (what the run logs, kept when the table goes)."""
        self.ranker_: RankerEnsemble | None = None
        """The ranker trained, whether the gate kept it or not (its report, importance and curves are logged)."""
        self.base_: str | None = None
        """The score column the kept ranker started from (None: boosting from zero)."""
        self.start_: dict[str, float] = {}
        """How the start was chosen (judged users, NDCG@10 of both starts, paired difference and its CI)."""
        self._data: FitInput | None = None

    def release_evaluated(self) -> None:
        """Forget the evaluated pipeline's data-sized parts (its window's state and caches, the ranker's training
        table, stage one's label window) before shipping refits: at 20M events the run's peak was the two
        generations of models and windows alive at once. The choices and the ranker stay."""
        self.pipeline_, self.train_table_, self._data = None, None, None
        self.stage_one.release_label_window()

    def _state(self, models: dict[str, Scorer], data: FitInput, ranker) -> PipelineState:
        """The parts of one pipeline: ``models`` fit on ``data``, whose positive events the features read.

        In training that is the window before the label cuts, not the whole window: at scoring
        time the features read the history they are given (train + valid), which lacks other
        users' later events too, and the ranker must learn on features made the same way
        (measured on MovieLens: reading the whole window as of each cut cost 0.01 NDCG@10).
        """
        cfg = self.stage_one.config
        kept = {k: m for k, m in models.items() if k not in self.without}
        sources = tuple(s for s in cfg.sources if s in kept) or tuple(kept)
        candidates = cfg.candidates if self.new_items else replace(cfg.candidates, n_cold=0, new_items=False)
        if candidates.cold_by not in kept:  # no text tower: new items come in by LightFM's feature embeddings
            candidates = replace(candidates, cold_by="lightfm" if "lightfm" in kept else sources[0])
        events = _positive_events(data, self.stage_one.eval_config.positives)
        cold = np.ones(data.n_items, bool)
        cold[events[C.ITEM_IDX].unique().to_numpy()] = False
        return PipelineState(kept, sources, ranker, events, _catalogue(data.items), cold, candidates,
                             cfg.features, _normalised_vectors(kept))

    def _alone(self, name: str, data: FitInput) -> PipelineState:
        """The state of a pipeline that ranks with one model alone (no ranker, no other source): the fallback
        baseline refit on ``data`` at its tuned setting, else stage one's ``name`` (fitted on ``data``)."""
        model = self.fallback_.fit(data) if self.fallback_ is not None else self.stage_one.fit(data).full[name]
        return replace(self._state({name: model}, data, None), sources=(name,))

    def fit(self, data: FitInput) -> RankingPipeline:
        """Fit (or reuse) the stage-one models, train the ranker on the label window, then switch to the full window.

        Returns:
            The fitted pipeline (the runtime object the evaluation scores and the registry stores).
        """
        if self._data is data:
            return self.pipeline_
        if self.keep not in (None, "ranker"):  # the gate already chose one model: no ranker to train
            self.kept_, self.stats_, self._data = self.keep, {}, data
            self.pipeline_ = RankingPipeline(self._alone(self.keep, data), name=self.name, cold=self.cold)
            return self.pipeline_
        stage = self.stage_one.fit(data)
        cfg = stage.config
        if self.ranker is None and stage.labels is None:
            raise NotFittedError(f"{self.name}: stage one's label window was released after the last ranker was "
                                 "trained (PipelineRecommender.frees_label_window); fit this variant before that one")
        if self.ranker is not None:  # trained already: it ranks what the models fitted on ``data`` propose
            self.kept_, self.stats_, self._data, self.ranker_ = "ranker", {}, data, self.ranker
            self.pipeline_ = RankingPipeline(self._state(stage.full, data, self.ranker), name=self.name,
                                             cold=self.cold)
            return self.pipeline_
        start = time.perf_counter()
        inner = RankingPipeline(self._state(stage.inner, stage.inner_data, ranker=None))
        users = stage.sampled_users
        blocks = []
        for lo in tqdm(range(0, len(users), cfg.block_size), desc=f"{self.name} features", unit="block",
                       disable=bars(stage.show_progress), leave=False):
            block = users[lo:lo + cfg.block_size]
            cuts = stage.cuts.filter(pl.col(C.USER_IDX).is_in(block.tolist()))
            blocks.append(inner.candidate_table(block, stage.inner_data.interactions[block], cuts=cuts))
        table = pl.concat(blocks).join(stage.labels, on=[C.USER_IDX, C.ITEM_IDX], how="left").with_columns(
            pl.col(C.LABEL).fill_null(0))
        features_s = time.perf_counter() - start
        truth = stage.labels.filter(pl.col(C.USER_IDX).is_in(users.tolist()))
        recall = candidate_recall(table, truth.select(C.USER_IDX, C.ITEM_IDX))
        bases = {c: candidate_ndcg(table, c) for c in table.columns if c.removeprefix("score_") in inner.state.models}
        tried = [None, max(bases, key=bases.get)] if cfg.ranker_base and bases else [None]
        fits = fit_rankers(table, feature_columns(table), tried, config=cfg.ranker, show_progress=stage.show_progress)
        held_out = _HeldOut(stage, table, fits)
        base = self._choose_start(held_out, fits)
        ranker, self.report_ = fits[base]
        self.kept_, self.gate_, self.fallback_ = "ranker", {}, None
        if self.gate and self.keep is None:
            self.kept_ = self._run_gate(held_out, base)
        self.train_table_, self.ranker_ = table, ranker
        self.feature_summary_ = str(table.describe())
        self.stats_ = {"features_s": features_s, "train_rows": table.height, "train_users": len(users),
                       "peak_rss_mb": peak_rss_mb(),
                       "n_features": len(ranker.features), "ranker_s": time.perf_counter() - start - features_s}
        self.stats_ |= {f"label_candidate_{k}": v for k, v in recall.items()}
        self.stats_ |= {f"label_ndcg@10_{c.removeprefix('score_')}": v for c, v in bases.items()}
        self.stats_ |= {f"ranker_fold_ndcg_base_{b or 'none'}": f[1].mean_best_ndcg for b, f in fits.items()}
        self.stats_ |= {f"start_{k}": v for k, v in self.start_.items()}
        self.stats_ |= {f"gate_{k}": v for k, v in self.gate_.items()}
        if self.frees_label_window:  # no later variant trains a ranker here: the label window makes way
            del inner, held_out, fits, blocks, truth
            self.train_table_ = table = None
            stage.release_inner()
            release()
        # the ranker, or the one stage-one model that serves alone through the same interface
        state = self._state(stage.full, data, ranker) if self.kept_ == "ranker" else self._alone(self.kept_, data)
        self.pipeline_ = RankingPipeline(state, name=self.name, cold=self.cold)
        self.base_ = base
        self._data = data
        return self.pipeline_

    def _choose_start(self, held_out: _HeldOut, fits: dict[str | None, tuple[RankerEnsemble, RankerReport]]
                      ) -> str | None:
        """Boosting from zero, unless starting from the best stage-one score ranks held-out users clearly better.

        Both starts were trained on the same folds of users. Each is judged on every label user
        by the fold booster that did not learn from them, cut at the tree count the *other* folds
        chose (:func:`training.fit_ranker.cross_validated_iterations`): the folds' own best NDCG
        is the peak of a noisy curve, and the base start's curve peaks after a few trees. "Clearly"
        is the paired 95% CI above 0: each time the base start was kept on a small mean lead, the
        test window ranked it below boosting from zero (MovieLens 0.139 against 0.150; MicroLens
        0.025 twice against 0.030-0.032), while where it wins (small label windows: 77 users of
        a 10k-event slice, +0.045 [+0.015, +0.079]) it wins clearly.
        """
        self.start_ = {}
        if len(fits) == 1:
            return next(iter(fits))
        base = next(b for b in fits if b is not None)
        judged = held_out.users
        if len(judged) == 0:  # one fold: no user was held out of training
            return max(fits, key=lambda b: fits[b][1].mean_best_ndcg)
        paired = _paired(held_out.ndcg(base), held_out.ndcg(None), seed=self.stage_one.inner_data.seed)
        chosen = base if paired["low"] > 0 else None
        self.start_ = {"users": float(len(judged)), "base_ndcg@10": paired["a"], "zero_ndcg@10": paired["b"],
                       "diff": paired["diff"], "diff_low": paired["low"], "diff_high": paired["high"],
                       "kept_base": float(chosen is not None)}
        logger.debug("%s ranker start on %d label users (out-of-fold, cross-validated tree counts): from %s %.4f vs "
                    "from zero %.4f (diff %+.4f [%+.4f, %+.4f]); boosting from %s", self.name, len(judged), base,
                    paired["a"], paired["b"], paired["diff"], paired["low"], paired["high"], chosen or "zero")
        return chosen

    def _run_gate(self, held_out: _HeldOut, start: str | None) -> str:
        """``ranker`` (the one from ``start``) if it ranks the label users better than each stage-one model alone,
        else the baseline that ranked the valid window best (``baselines``; else that stage-one model).

        A simpler model won, so the run serves the one the evaluation protocol itself picks: the
        baseline best on the valid window, at its tuned setting, refit on the same data. It is then
        the very model of that baseline's row (the same lists), where the best stage-one model
        alone would be a near twin at another setting (item-kNN's neighbourhood chosen on the label
        users, EASE at one L2), level with the baseline in expectation yet a different model, so
        a paired comparison with the baseline would only ever measure noise (the demo: served
        item-kNN at 200 neighbours 0.135 vs the LightFM baseline 0.131, CI [-0.017, +0.026]).

        Every label user the ranker learned from is judged by the fold booster that did not train
        on them (:func:`training.fit_ranker.out_of_fold`), cut at the tree count the other folds
        chose: no user is held out of the ranker, all of them judge it, and none judges a tree
        count picked on them. "Better" is the mean paired NDCG@10 (whole catalogue, the user's
        earlier history excluded); the best single model is the one with the highest mean.
        Fewer judged users than ``gate_min_users``: too few to judge, the ranker is kept.
        """
        stage = self.stage_one
        judged = held_out.users
        if len(judged) < stage.config.gate_min_users:
            logger.info("%s gate: %d label users would be too few to judge (< %d); keeping the ranker",
                        self.name, len(judged), stage.config.gate_min_users)
            return "ranker"
        history = stage.inner_data.interactions[judged]
        alone = {name: label_ndcg(model, judged, history, held_out.truth) for name, model in stage.inner.items()
                 if name not in self.without}
        best = max(alone, key=lambda n: float(np.nanmean(alone[n])))
        gate = _paired(held_out.ndcg(start), alone[best], seed=stage.inner_data.seed)
        kept, why = "ranker", ""
        if gate["diff"] <= 0:
            scored = [t for t in (self.baselines or {}).values() if t.spec.score_valid and np.isfinite(t.valid_score)]
            self.fallback_ = max(scored, key=lambda t: t.valid_score) if scored else None
            kept = self.fallback_.name if self.fallback_ is not None else best
            why = (f" (the best baseline on the valid window, {self.fallback_.valid_score:.4f} at "
                   f"{self.fallback_.setting})" if self.fallback_ is not None else " alone")
        self.gate_ = {"users": float(len(judged)), "pipeline_ndcg@10": gate["a"], "best_alone_ndcg@10": gate["b"],
                      "diff": gate["diff"], "diff_low": gate["low"], "diff_high": gate["high"],
                      "kept_ranker": float(kept == "ranker"), "kept_baseline": float(self.fallback_ is not None)}
        self.gate_ |= {f"{name}_ndcg@10": float(np.nanmean(v)) for name, v in alone.items()}
        logger.info("%s gate on %d label users (out-of-fold): ranked %.4f vs %s alone %.4f (diff %+.4f [%+.4f, %+.4f]);"
                    " serving %s%s", self.name, len(judged), gate["a"], best, gate["b"], gate["diff"], gate["low"],
                    gate["high"], kept, why)
        return kept


class _HeldOut:
    """The label users the ranker's folds held out, and each start's NDCG@10 on them, computed once.

    Every start trains on the same folds of users (:func:`training.fit_ranker.fit_rankers`), so
    one set of judged users serves the start choice and the gate; a start's per-user NDCG@10
    (each user scored out of fold, at the tree counts the other folds chose) is scored when
    first asked and read again by the gate.
    """

    def __init__(self, stage: StageOne, table: pl.DataFrame,
                 fits: dict[str | None, tuple[RankerEnsemble, RankerReport]]) -> None:
        report = next(iter(fits.values()))[1]
        self.users = np.sort(report.assignment.drop_nulls().get_column(C.USER_IDX).to_numpy())
        """int [n] the judged label users (sorted)."""
        self.truth = _truth(stage.labels, self.users, stage.inner_data.n_items)
        self._rows = table.filter(pl.col(C.USER_IDX).is_in(self.users.tolist()))
        self._fits = fits
        self._ndcg: dict[str | None, np.ndarray] = {}

    def ndcg(self, start: str | None) -> np.ndarray:
        """float [n] NDCG@10 of each judged user under the ranker from ``start`` (None: from zero)."""
        if start not in self._ndcg:
            model, report = self._fits[start]
            scores = out_of_fold(model, report, self._rows, iterations=cross_validated_iterations(report))
            self._ndcg[start] = _table_ndcg(self._rows, scores, self.users, self.truth)
        return self._ndcg[start]


def refit_for_shipping(main: PipelineRecommender, data: FitInput) -> PipelineRecommender:
    """``main``'s evaluated choices, refit on ``data`` (every event): what the registry ships.

    The evaluation's model never saw the test window; the shipped one must. The choices stay
    those that were measured (the kept text tower, LightFM's epochs, item-kNN's neighbourhood,
    ranker or one model alone): the collaborative models refit on everything, the text tower,
    which is inductive, re-reads the longer histories instead of fine-tuning again, and the
    ranker is the evaluated one. It learned to rank what models fitted on earlier events propose
    for the events after them, which is exactly its place again here: in the evaluation it ranked
    models fitted on train + valid for the test window, now models fitted on everything for
    what comes next. Retraining it would cost its whole fit again (minutes on large logs) for
    labels one window newer.
    """
    if main.fallback_ is not None:  # a baseline serves alone: it refits at its tuned setting, nothing else does
        ship = PipelineRecommender(main.stage_one, name=main.name, cold=main.cold, keep=main.kept_,
                                   fallback=main.fallback_)
        ship.fit(data)
        return ship
    stage = main.stage_one
    config = stage.config
    if "lightfm" in stage.stats:
        config = replace(config, lightfm_epochs=(int(stage.stats["lightfm"]["best_epochs"]),))
    if "itemknn" in stage.stats:
        config = replace(config, itemknn_neighbours=(int(stage.stats["itemknn"]["neighbours"]),))
    alone = None if main.kept_ == "ranker" else main.kept_
    shipped = StageOne(config, stage.text_config, eval_config=stage.eval_config, show_progress=stage.show_progress,
                       warm=stage.warm, text_from=stage if "text" in stage.full else None).fit_full(data, alone)
    ship = PipelineRecommender(shipped, name=main.name, without=main.without, cold=main.cold, keep=main.kept_,
                               new_items=main.new_items,
                               ranker=main.ranker_ if main.kept_ == "ranker" else None)
    ship.fit(data)
    return ship


class StageView:
    """One stage-one model of a shared :class:`StageOne`, scored alone (the "tower alone" ablations)."""

    def __init__(self, stage_one: StageOne, model: str, name: str | None = None) -> None:
        self.stage_one, self.model, self.name = stage_one, model, name or f"{model}_alone"

    def fit(self, data: FitInput) -> Scorer:
        """Stage one's fitted ``model`` (or text tower, by result name) for ``data``, fitting stage one if not yet."""
        self.stage_one.fit(data)
        found = self.stage_one.full.get(self.model) or self.stage_one.towers.get(self.model)
        if found is None:
            raise NotFittedError(f"{self.name}: stage one has no {self.model!r} (not among PipelineConfig.sources)")
        return found


class ColdExposureView:
    """A fitted pipeline under another cold-exposure setting (nothing refits)."""

    def __init__(self, pipeline: PipelineRecommender, cold: ColdExposure) -> None:
        self.pipeline, self.cold, self.name = pipeline, cold, f"{pipeline.name}_{cold.label}"

    def fit(self, data: FitInput) -> RankingPipeline:
        return self.pipeline.fit(data).with_cold(self.cold, self.name)
