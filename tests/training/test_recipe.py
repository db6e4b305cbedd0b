"""The default recipe: settings chosen from the data's shape and the time budget, under any config."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from recsys import contract as C
from recsys.config import load_config
from recsys.io import DatasetPaths
from training.baseline_specs import LIGHTFM_EPOCHS
from training.pipeline import TrainConfig
from training.recipe import (
    HUGE_EPOCHS,
    MIN_EXAMPLES,
    DataShape,
    choose,
    ease_seconds,
    encode_seconds,
    measure,
    planned_minutes,
    training_rate,
)

SMALL = DataShape(events=3_000, users=400, items=2_000, text_tokens_p50=30.0, text_tokens_p90=90.0)
LARGE = DataShape(events=480_000, users=3_000, items=3_900, text_tokens_p50=8.0, text_tokens_p90=12.0)


def test_measure_reads_counts_and_text_lengths_of_any_contract_format(tmp_path):
    items = pl.DataFrame({C.ITEM_ID: ["a", "b", "c", "d"], C.TITLE: ["x" * 40, "y" * 40, "z" * 40, "w" * 400],
                          C.DESCRIPTION: [None, None, None, None]})
    inter = pl.DataFrame({C.USER_ID: ["u1", "u1", "u2"], C.ITEM_ID: ["a", "b", "a"],
                          C.TS: ["2024-01-01T00:00:00"] * 3, C.EVENT: ["click"] * 3})
    items.write_csv(tmp_path / "items.csv")
    inter.write_ndjson(tmp_path / "interactions.jsonl")
    shape = measure(DatasetPaths.from_dir(tmp_path))
    assert (shape.events, shape.users, shape.items) == (3, 2, 4)
    assert shape.text_tokens_p50 == pytest.approx(40 / 4, abs=0.5) and shape.text_tokens_p90 > 40
    assert shape.text_tokens_mean == pytest.approx((3 * 10 + 64) / 4, abs=0.5)  # the long text counts as 64 tokens
    assert shape.impressions is False
    shown = inter.with_columns(pl.Series(C.EVENT, ["impression", "click", "click"]))
    shown.write_ndjson(tmp_path / "interactions.jsonl")
    assert measure(DatasetPaths.from_dir(tmp_path)).impressions is True
    assert shape.event_kinds == ("click",) and shape.rated is False
    rated = inter.with_columns(pl.Series(C.EVENT, ["click", "purchase", "click"]), pl.Series(C.RATING, [3.0, 5.0, 2.0]))
    rated.write_ndjson(tmp_path / "interactions.jsonl")
    again = measure(DatasetPaths.from_dir(tmp_path))
    assert again.event_kinds == ("click", "purchase") and again.rated is True


def test_rated_data_is_judged_on_what_users_liked(tiny_bert_dir):
    """Ratings graded into clicks and purchases: relevance is the purchase; unrated logs keep every positive."""
    rated = replace(SMALL, event_kinds=("click", "purchase"), rated=True)
    recipe = choose(rated, 15, model=str(tiny_bert_dir), cores=2, memory_gb=4)
    assert recipe.settings["relevant"] == ["purchase"] and "what users liked" in recipe.reasons["relevant"]
    assert load_config(TrainConfig, None, (), base=recipe.overrides()).relevant == ("purchase",)
    for shape in (replace(rated, rated=False), replace(rated, event_kinds=("purchase",)),
                  replace(rated, event_kinds=("click", "impression"))):
        assert "relevant" not in choose(shape, 15, model=str(tiny_bert_dir), cores=2, memory_gb=4).settings


def test_small_log_fine_tunes_the_top_layer_within_the_budget(tiny_bert_dir):
    recipe = choose(SMALL, 15, model=str(tiny_bert_dir), cores=2, memory_gb=4)
    s = recipe.settings
    assert s["text.finetune.mode"] == "freeze:1"  # the tiny BERT has 2 layers: only the top one trains
    assert s["text.max_length"] == 64 and s["pipeline.ablations"] is True and s["history"] == "train+valid"
    assert s["pipeline.lightfm_epochs"] == list(LIGHTFM_EPOCHS) and "pipeline.ease_l2" not in s
    assert "pipeline.lightfm.num_threads" not in s  # small logs stay bit-repeatable
    assert "pipeline.cold_curve_slots" not in s  # a small log affords the cold-exposure curve
    many = choose(DataShape(150_000, 50_000, 19_000, 8.0, 12.0), 15, model=str(tiny_bert_dir), cores=2).settings
    assert many["pipeline.ablations"] is False and many["pipeline.cold_curve_slots"] == []
    assert many["pipeline.max_label_users"] * 300 <= 1_000_000
    assert many["max_eval_users"] == 10_000 and "max_eval_users" not in s
    # a small log plans for 2 minutes whatever the budget: 30% for fine-tuning where the catalogue is small
    assert recipe.planned_minutes == 2.0 == planned_minutes(SMALL.events)
    few = choose(replace(SMALL, items=200), 15, model=str(tiny_bert_dir), cores=2, memory_gb=4)
    assert few.settings["text.max_minutes"] == pytest.approx(0.6) and "30% of the planned 2.0 min" in few.render()
    # 2,000 texts of ~30 tokens take ~27 s to encode (x1.5: the top of 2 layers once more), the run ~60 s:
    # 33 s are left, less than 30% of 2 minutes, and fewer examples fit in them
    assert encode_seconds(2_000, 30, 2) == pytest.approx(18.0)
    assert s["text.max_minutes"] == pytest.approx(0.55)
    assert s["text.max_train_examples"] == pytest.approx(few.settings["text.max_train_examples"] * 33 / 36, rel=0.01)
    assert "leave after encoding the catalogue" in recipe.reasons["text.max_minutes"]
    # the measured speeds of default runs (2 cores): 92.6 examples/s at 64 tokens, 358 at ~7.5; impressions cheaper
    assert training_rate(64, 2) == pytest.approx(92.6, rel=0.05)
    assert training_rate(7.5, 2) == pytest.approx(358, rel=0.05)
    shown = choose(replace(SMALL, impressions=True), 15, model=str(tiny_bert_dir), cores=2, memory_gb=4).settings
    assert shown["text.max_train_examples"] == pytest.approx(2.5 * s["text.max_train_examples"], rel=0.01)
    # a 10k-event log of 3,300 long texts: encoding them leaves no time worth fine-tuning in 2 minutes
    long = choose(DataShape(9_800, 80, 3_300, 40.0, 120.0, text_tokens_mean=40.0), 15, model=str(tiny_bert_dir),
                  cores=2, memory_gb=4)
    assert long.settings["text.finetune.mode"] == "zero-shot" and "text.max_train_examples" not in long.settings
    assert "encoding the 3,300 item texts" in long.reasons["text.finetune.mode"]
    # a budget below the run's fixed cost leaves nothing to fine-tune
    short = choose(SMALL, 1, model=str(tiny_bert_dir), cores=2, memory_gb=4)
    assert short.settings["text.finetune.mode"] == "zero-shot"
    text = recipe.render()
    assert "3,000 events, 400 users, 2,000 items" in text and "budget 15 min, planned 2.0" in text
    assert all(f"{key} = " in text for key in s)


def test_large_log_shrinks_grids_and_leaves_out_what_does_not_fit(tiny_bert_dir):
    s = choose(LARGE, 15, model=str(tiny_bert_dir), cores=2, memory_gb=0.1).settings
    assert s["pipeline.lightfm_epochs"] == [5, 10, 20] and s["pipeline.ablations"] is False
    assert s["pipeline.lightfm.num_threads"] == s["baseline_threads"] == 2
    assert "baseline_lightfm_epochs" not in s  # the baselines keep their grid
    # 20M events: every LightFM trains one epoch count, the pipeline's and the baselines', and the run takes them
    huge = choose(DataShape(20_000_000, 1_000_000, 100_000, 8.0, 12.0), 15, model=str(tiny_bert_dir), cores=2,
                  memory_gb=8)
    assert huge.settings["pipeline.lightfm_epochs"] == huge.settings["baseline_lightfm_epochs"] == [HUGE_EPOCHS]
    taken = load_config(TrainConfig, None, (), base=huge.overrides())
    assert taken.pipeline.lightfm_epochs == taken.baseline_lightfm_epochs == (HUGE_EPOCHS,)
    assert taken.baseline_threads == 2 and "an epoch ~48 s on 2 cores" in huge.render()
    assert s["pipeline.cold_curve_slots"] == [] and "pipeline.max_label_users" not in s  # 3,000 users: all
    assert s["pipeline.ease_l2"] == 0.0  # 3,900 items need ~0.11 GiB of dense EASE matrices: over 3/4 of 0.1 GiB
    assert "baselines" not in s  # the baseline EASE is left out by train() itself, which checks memory too
    # a catalogue whose cubic solves would eat the budget: EASE leaves the pipeline and the baselines
    slow = choose(DataShape(360_000, 50_000, 19_000, 8.0, 12.0), 15, model=str(tiny_bert_dir), cores=2,
                  memory_gb=8).settings
    assert slow["pipeline.ease_l2"] == 0.0 and "ease" not in slow["baselines"] and "lightfm" in slow["baselines"]
    assert ease_seconds(50_000, 19_000, 2) == ease_seconds(19_000, 50_000, 2) > 10 * ease_seconds(600, 9_700, 2)
    assert s["text.max_length"] == 16  # short titles: no padding to 64
    tiny = choose(LARGE, 0.05, model=str(tiny_bert_dir), cores=2).settings
    assert tiny["text.finetune.mode"] == "zero-shot" and "text.max_train_examples" not in tiny
    with pytest.raises(ValueError, match="--budget-minutes must be > 0"):
        choose(LARGE, 0)
    assert MIN_EXAMPLES > 0
    assert planned_minutes(500_000) == pytest.approx(15.0) and 2 < planned_minutes(100_000) < 15


def test_config_file_and_set_override_the_recipe(tmp_path, tiny_bert_dir):
    recipe = choose(SMALL, 15, model=str(tiny_bert_dir), cores=2, memory_gb=4)
    chosen = load_config(TrainConfig, None, (), base=recipe.overrides())
    assert chosen.text.finetune.mode == "freeze:1" and chosen.history == "train+valid"
    assert (chosen.split.mode, chosen.split.valid, chosen.split.test) == ("per-user", 0.1, 0.2)
    assert chosen.text.max_train_examples == recipe.settings["text.max_train_examples"]
    assert chosen.pipeline.lightfm_epochs == LIGHTFM_EPOCHS
    file = tmp_path / "mine.yaml"
    file.write_text("history: train\ntext:\n  max_epochs: 5\n")
    mine = load_config(TrainConfig, str(file), ("text.finetune.mode=lora",), base=recipe.overrides())
    assert mine.history == "train" and mine.text.max_epochs == 5 and mine.text.finetune.mode == "lora"
    assert mine.text.max_length == 64  # the recipe's choice where the file and flags are silent


def test_the_baselines_lightfm_grid_and_threads_are_settings():
    """``baseline_lightfm_epochs`` and ``baseline_threads`` reach the LightFM and ALS baselines; bad ones are named."""
    from training.baseline_specs import baseline_specs

    specs = {s.name: s for s in baseline_specs(["lightfm", "als"], num_threads=2, lightfm_epochs=(5,))}
    assert specs["lightfm"].grid == (5,) and specs["lightfm"].build(5).config.num_threads == 2
    assert specs["als"].build(32).config.num_threads == 2
    with pytest.raises(ValueError, match=r"baseline_lightfm_epochs must be strictly increasing .* got \[5, 5\]"):
        TrainConfig(baseline_lightfm_epochs=(5, 5))
    with pytest.raises(ValueError, match="baseline_threads must be >= 1; got 0"):
        TrainConfig(baseline_threads=0)
