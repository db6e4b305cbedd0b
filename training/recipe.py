"""The default recipe: ``recsys train --data DIR`` chooses its settings from the data and a time budget.

A data team runs the product on its own logs without writing a config, so the settings that
decide speed and quality are derived here from what the data looks like (events, users, items,
how long the item texts are, memory) and from ``--budget-minutes``:

* the text tower fine-tunes only its top layer (``freeze:N-1``: the lower layers' outputs are
  cached per item, the fastest mode, benchmarks/text_training.py), on as many sampled examples
  as its share of the planned time allows at the measured CPU speed, with texts cut where 90% of
  them end; too little time leaves the tower zero-shot. The plan is what the log deserves (2
  minutes up to 10k events, linear to 15 at 500k), never more than ``--budget-minutes``. Encoding
  the catalogue (items x tokens, whatever the events) and the run's fixed cost come first: on a
  small log with a large catalogue of long texts they leave fine-tuning too little time, and the
  tower stays zero-shot;
* LightFM's epoch grid shrinks on large logs (to one epoch count, baselines included, on huge
  ones); the views that re-score every test user (ablations, the cold-exposure curve) are
  skipped on large ones, and the ranker's table is capped;
* EASE (a dense item x item matrix) is left out where it would not fit the memory budget, or where
  its fits (a cubic solve each) would take more than a fifth of the planned time;
* the evaluation protocol is per-user 70/10/20 with train + valid as history.

Every choice is a ``key=value`` override under any config file or ``--set`` (those win), is
printed with its reason, and is logged to the run. Whether a stage then earns its place is
decided on held-out label users by the gates of ``training.fit_pipeline``, not here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys import contract as C
from recsys.io import DatasetPaths, scan_table
from training.baseline_specs import DEFAULT_BASELINES, LIGHTFM_EPOCHS, ease_bytes, ease_fits, memory_budget

__all__ = ["DataShape", "Recipe", "measure", "choose", "planned_minutes", "ease_seconds", "encode_seconds",
           "training_rate", "TEXT_SHARE", "TOKENS_PER_SECOND"]

TEXT_SHARE = 0.3
"""Share of the budget the text tower's fine-tuning may take (the rest: CF, baselines, ranker, scoring)."""
TOKENS_PER_SECOND, EXAMPLE_SECONDS = 3500.0, 0.0035
"""Training cost of top-layer fine-tuning (``freeze:N-1``) of MiniLM-L6 per core: example tokens per
second, plus a fixed cost per example (the head, the optimiser, batching). Measured in default runs on
2 cores, positives only (each step also encodes 16 sampled negatives): 92.6 examples/s at 64 tokens
(MovieLens), 358 at ~7.5 (ML-1M). Examples/s = cores / (EXAMPLE_SECONDS + tokens / TOKENS_PER_SECOND)."""
IMPRESSION_SPEEDUP = 2.5
"""With impressions, a step encodes only its own shown items (shared within the batch, no sampled
negatives): the demo trained at 602-738 examples/s at ~30 tokens, ~3.6x the positives-only cost."""
MIN_EXAMPLES = 400
"""Fewer affordable training examples than this: fine-tuning cannot learn much, stay zero-shot."""
LARGE_LOG = 200_000
"""Events above which LightFM's epoch grid shrinks and the ablations are skipped."""
HUGE_LOG, HUGE_EPOCHS = 5_000_000, 5
"""Events above which every LightFM (the pipeline's and the baselines') trains ``HUGE_EPOCHS`` epochs, no grid:
a run fits LightFM about five times (the baseline's tuning and refit, the pipeline's two windows, shipping)."""
LIGHTFM_EVENT_SECONDS = 4.8e-6
"""LightFM's seconds per event and epoch on one core (100k users / 50k items / 2M events on 2 threads: the
baseline's refit of 30 epochs on 1.6M events took 116 s)."""
SMALL_LOG, SMALL_MINUTES = 10_000, 2.0
LARGE_MINUTES, LARGE_EVENTS = 15.0, 500_000
"""What a log deserves: 2 minutes up to 10k events, growing linearly to 15 minutes at 500k events
(the product's targets on 2 cores); ``--budget-minutes`` caps it."""
MANY_USERS = 10_000
"""Users above which the views that re-score every test user (ablations, cold-exposure curve) are skipped."""
RANKER_ROWS, CANDIDATES_PER_USER = 1_000_000, 300
"""Rows the ranker's feature table may hold (about 50 columns each), and candidates a user (five sources)."""
EASE_FLOPS_PER_CORE = 5e9
"""float32 Cholesky inverse speed per core (n^3 counted; LAPACK spotrf + spotri, 5000 items on 2 busy
cores: ~10 GFLOP/s). EASE solves the smaller of users and items (Woodbury when users are fewer)."""
EASE_FITS, EASE_TIME_SHARE = 7, 0.2
"""EASE fits in a default run (a 3-point baseline grid and its refit, the pipeline's two windows,
shipping), and the share of the planned time they may take before EASE is left out."""
EVAL_USERS = 10_000
"""Users the evaluation scores per window on larger logs (every model scores each against the catalogue)."""
CHARS_PER_TOKEN = 4.0
"""English wordpiece tokens are about four characters: text length is estimated without a tokenizer."""
ENCODE_TOKENS_PER_SECOND, ENCODE_ITEM_TOKENS = 2000.0, 6.0
"""Catalogue encoding by the full MiniLM-L6 (no gradients) per core, in tokens per second, and the
tokens each text costs beyond its own (special tokens, batching): 2 cores encoded 600 items of ~27
tokens in 4.6 s, 3,318 of ~37 in 33-36 s, 3,883 of ~6 in 12 s, 9,742 of ~26 in 80 s."""
RUN_FIXED_SECONDS = 60.0
"""What a run costs besides its models on a small log: starting and imports (~15 s), the MLflow store,
scoring and bootstrapping ~20 evaluated views, the report and the registered package (a 10k-event
MovieLens slice on 2 cores: 62 s of a 155 s run outside the text tower)."""
MIN_TRAIN_SECONDS = 30.0
"""Less fine-tuning time than this (after the catalogue's encoding and the run's fixed cost): stay zero-shot."""


