"""How the item text encoder is fine-tuned: one config, one ``build_encoder`` function, one wrapper module.

Modes (``FineTuneConfig.mode``):

- ``zero-shot``: the pretrained encoder as is; nothing trains, always in eval mode.
- ``full``: every encoder parameter trains.
- ``lora``: low-rank adapters on ``lora_targets`` through ``peft.get_peft_model``; only they train.
- ``bitfit``: only the bias terms train (Ben Zaken et al. 2022), LayerNorm biases included.
- ``freeze:N``: the embeddings and the lower N transformer layers are frozen; the rest trains. The
  frozen part runs without grad, in eval mode, and its output is cached per item (CPU speed trick).
  ``freeze:0`` freezes (and caches) only the embeddings.
- ``prompt``: soft-prompt tuning through ``peft.PromptTuningConfig`` (task FEATURE_EXTRACTION, which
  peft supports for a BertModel): ``prompt_tokens`` learned vectors are prepended to the word
  embeddings and the attention mask is extended over them; only they train. They take positions
  0..P-1, so ``max_length + prompt_tokens`` must fit the model's position embeddings (512 for MiniLM).
  The virtual tokens are attended to but not pooled.

The encoder's pooler is dropped: items are mean-pooled, and an unused trainable pooler would get
no gradient (which also trips DDP's unused-parameter check). The scoring head (the user tower's
attention query, the temperature) is not part of this module.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModel
from transformers.masking_utils import create_bidirectional_mask

from recsys.config import check_at_least
from recsys.scorers.text import TextEncoder
from recsys.text_encoder import mean_pool, resolve_model_path

__all__ = ["MODES", "FineTuneConfig", "ItemEncoder", "build_encoder", "count_parameters", "serving_encoder"]

MODES = ("zero-shot", "full", "lora", "bitfit", "freeze:N", "prompt")
_FREEZE = re.compile(r"freeze:(\d+)")
FROZEN_DTYPE = torch.float16
"""How freeze:N holds its frozen layers' output (the per-item cache): half the memory of float32."""


def _freeze_depth(mode: str) -> int | None:
    """N of ``freeze:N``; ``None`` for the other modes. Raises ``ValueError`` for an unknown mode."""
    if (match := _FREEZE.fullmatch(mode)) is not None:
        return int(match.group(1))
    if mode in MODES and mode != "freeze:N":
        return None
    raise ValueError(f"Invalid mode {mode!r}. Must be one of {', '.join(MODES)} "
                     "(N: how many lower layers to freeze, an integer >= 0, e.g. freeze:4)")


