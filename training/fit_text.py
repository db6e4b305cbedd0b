"""Fitting the text tower: Lightning fine-tuning (or none, zero-shot), then its serving form.

After fitting, the whole catalogue is encoded once under ``torch.inference_mode`` and each
user's most recent history window is kept; ``fit`` returns a :class:`recsys.scorers.TextScorer`
(the encoder as a plain transformer, LoRA merged), so scoring a block of users is one pooling
and one matrix product, like every other model, and the registered model needs no training code.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from transformers import AutoTokenizer

from recsys import contract as C
from recsys.console import quiet_libraries, stderr_is_terminal
from recsys.errors import ConfigError, NotFittedError, RecsysError
from recsys.indexing import FitInput
from recsys.scorers.text import EncoderSource, ItemTokens, TextScorer, user_windows
from recsys.scorers.text_lexical import LexicalIndex
from recsys.scorers.text_neighbours import NeighbourIndex
from recsys.text_encoder import quantize_int8, render_item_texts, resolve_model_path
from training.encoder_modes import ItemEncoder, build_encoder, count_parameters, serving_encoder
from training.text_data import (
    Examples,
    TextDataModule,
    build_examples,
    held_out_items,
    holdout_negatives,
    split_holdout,
)
from training.text_item_terms import ImpressionJudge, NewItemJudge, fit_item_terms, held_out_users
from training.text_tower import TextTowerConfig, TextTowerModule, encode_items, schedule_steps, tower_name

__all__ = ["TextTowerRecommender", "VAL_NEGATIVES"]

logger = logging.getLogger(__name__)

VAL_NEGATIVES = 20
"""Fixed sampled negatives per holdout positive (positives-only data) for the holdout AUC."""


@dataclass(frozen=True)
class WarmText:
    """Start fine-tuning from a previous version of the tower instead of the pretrained encoder.

    The previous version's encoder (a plain transformer: its LoRA, if any, merged) becomes the
    base model that this fit's mode wraps, its learned prompt (prompt mode) and its head are
    copied in. ``replay`` (older positive events in this fit's index: ``user_idx, item_idx,
    event, impression_id, timestamp``) is mixed into the training examples; ``l2sp`` > 0 pulls
    the trainable weights toward the previous version's (L2-SP). Both fight forgetting.
    """

    scorer: TextScorer
    l2sp: float = 0.0
    replay: pl.DataFrame | None = None

    def build_encoder(self, config: TextTowerConfig) -> ItemEncoder:
        """This fit's encoder (``config.finetune`` mode) over the previous version's weights."""
        with tempfile.TemporaryDirectory() as folder:
            self.scorer.encoder.transformer.save_pretrained(folder, safe_serialization=True)
            encoder = build_encoder(folder, config.finetune)
        prompt = self.scorer.encoder.prompt
        if prompt.numel():
            try:
                encoder.transformer.prompt_encoder["default"].embedding.weight.data.copy_(prompt)
            except (AttributeError, KeyError, RuntimeError) as exc:
                raise ConfigError("--from: the previous text tower learned a prompt that this fine-tuning mode "
                                  f"cannot take ({exc}); use the same mode and prompt_tokens") from exc
        return encoder

    def load_into(self, module: TextTowerModule) -> None:
        """Copy the previous head into ``module``; anchor L2-SP at the weights the fit starts from."""
        try:
            module.head.load_state_dict(self.scorer.head.state_dict())
        except RuntimeError as exc:
            raise ConfigError(f"--from: the previous text head does not fit this config (another model or "
                              f"similarity?): {str(exc).splitlines()[0][:200]}") from exc
        if self.l2sp > 0:
            module.anchor(self.l2sp)


class TextTowerRecommender:
    """Two-tower text model estimator: ``fit(data)`` fine-tunes and returns the fitted :class:`TextScorer`.

    Attributes set by ``fit``: ``item_vectors_`` float32 [n_items, d], ``user_history_`` int64
    [n_users, L] (most recent last, -1 padded), ``stats_`` (trainable parameters, examples,
    wall time, epochs, best holdout AUC), ``module_`` (the Lightning module, training form).
    """

    def __init__(self, config: TextTowerConfig = TextTowerConfig(), *, logger_: L.pytorch.loggers.Logger | None = None,
                 warm: WarmText | None = None, keep_pretrained: bool = False,
                 item_vectors: torch.Tensor | None = None) -> None:
        if item_vectors is not None and config.finetune.mode != "zero-shot":
            raise ValueError("item_vectors (the catalogue already encoded) are only for a zero-shot tower")
        self.config = config
        self.warm = warm
        self.name = tower_name(config)
        self.logger = logger_
        self.keep_pretrained = keep_pretrained
        """freeze:N: before training, also encode the catalogue with the pretrained top layers
        (``pretrained_vectors_``): the zero-shot encoder's vectors, for the cost of the top layers
        alone, since the frozen layers' outputs are cached for training anyway."""
        self.given_vectors = item_vectors
        """Zero-shot: the catalogue's vectors, already encoded (a freeze:N twin's ``pretrained_vectors_``)."""
        self.pretrained_vectors_: torch.Tensor | None = None
        self.module_: TextTowerModule | None = None
        self.item_vectors_: torch.Tensor | None = None
        self.user_history_: np.ndarray | None = None
        self.lexical_: LexicalIndex | None = None
        """The weighted lexical term (``recsys.scorers.text_lexical``), where the holdout chose one."""
        self.neighbours_: NeighbourIndex | None = None
        """The weighted neighbour term (``recsys.scorers.text_neighbours``), where the holdout chose one."""
        self.stats_: dict[str, float] = {}
        self._tokens: ItemTokens | None = None
        self._tokenizer = None
        self._scorer: TextScorer | None = None

    def _prepare(self, data: FitInput) -> tuple[ItemTokens, Examples, bool]:
        if data.items is None or data.events is None:
            raise ConfigError("the text tower needs FitInput.items and FitInput.events (build_eval_data sets them)")
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(self.config.model), local_files_only=True)
        tokens = ItemTokens(render_item_texts(data.items, self.config.template), tokenizer, self.config.max_length)
        self._tokenizer = tokenizer
        has_impressions = bool((data.events[C.EVENT] == C.IMPRESSION).any())
        use_impressions = {"auto": has_impressions, "yes": True, "no": False}[self.config.impressions]
        events = data.events
        if self.warm is not None and self.warm.replay is not None and self.warm.replay.height:
            events = pl.concat([self.warm.replay.select(events.columns).cast(events.schema), events]).sort(C.TS)
        zero_shot = self.config.finetune.mode == "zero-shot"  # trains on none: only the whole window's counts are read
        examples = build_examples(events, positives=self.config.positives,
                                  history_length=self.config.history_length, use_impressions=use_impressions,
                                  budget=0 if zero_shot else self.config.max_train_examples, seed=self.config.seed)
        return tokens, examples, use_impressions

    def fit(self, data: FitInput) -> TextScorer:
        """Fine-tune on ``data.events`` (or nothing, zero-shot), then encode the catalogue.

        Args:
            data: the fit window, with ``items`` (texts) and ``events`` (order, impressions).

        Returns:
            The fitted tower's serving form (:meth:`scorer`).
        """
        start = time.perf_counter()
        L.seed_everything(self.config.seed, workers=True, verbose=False)
        tokens, examples, use_impressions = self._prepare(data)
        encoder = (self.warm.build_encoder(self.config) if self.warm is not None
                   else build_encoder(self.config.model, self.config.finetune))
        trainable, total = count_parameters(encoder)
        module = self._module(encoder, tokens, examples, data, use_impressions)
        if self.warm is not None:
            self.warm.load_into(module)
        elif self.keep_pretrained and getattr(encoder, "frozen_layers", None) is not None:
            start_encode = time.perf_counter()
            with torch.inference_mode():
                self.pretrained_vectors_ = encode_items(encoder, tokens, np.arange(data.n_items),
                                                        self.config.encode_batch_size)
            self.stats_["pretrained_encode_wall_s"] = time.perf_counter() - start_encode
        held_out = None
        if self.config.finetune.mode != "zero-shot" and len(examples):
            # held-out items are a share of every item with an event, as new items are of the catalogue
            pool = np.flatnonzero(np.diff(data.interactions.tocsc().indptr) > 0)
            held_out = self._train(module, examples, tokens, trainable, pool)
        self._finish(module, tokens, data)
        if held_out is not None:
            start_terms = time.perf_counter()
            train, holdout, negatives, held = held_out
            lexical = LexicalIndex.fit(tokens.ids, len(self._tokenizer), self._tokenizer.all_special_ids)
            if held is not None:  # the new-item protocol in miniature: held-out items ranked for their users
                users = held_out_users(data.events, data.n_users, data.n_items, held, tuple(self.config.positives),
                                       self.config.history_length, relevant=self.config.relevant,
                                       seed=self.config.seed)
                # the judge's unseen items are the held-out ones, their neighbours the other chosen items
                judged_neighbours = NeighbourIndex.fit(self.item_vectors_, np.setdiff1d(pool, users.items),
                                                       users.items)
                judged = NewItemJudge(module.head, self.item_vectors_, users, lexical, judged_neighbours)
            else:
                judged = ImpressionJudge(module.head, self.item_vectors_, holdout, negatives, lexical)
            stats, lexical, _ = fit_item_terms(module.head, self.item_vectors_, lexical, train, judged)
            # each term is stored only where used; every item gets neighbours, so new ones are on the same scale
            self.lexical_ = lexical if lexical is not None and lexical.active else None
            if stats["neighbour_weight"] > 0:
                self.neighbours_ = NeighbourIndex.fit(self.item_vectors_, pool).with_weight(
                    stats["neighbour_weight"] * judged.neighbour_scale)
            self.stats_ |= stats | {"item_terms_wall_s": time.perf_counter() - start_terms}
        self.stats_ |= {"trainable_params": trainable, "total_params": total, "fit_wall_s": time.perf_counter() - start}
        return self.scorer()

    def _module(self, encoder, tokens: ItemTokens, examples: Examples, data: FitInput,
                use_impressions: bool) -> TextTowerModule:
        history_items = np.unique(examples.history[examples.history >= 0])
        return TextTowerModule(self.config, encoder, tokens, _positives_per_item(examples, data.n_items),
                               use_impressions, history_items, schedule_steps(self.config, len(examples)))

    def _train(self, module: TextTowerModule, examples: Examples, tokens: ItemTokens, trainable: int,
               pool: np.ndarray) -> tuple[Examples, Examples, np.ndarray | None, np.ndarray | None]:
        """Fine-tune ``module`` in place; returns what it trained on, its holdout, the holdout's negatives and
        the held-out items (None where the holdout is by time), drawn from ``pool``."""
        cfg = self.config  # the examples are the budget's draw already (build_examples)
        held = (held_out_items(pool, cfg.holdout_items, seed=cfg.seed)
                if cfg.holdout_items > 0 and not module.use_impressions and len(pool) else None)
        train, holdout = split_holdout(examples, cfg.holdout, held=held)
        if held is not None and not (len(train) and len(holdout)):  # too few items: hold out by time instead
            held = None
            train, holdout = split_holdout(examples, cfg.holdout)
        items_held = held is not None
        module.total_steps = schedule_steps(cfg, len(train))  # the steps this fit takes, not the window's
        module.train_on(_positives_per_item(examples, len(module.log_q), held_out=held))
        if cfg.max_holdout_examples is not None and len(holdout) > cfg.max_holdout_examples:
            rng = np.random.default_rng(cfg.seed + 1)
            holdout = holdout.take(np.sort(rng.choice(len(holdout), cfg.max_holdout_examples, replace=False)))
        negatives = None if module.use_impressions else holdout_negatives(
            holdout, len(module.log_q), VAL_NEGATIVES, items_held=items_held, seed=cfg.seed + 2)
        module.val_negatives = torch.as_tensor(negatives) if negatives is not None else None
        datamodule = TextDataModule(train, holdout, tokens.lengths, batch_size=cfg.batch_size, seed=cfg.seed)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(cfg.checkpoint_dir or scratch)
            best = ModelCheckpoint(dirpath=folder, filename="best", monitor="valid/auc", mode="max", save_last=True)
            limit = timedelta(minutes=cfg.max_minutes) if cfg.max_minutes is not None else None
            logger.info("text tower: fine-tuning %s on %s examples (%s held out%s), at most %d epoch(s)%s",
                        cfg.finetune.mode, f"{len(train):,}", f"{len(holdout):,}",
                        f", on {len(held):,} unseen items" if items_held else "", cfg.max_epochs,
                        f" or {cfg.max_minutes:.1f} min" if cfg.max_minutes is not None else "")
            last = folder / "last.ckpt"
            start = time.perf_counter()
            with quiet_libraries():  # Lightning's accelerator banner, tips and its own deprecation warnings
                trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=cfg.max_epochs, max_steps=cfg.max_steps,
                                    max_time=limit, gradient_clip_val=cfg.grad_clip, num_sanity_val_steps=0,
                                    logger=self.logger or False,
                                    enable_progress_bar=cfg.show_progress and stderr_is_terminal(),
                                    enable_model_summary=False, log_every_n_steps=10, deterministic=True,
                                    callbacks=[best, EarlyStopping("valid/auc", mode="max", patience=cfg.patience)])
                if self.logger is not None:
                    self.logger.log_metrics({"trainable_params": trainable, "train_examples": len(train)})
                # the pretrained weights are a candidate too: where fine-tuning does not beat them on the
                # holdout (unseen items), the tower keeps them instead of a worse fine-tuned encoder
                pretrained_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                pretrained = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["valid/auc"]
                # checkpoints are read as tensors and plain values only (weights_only): a checkpoint folder is
                # a file anyone could have written, and unpickling it would run their code
                try:
                    trainer.fit(module, datamodule=datamodule, weights_only=True,
                                ckpt_path=last if cfg.resume and last.exists() else None)
                except pickle.UnpicklingError as exc:
                    raise RecsysError(f"{last}: the checkpoint holds more than tensors and plain values, so it is "
                                      "not read (it could run code); delete it or resume from another folder") from exc
            elapsed = time.perf_counter() - start
            if best.best_model_path:
                module.load_state_dict(torch.load(best.best_model_path, weights_only=True)["state_dict"])
        score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
        # a NaN holdout AUC cannot judge
        kept_pretrained = cfg.pretrained_fallback and pretrained == pretrained and not score > pretrained
        if kept_pretrained:
            module.load_state_dict(pretrained_state)
        logger.info("text tower: %d epoch(s) in %.0f s (%.0f examples/s), holdout AUC %.3f (pretrained %.3f)%s",
                    trainer.current_epoch, elapsed, trainer.global_step * cfg.batch_size / max(elapsed, 1e-9),
                    score, pretrained, ": kept the pretrained weights" if kept_pretrained else "")
        self.stats_ |= {"train_examples": len(train), "holdout_examples": len(holdout),
                        "epochs": trainer.current_epoch, "train_wall_s": elapsed,
                        "stopped_by_clock": float(limit is not None and elapsed >= limit.total_seconds()),
                        "examples_per_s": trainer.global_step * cfg.batch_size / max(elapsed, 1e-9),
                        "best_valid_auc": pretrained if kept_pretrained else score,
                        "pretrained_valid_auc": pretrained, "kept_pretrained": float(kept_pretrained)}
        return train, holdout, negatives, held

    def quantized(self) -> TextScorer:
        """The fitted tower with catalogue vectors from the int8 (dynamically quantised) encoder.

        The cheap CPU inference path; compare its metrics with the fp32 tower's to see the cost.
        """
        if self.module_ is None or self._tokens is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        encoder = quantize_int8(self.module_.encoder)
        if hasattr(encoder, "clear_cache"):
            encoder.clear_cache()  # freeze:N cached fp32 lower-layer outputs; int8 must recompute them
        start = time.perf_counter()
        with torch.inference_mode():
            vectors = encode_items(encoder, self._tokens, np.arange(len(self._tokens.lengths)),
                                   self.config.encode_batch_size)
        self.stats_["int8_encode_wall_s"] = time.perf_counter() - start
        return replace(self.scorer(), name=f"{self.name}_int8", item_vectors_=vectors)

    def _finish(self, module: TextTowerModule, tokens: ItemTokens, data: FitInput) -> None:
        module.eval()
        self._scorer = None  # a new fit: the serving form of the previous one is stale
        self.lexical_ = None
        self.neighbours_ = None
        self.module_ = module
        self._tokens = tokens
        start = time.perf_counter()
        if self.given_vectors is not None:
            if len(self.given_vectors) != data.n_items:
                raise ValueError(f"item_vectors has {len(self.given_vectors)} rows for {data.n_items} items")
            self.item_vectors_ = self.given_vectors
        else:
            with torch.inference_mode():
                self.item_vectors_ = encode_items(module.encoder, tokens, np.arange(data.n_items),
                                                  self.config.encode_batch_size)
        self.stats_["encode_wall_s"] = time.perf_counter() - start
        self.user_history_ = self._user_history(data.events, data.n_users)

    def _user_history(self, events: pl.DataFrame, n_users: int) -> np.ndarray:
        return user_windows(events, n_users, tuple(self.config.positives), self.config.history_length)

    def scorer(self) -> TextScorer:
        """The serving form (what the registered model carries): encoder, head, vectors, user windows.

        The encoder becomes a plain transformer (:func:`training.encoder_modes.serving_encoder`:
        LoRA merged, the prompt an array); the freeze:N activation cache is dropped.
        """
        if self.module_ is None or self.item_vectors_ is None or self.user_history_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
        if self._scorer is None:
            encoder = self.module_.encoder
            if hasattr(encoder, "clear_cache"):
                encoder.clear_cache()
            source = EncoderSource.of(serving_encoder(encoder), self._tokenizer)
            self._scorer = TextScorer(self.name, source, self.module_.head.eval(), self.item_vectors_,
                                      self.user_history_, self.config.template, self.config.max_length,
                                      tuple(self.config.positives), self.config.encode_batch_size, self.lexical_,
                                      self.neighbours_)
        return self._scorer


def _positives_per_item(examples: Examples, n_items: int, held_out: np.ndarray | None = None) -> np.ndarray:
    """float64 [n_items]: positives per item over the whole window (the draw is a uniform sample of it), 0 for
    the ``held_out`` items: what the popularity correction and the sampled negatives read."""
    items, labels = examples.everything()
    counts = np.bincount(items[labels > 0], minlength=n_items).astype(np.float64)
    if held_out is not None:
        counts[held_out] = 0.0
    return counts


def with_mode(config: TextTowerConfig, mode: str) -> TextTowerConfig:
    """The same config with another fine-tuning mode (e.g. the zero-shot twin of a fine-tuned run)."""
    return replace(config, finetune=replace(config.finetune, mode=mode))