@dataclass(frozen=True)
class DataShape:
    """What the recipe reads off a dataset (lazily: counts and text lengths, no full load)."""

    events: int
    users: int
    items: int
    text_tokens_p50: float
    """Median text length of the items events touch (event-weighted), in tokens: what training reads."""
    text_tokens_p90: float
    """90th percentile of the catalogue's text lengths, in tokens: where texts are cut."""
    text_tokens_mean: float | None = None
    """Mean text length over the whole catalogue, each capped at 64 tokens: what encoding it reads
    (None: taken as ``text_tokens_p50``)."""
    impressions: bool = False
    """The log holds impression events: the text tower then trains on them (BCE), a cheaper step."""
    event_kinds: tuple[str, ...] = ()
    """The distinct events of the log (sorted)."""
    rated: bool = False
    """The log carries ratings (a ``rating`` column with values): its events grade how much users liked items."""

    def describe(self) -> str:
        return (f"{self.events:,} events, {self.users:,} users, {self.items:,} items, ~{self.text_tokens_p50:.0f} "
                f"tokens a text the events touch (90% of the catalogue within {self.text_tokens_p90:.0f})")


@dataclass(frozen=True)
class Recipe:
    """The chosen settings (``key=value`` for ``load_config``) and why each was chosen."""

    shape: DataShape
    budget_minutes: float
    settings: dict[str, object] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    planned_minutes: float | None = None
    """The time the recipe plans for: what the log deserves (:func:`planned_minutes`), at most the budget."""

    def overrides(self) -> tuple[str, ...]:
        """The settings as ``key=value`` strings (YAML values), the ``base`` of ``load_config``."""
        return tuple(f"{key}={json.dumps(value)}" for key, value in self.settings.items())

    def render(self) -> str:
        """What a person reads before the run starts: the data, the budget and each choice with its reason."""
        planned = self.planned_minutes if self.planned_minutes is not None else self.budget_minutes
        lines = [f"recipe for {self.shape.describe()}; budget {self.budget_minutes:g} min, planned {planned:.1f} "
                 "(a config file or --set overrides any of these):"]
        lines += [f"  {key} = {json.dumps(value)}   ({self.reasons[key]})" for key, value in self.settings.items()]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {"shape": self.shape.__dict__, "budget_minutes": self.budget_minutes,
                "planned_minutes": self.planned_minutes, "settings": self.settings, "reasons": self.reasons}