@dataclass(frozen=True)
class FineTuneConfig:
    """How the item text encoder is fine-tuned (see the module docstring for the modes)."""

    mode: str = "lora"
    """One of zero-shot, full, lora, bitfit, freeze:N (N an integer >= 0), prompt."""
    lora_r: int = 8
    """LoRA rank (lora mode); >= 1."""
    lora_alpha: int = 16
    """LoRA scaling numerator: the update is scaled by ``lora_alpha / lora_r`` (lora mode); >= 1."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA branch's input in training (lora mode); in [0, 1)."""
    lora_targets: tuple[str, ...] = ("query", "value")
    """Names of the linear modules that get adapters (BERT: query, key, value, dense); non-empty."""
    prompt_tokens: int = 8
    """Learned virtual tokens prepended to every item text (prompt mode); >= 1."""
    dropout: float = 0.1
    """Hidden dropout of the encoder in training (``hidden_dropout_prob``); in [0, 1)."""

    def __post_init__(self) -> None:
        _freeze_depth(self.mode)
        check_at_least(self, lora_r=1, lora_alpha=1, prompt_tokens=1)
        for name in ("lora_dropout", "dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"FineTuneConfig.{name} must be in [0, 1); got {value!r}")
        targets = self.lora_targets
        if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError("FineTuneConfig.lora_targets must be a non-empty tuple of module names, "
                             f"e.g. ('query', 'value'); got {targets!r}")
        object.__setattr__(self, "lora_targets", tuple(targets))  # a YAML list becomes a tuple

    @property
    def frozen_layers(self) -> int:
        """N for ``freeze:N``, else 0."""
        return _freeze_depth(self.mode) or 0


class ItemEncoder(nn.Module):
    """A (possibly peft-wrapped) transformer that turns tokenized item texts into mean-pooled vectors.

    Built by :func:`build_encoder`. With ``frozen_layers`` set (freeze:N), the forward is split: the
    embeddings and the lower ``frozen_layers`` layers run without grad (eval mode, so deterministic),
    and their output per item is cached on CPU keyed by ``item_keys``, trimmed to the item's real
    tokens; a batch is re-padded from the cache and only the upper layers run. The frozen output is
    held in float16 (cached or not, so every pass sees the same values): the cache costs ``items x
    tokens x hidden_size x 2`` bytes (all-MiniLM-L6-v2, 64 tokens: ~49 KB per item; MicroLens'
    19,220 titles: ~0.4 GB instead of ~0.8, which took its run past 4 GB), and rounding LayerNorm
    outputs to 11 significant bits moves item vectors by ~1e-3.

    Attributes:
        transformer: the encoder (a ``peft.PeftModel`` in lora and prompt modes).
        hidden_size: width ``d`` of the output vectors.
        frozen_layers: N of freeze:N, else ``None`` (no split, no cache).
        prompt_tokens: virtual tokens the transformer prepends (prompt mode), else 0.
    """

    def __init__(self, transformer: nn.Module, *, hidden_size: int, frozen_layers: int | None = None,
                 prompt_tokens: int = 0, always_eval: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.transformer = transformer
        self.hidden_size = hidden_size
        self.frozen_layers = frozen_layers
        self.prompt_tokens = prompt_tokens
        # A plain list, so that these modules are not registered twice.
        self._always_eval = list(always_eval)
        self._cache: dict[Hashable, torch.Tensor] = {}

    def train(self, mode: bool = True) -> ItemEncoder:
        """Set train/eval mode; frozen parts (zero-shot, the lower part of freeze:N) stay in eval."""
        super().train(mode)
        for module in self._always_eval:
            module.eval()  # no dropout: frozen outputs are deterministic, so caching them is exact
        return self

    @property
    def cache_size(self) -> int:
        """Items whose frozen-layer output is cached."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Forget the cached frozen-layer outputs (call it after changing how item texts are tokenized)."""
        self._cache.clear()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                item_keys: Sequence[Hashable] | None = None) -> torch.Tensor:
        """Mean of the last hidden states over each item's real tokens.

        In prompt mode the virtual tokens are attended to (the mask covers them) but not pooled.

        Args:
            input_ids: int [b, t] token ids.
            attention_mask: int/bool [b, t], 1 on real tokens (any padding side).
            item_keys: b hashable ids of the items, used by freeze:N to cache the frozen layers' output;
                a key must always stand for the same tokenized text. ``None``: no caching. Other
                modes ignore it.

        Returns:
            float [b, hidden_size].

        Raises:
            ValueError: ``item_keys`` does not have b entries, or a cached item's token count changed.
        """
        if self.frozen_layers is not None:
            hidden, mask = self._frozen_part(input_ids, attention_mask, item_keys)
            return mean_pool(self._trained_part(hidden, mask), mask)
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden[:, self.prompt_tokens:], attention_mask)

    def _frozen_part(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     item_keys: Sequence[Hashable] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-layer output [b, t', d] of the real tokens, re-padded, and its mask [b, t']."""
        b = input_ids.shape[0]
        if isinstance(item_keys, torch.Tensor):
            item_keys = item_keys.tolist()  # tensors hash by identity: they would never hit the cache
        if item_keys is not None and len(item_keys) != b:
            raise ValueError(f"item_keys has {len(item_keys)} entries for a batch of {b} items; give one key per row")
        is_real = attention_mask.bool()
        lengths = is_real.sum(dim=1).tolist()
        rows: list[torch.Tensor | None] = [None] * b
        if item_keys is not None:
            for i, key in enumerate(item_keys):
                if (row := self._cache.get(key)) is not None:
                    if row.shape[0] != lengths[i]:
                        raise ValueError(f"item {key!r}: cached frozen-layer output has {row.shape[0]} tokens, "
                                         f"this batch gives {lengths[i]}; keys must identify the tokenized text "
                                         "(call clear_cache() after changing tokenization)")
                    rows[i] = row
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            index = torch.tensor(missing, device=input_ids.device)
            computed = self._run_frozen(input_ids[index], attention_mask[index])
            for j, i in enumerate(missing):
                # boolean indexing copies (the batch tensor is not kept alive); float16 halves the cache
                rows[i] = computed[j][is_real[i]].to(FROZEN_DTYPE)
                if item_keys is not None:
                    self._cache[item_keys[i]] = rows[i].cpu()
        dtype = self.transformer.embeddings.word_embeddings.weight.dtype
        hidden = pad_sequence([row.to(input_ids.device, dtype) for row in rows], batch_first=True)
        positions = torch.arange(hidden.shape[1], device=input_ids.device)
        mask = (positions < torch.tensor(lengths, device=input_ids.device)[:, None]).to(attention_mask.dtype)
        return hidden, mask

    def _run_frozen(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings + lower layers, without grad: float [m, t, d]."""
        model = self.transformer
        with torch.no_grad():  # not inference_mode: its tensors could not feed the upper layers' autograd
            hidden = model.embeddings(input_ids=input_ids)
            return self._run_layers(hidden, attention_mask, model.encoder.layer[: self.frozen_layers])

    def _trained_part(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Upper layers on the frozen part's output: float [b, t', d]."""
        return self._run_layers(hidden, mask, self.transformer.encoder.layer[self.frozen_layers:])

    def _run_layers(self, hidden: torch.Tensor, mask: torch.Tensor, layers: Sequence[nn.Module]) -> torch.Tensor:
        # The same mask BertModel.forward builds (its format depends on the attention implementation).
        layer_mask = create_bidirectional_mask(config=self.transformer.config, inputs_embeds=hidden,
                                               attention_mask=mask)
        for layer in layers:
            hidden = layer(hidden, layer_mask)
        return hidden


def build_encoder(model: str | Path | None, cfg: FineTuneConfig = FineTuneConfig()) -> ItemEncoder:
    """Load a local encoder and prepare it for ``cfg.mode``.

    Args:
        model: a local Hugging Face model folder; ``None`` = all-MiniLM-L6-v2 (see ``resolve_model_path``).
            freeze:N needs a BERT-like model (``embeddings`` and ``encoder.layer``).
        cfg: the fine-tuning settings.

    Returns:
        The encoder, in train mode (dropout on) except zero-shot and the frozen part of freeze:N,
        which stay in eval mode.

    Raises:
        ConfigError: ``model`` is not a local model folder.
        ValueError: freeze:N with N >= the number of layers, or a model freeze:N cannot split.
    """
    # transformers sets any config attribute given as a keyword.
    transformer = AutoModel.from_pretrained(resolve_model_path(model), local_files_only=True,
                                            hidden_dropout_prob=cfg.dropout)
    if getattr(transformer, "pooler", None) is not None:
        transformer.pooler = None
    hidden_size = transformer.config.hidden_size
    depth = _freeze_depth(cfg.mode)
    if cfg.mode == "zero-shot":
        transformer.requires_grad_(False)
        return ItemEncoder(transformer, hidden_size=hidden_size, always_eval=[transformer]).eval()
    if cfg.mode == "lora":
        lora = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, target_modules=list(cfg.lora_targets))
        return ItemEncoder(get_peft_model(transformer, lora), hidden_size=hidden_size).train()
    if cfg.mode == "prompt":
        # Initialised from randomly drawn vocabulary embeddings: the scale the encoder expects.
        prompt = PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=cfg.prompt_tokens,
                                    prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
        return ItemEncoder(get_peft_model(transformer, prompt), hidden_size=hidden_size,
                           prompt_tokens=cfg.prompt_tokens).train()
    if cfg.mode == "bitfit":
        for name, param in transformer.named_parameters():
            param.requires_grad_(name.endswith("bias"))
        return ItemEncoder(transformer, hidden_size=hidden_size).train()
    if depth is None:  # full
        return ItemEncoder(transformer, hidden_size=hidden_size).train()
    layers = getattr(getattr(transformer, "encoder", None), "layer", None)
    if not hasattr(transformer, "embeddings") or not isinstance(layers, nn.ModuleList):
        raise ValueError(f"mode {cfg.mode!r} needs a BERT-like encoder (embeddings, encoder.layer); "
                         f"{type(transformer).__name__} is not; use lora, bitfit, full or prompt")
    if depth >= len(layers):
        raise ValueError(f"mode {cfg.mode!r} freezes all {len(layers)} layers, so nothing would train; "
                         f"use freeze:N with N < {len(layers)}, or zero-shot")
    frozen = [transformer.embeddings, *layers[:depth]]
    for module in frozen:
        module.requires_grad_(False)
    return ItemEncoder(transformer, hidden_size=hidden_size, frozen_layers=depth, always_eval=frozen).train()


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``module``."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def serving_encoder(encoder: ItemEncoder) -> TextEncoder:
    """The fine-tuned encoder as serving reads it: a plain transformer, eval mode, no peft.

    LoRA adapters are merged into a copy of the weights (the training module is left as it is);
    prompt tuning keeps its learned virtual tokens as an array that :class:`TextEncoder`
    prepends; every other mode already is a plain transformer (freeze:N is just its forward split).
    """
    transformer = encoder.transformer
    prompt = None
    if isinstance(transformer, PeftModel):
        if encoder.prompt_tokens:
            prompt = transformer.get_prompt_embedding_to_save(adapter_name="default").detach().clone()
            transformer = transformer.get_base_model()
        else:
            transformer = copy.deepcopy(transformer).merge_and_unload()
    return TextEncoder(transformer, prompt).eval()