def measure(paths: DatasetPaths) -> DataShape:
    """Counts and item-text lengths of a contract dataset, from lazy scans (any supported format).

    The training speed of the text tower follows the texts of the items that *events* touch
    (positives and negatives drawn by popularity), not of the catalogue: on MovieLens the popular
    films carry long overviews while most of the catalogue has a title only. So the length that
    plans the training is the event-weighted median; the catalogue's 90th percentile cuts texts.
    """
    interactions = scan_table(paths.interactions)
    names = interactions.collect_schema().names()
    rated = pl.col(C.RATING).is_not_null().any() if C.RATING in names else pl.lit(False)
    events = interactions.select(pl.len().alias("n"), pl.col(C.USER_ID).n_unique().alias("users"),
                                 pl.col(C.EVENT).cast(pl.String).unique().sort().implode().alias("kinds"),
                                 rated.alias("rated")).collect()
    kinds = tuple(k for k in events["kinds"][0].to_list() if k is not None)
    items = scan_table(paths.items)
    present = items.collect_schema().names()
    text = pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in (C.TITLE, C.DESCRIPTION) if c in present],
                         separator=" ") if {C.TITLE, C.DESCRIPTION} & set(present) else pl.lit("")
    lengths = items.select(pl.col(C.ITEM_ID).cast(pl.String), text.str.len_chars().alias("chars")).collect()
    counts = interactions.group_by(pl.col(C.ITEM_ID).cast(pl.String)).agg(pl.len().alias("n")).collect()
    weighted = counts.join(lengths, on=C.ITEM_ID).sort("chars")
    if weighted.height:
        half = weighted["n"].cum_sum() >= weighted["n"].sum() / 2
        p50 = float(weighted.filter(half)["chars"][0]) / CHARS_PER_TOKEN
    else:
        p50 = float(lengths["chars"].quantile(0.5) or 0.0) / CHARS_PER_TOKEN
    p90 = float(lengths["chars"].quantile(0.9) or 0.0) / CHARS_PER_TOKEN
    mean = float((lengths["chars"] / CHARS_PER_TOKEN).clip(upper_bound=64).mean() or 0.0)
    return DataShape(int(events["n"][0]), int(events["users"][0]), lengths.height, p50, p90, mean,
                     C.IMPRESSION in kinds, kinds, bool(events["rated"][0]))


def planned_minutes(events: int) -> float:
    """Minutes a log of ``events`` deserves: 2 up to 10k events, then linear to 15 at 500k (and on)."""
    if events <= SMALL_LOG:
        return SMALL_MINUTES
    slope = (LARGE_MINUTES - SMALL_MINUTES) / (LARGE_EVENTS - SMALL_LOG)
    return SMALL_MINUTES + slope * (events - SMALL_LOG)


def ease_seconds(users: int, items: int, cores: int) -> float:
    """Estimated seconds of one EASE fit: a dense solve over the smaller side (Woodbury below items)."""
    return float(min(users, items)) ** 3 / (EASE_FLOPS_PER_CORE * cores)


def encode_seconds(items: int, tokens: float, cores: int) -> float:
    """Estimated seconds to encode a catalogue of ``items`` texts of ``tokens`` each with the full encoder."""
    return items * (tokens + ENCODE_ITEM_TOKENS) / (ENCODE_TOKENS_PER_SECOND * cores)


def training_rate(tokens: float, cores: int, *, impressions: bool = False) -> float:
    """Estimated examples/s of top-layer fine-tuning on ``cores`` for examples of ``tokens`` each."""
    return cores / (EXAMPLE_SECONDS + tokens / TOKENS_PER_SECOND) * (IMPRESSION_SPEEDUP if impressions else 1.0)


def _layers(model: str | None) -> int:
    """Transformer layers of the text model (its ``config.json``), so ``freeze:N-1`` trains the top one."""
    from recsys.text_encoder import resolve_model_path

    config = json.loads((resolve_model_path(model) / "config.json").read_text())
    return int(config.get("num_hidden_layers") or config.get("n_layers") or config.get("num_layers") or 1)


def choose(shape: DataShape, budget_minutes: float = 15.0, *, model: str | None = None, cores: int | None = None,
           memory_gb: float | None = None) -> Recipe:
    """The default recipe for data of this shape within ``budget_minutes`` on this machine.

    Args:
        shape: :func:`measure` of the dataset.
        budget_minutes: wall time the whole ``recsys train`` should fit in.
        model: the text model folder (None: the bundled all-MiniLM-L6-v2).
        cores: CPU cores to plan for (default: this machine's).
        memory_gb: memory the run should stay within (default: ``baseline_specs.memory_budget``).
    """
    if budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be > 0; got {budget_minutes}")
    cores = cores or os.cpu_count() or 1
    memory = memory_budget(memory_gb)
    planned = min(budget_minutes, planned_minutes(shape.events))
    settings: dict[str, object] = {}
    reasons: dict[str, str] = {}

    def choose_(key: str, value: object, why: str) -> None:
        settings[key], reasons[key] = value, why

    choose_("split", {"mode": "per-user", "valid": 0.1, "test": 0.2},
            "each user's newest 20% of events are the test window, the 10% before them the valid one")
    choose_("history", "train+valid", "models fit on and see train + valid at test time, as the shipped model does")
    if shape.rated and C.PURCHASE in shape.event_kinds and C.CLICK in shape.event_kinds:
        choose_("relevant", [C.PURCHASE], "rated data: lists are judged on what users liked (purchase: a rating at "
                "or above the import's threshold); every rating still feeds the models, labels the ranker (graded) "
                "and is never recommended again")
    # text tower: top layer only, as many examples as its share of the budget affords
    max_length = int(min(64, max(16, 8 * round(shape.text_tokens_p90 / 8 + 0.5))))
    choose_("text.max_length", max_length, f"90% of item texts fit in ~{shape.text_tokens_p90:.0f} tokens (cap 64)")
    per_example = max(4.0, min(max_length, shape.text_tokens_p50 + 2))
    rate = training_rate(per_example, cores, impressions=shape.impressions)
    epochs = 2
    layers = _layers(model)
    catalogue = shape.text_tokens_mean if shape.text_tokens_mean is not None else shape.text_tokens_p50
    # the catalogue is encoded whatever the mode; fine-tuned, its top layer once more at the end
    encode = encode_seconds(shape.items, min(catalogue, max_length), cores) * (1 + 1 / layers)
    seconds = min(TEXT_SHARE * planned * 60, planned * 60 - RUN_FIXED_SECONDS - encode)
    affordable = int(max(seconds, 0) * rate / epochs)
    if seconds < MIN_TRAIN_SECONDS:
        choose_("text.finetune.mode", "zero-shot", f"encoding the {shape.items:,} item texts (~{encode:.0f} s) and "
                f"the run's fixed cost (~{RUN_FIXED_SECONDS:.0f} s) leave {max(seconds, 0):.0f} s of the planned "
                f"{planned:.1f} min for fine-tuning (< {MIN_TRAIN_SECONDS:.0f} s): the pretrained encoder as it is")
    elif affordable < MIN_EXAMPLES:
        choose_("text.finetune.mode", "zero-shot", f"the budget affords ~{affordable} training examples "
                f"(< {MIN_EXAMPLES}): fine-tuning could not learn; the pretrained encoder as it is")
    else:
        choose_("text.finetune.mode", f"freeze:{max(layers - 1, 0)}", f"only the top of {layers} layers trains; "
                "the lower layers' outputs are cached per item (the fastest mode on CPU)")
        choose_("text.max_epochs", epochs, "two passes; early stopping on the tower's holdout may stop sooner")
        share = (f"{TEXT_SHARE:.0%} of the planned {planned:.1f} min" if seconds >= TEXT_SHARE * planned * 60 else
                 f"what the planned {planned:.1f} min leave after encoding the catalogue and the run's fixed cost")
        choose_("text.max_train_examples", affordable, f"{seconds:.0f} s ({share}) at ~{rate:.0f} examples/s "
                f"({cores} cores, ~{per_example:.0f} tokens each{', impressions' if shape.impressions else ''}), "
                f"{epochs} epochs")
        choose_("text.max_minutes", round(seconds / 60, 2), f"{share}: a clock on fine-tuning, in case this machine "
                "trains slower than the estimate")
    large = shape.events > LARGE_LOG
    if shape.events > HUGE_LOG:
        epoch = shape.events * LIGHTFM_EVENT_SECONDS / cores
        why = (f"more than {HUGE_LOG:,} events: {HUGE_EPOCHS} epochs, no grid (an epoch ~{epoch:.0f} s on {cores} "
               "cores, and a run fits LightFM about five times)")
        choose_("pipeline.lightfm_epochs", [HUGE_EPOCHS], why)
        choose_("baseline_lightfm_epochs", [HUGE_EPOCHS], why)
    elif large:
        choose_("pipeline.lightfm_epochs", [5, 10, 20], f"more than {LARGE_LOG:,} events: epochs tried on the label "
                "window")
    else:  # where stage one's LightFM then serves alone (the gate), it is the baseline's very model
        choose_("pipeline.lightfm_epochs", list(LIGHTFM_EPOCHS), f"at most {LARGE_LOG:,} events: the LightFM "
                "baseline's epochs, tried on the label window (serving alone, it is the same model as the baseline)")
    if large and cores > 1:
        choose_("pipeline.lightfm.num_threads", cores, f"more than {LARGE_LOG:,} events: LightFM's SGD on {cores} "
                "threads (Hogwild: about twice as fast, not bit-repeatable; set 1 for repeatable runs)")
        choose_("baseline_threads", cores, f"more than {LARGE_LOG:,} events: the LightFM and ALS baselines on {cores}"
                " threads too (not bit-repeatable; set 1 for repeatable runs)")
    heavy = large or shape.users > MANY_USERS
    why = (f"more than {LARGE_LOG:,} events or {MANY_USERS:,} users: skipped" if heavy
           else "affordable on this log")
    choose_("pipeline.ablations", not heavy, f"each ablation refits the ranker and re-scores every test user; {why}")
    if heavy:
        choose_("pipeline.cold_curve_slots", [], f"each cold-exposure setting re-scores every test user; {why}")
    if shape.users > EVAL_USERS:
        choose_("max_eval_users", EVAL_USERS, f"{shape.users:,} users: the evaluation and the baselines' tuning "
                f"score a seeded sample of {EVAL_USERS:,} per window (NDCG@10 within ~+-0.005); all fit on every user")
    label_users = RANKER_ROWS // CANDIDATES_PER_USER
    if shape.users > label_users:
        choose_("pipeline.max_label_users", label_users, f"{shape.users:,} users x ~{CANDIDATES_PER_USER} candidates:"
                f" a sample keeps the ranker's feature table within {RANKER_ROWS / 1e6:.0f}M rows (memory)")
    if not ease_fits(shape.items, memory):
        choose_("pipeline.ease_l2", 0.0, f"EASE on {shape.items:,} items needs ~{ease_bytes(shape.items) / 2**30:.1f}"
                f" GiB, too much for the {memory / 2**30:.1f} GiB memory budget: left out of the pipeline")
    elif (seconds := EASE_FITS * ease_seconds(shape.users, shape.items, cores)) > EASE_TIME_SHARE * planned * 60:
        why = (f"EASE's {EASE_FITS} fits (baseline grid, pipeline, shipping) on {shape.items:,} items x "
               f"{shape.users:,} users take ~{seconds / 60:.0f} min, over {EASE_TIME_SHARE:.0%} of the planned time")
        choose_("pipeline.ease_l2", 0.0, why + ": left out of the pipeline")
        choose_("baselines", [b for b in DEFAULT_BASELINES if b != "ease"], why + ": not a baseline in this run")
    return Recipe(shape, budget_minutes, settings, reasons, planned)


def write_recipe(recipe: Recipe, path: Path) -> Path:
    """The recipe as JSON (what the run chose and why), for the report and the MLflow run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe.as_dict(), indent=2))
    return path
