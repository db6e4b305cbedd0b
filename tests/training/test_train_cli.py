"""``recsys train --stage text``: config files, overrides, the report and the MLflow runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from recsys.cli import cli
from recsys.config import load_config
from recsys.datasets import write_synthetic
from recsys.errors import ConfigError
from recsys.synthetic import SyntheticConfig
from training.pipeline import STAGES, TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    config = load_config(TrainConfig, str(path))
    assert isinstance(config, TrainConfig) and config.stage in STAGES


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'text.lrr'; valid keys here: model, template"):
        load_config(TrainConfig, None, ("text.lrr=1",))
    with pytest.raises(ConfigError, match="text.finetune: Invalid mode 'huge'"):
        load_config(TrainConfig, None, ("text.finetune.mode=huge",))
    with pytest.raises(ConfigError, match="'text.lr': 'fast' is not a number"):
        load_config(TrainConfig, None, ("text.lr=fast",))
    bad = tmp_path / "bad.yaml"
    bad.write_text("text: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(TrainConfig, str(bad))
    assert load_config(TrainConfig, None, ("text.lr=1e-4", "baselines=[ease]")).text.lr == 1e-4
    # one key of a nested block changes only that key of the run's default (per-user 70/10/20)
    split = load_config(TrainConfig, None, ("split.mode=global",)).split
    assert (split.mode, split.valid, split.test) == ("global", 0.1, 0.2)
    assert load_config(TrainConfig, None, ("text.finetune.lora_r=4",)).text.finetune.mode == "lora"


def test_train_text_stage_end_to_end(tmp_path, tiny_bert_dir):
    data = tmp_path / "data"
    write_synthetic(data, SyntheticConfig(n_users=40, n_items=40, sessions_per_user=6, seed=3))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(cli, [
        "train", "--stage", "text", "--data", str(data), "--tracking-uri", uri,
        "--set", f"text.model={tiny_bert_dir}", "--set", "text.finetune.mode=bitfit", "--set", "text.max_epochs=2",
        "--set", "split.mode=global", "--set", "n_bootstrap=50", "--set", "baselines=[popularity]",
        "--set", "compare_int8=true"])
    assert result.exit_code == 0, result.output
    for name in ("zero_shot", "text_bitfit", "text_bitfit_int8", "popularity"):
        assert f"│ {name}" in result.output
    assert (data / "reports" / "train" / "report.html").exists()
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("recsys-train").experiment_id],
                                "tags.stage = 'text'")[0]
    assert parent.data.params["train.text.finetune.mode"] == "bitfit"
    assert "zero_shot/ndcg_at_10" in parent.data.metrics and "text_bitfit/ndcg_at_10" in parent.data.metrics
    assert parent.data.metrics["text_bitfit/trainable_params"] > 0
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "report.html", "results.json"} <= artifacts
    child = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")[0]
    history = client.get_metric_history(child.info.run_id, "valid/auc")
    assert len(history) == 3  # the pretrained weights' holdout AUC (epoch 0), then one per epoch


def test_fifty_thousand_users_with_nanosecond_times_over_decades_train(tmp_path, tiny_bert_dir):
    """The text tower's user windows once overflowed int64 here; any user count, unit and span must train."""
    import numpy as np
    import polars as pl

    from recsys import contract as C

    rng = np.random.default_rng(0)
    n_users, n_items, per_user = 50_000, 400, 6
    users = np.repeat([f"u{u}" for u in range(n_users)], per_user)
    items = rng.integers(0, n_items, len(users))
    # pandas writes nanoseconds; times spread over 1975-2024 with each user's events in order
    base = rng.integers(0, 49 * 365 * 86_400, n_users).repeat(per_user) + np.tile(np.arange(per_user) * 3_600, n_users)
    stamps = (np.datetime64("1975-01-01T00:00:00", "ns") + (base * 10**9).astype("timedelta64[ns]"))
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({C.USER_ID: users, C.ITEM_ID: [f"i{i}" for i in items], C.TS: stamps,
                  C.EVENT: ["click"] * len(users)}).write_parquet(data / "interactions.parquet")
    pl.DataFrame({C.ITEM_ID: [f"i{i}" for i in range(n_items)],
                  C.TITLE: [f"item number {i} about topic {i % 7}" for i in range(n_items)]}).write_parquet(
        data / "items.parquet")
    assert pl.read_parquet(data / "interactions.parquet")[C.TS].dtype.time_unit == "ns"
    result = CliRunner().invoke(cli, [
        "train", "--stage", "text", "--data", str(data), "--no-mlflow", "--no-recipe",
        "--set", f"text.model={tiny_bert_dir}", "--set", "text.finetune.mode=bitfit", "--set", "text.max_epochs=1",
        "--set", "text.max_train_examples=300", "--set", "n_bootstrap=20", "--set", "baselines=[popularity]"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "│ text_bitfit" in result.output
    tested = int(re.search(r"([\d,]+) test users", result.output).group(1).replace(",", ""))
    assert tested > 10_000  # every user was scored: the windows of all 50,000 were built


def test_rated_data_trains_and_is_judged_on_what_users_liked(tmp_path, tiny_bert_dir):
    """The default recipe on ratings (clicks below the importer's threshold, purchases at or above it)."""
    import numpy as np
    import polars as pl

    from recsys import contract as C

    rng = np.random.default_rng(1)
    n_users, n_items, per_user = 60, 50, 12
    ratings = rng.integers(1, 6, n_users * per_user).astype(float)
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({C.USER_ID: np.repeat([f"u{u}" for u in range(n_users)], per_user),
                  C.ITEM_ID: [f"i{i}" for i in rng.integers(0, n_items, n_users * per_user)],
                  C.TS: (np.datetime64("2024-01-01T00:00:00", "s")
                         + np.arange(n_users * per_user).astype("timedelta64[h]")).astype("datetime64[ms]"),
                  C.EVENT: np.where(ratings >= 4, "purchase", "click"), C.RATING: ratings}).write_csv(
        data / "interactions.csv")
    pl.DataFrame({C.ITEM_ID: [f"i{i}" for i in range(n_items)],
                  C.TITLE: [f"film {i} of genre {i % 5}" for i in range(n_items)]}).write_csv(data / "items.csv")
    result = CliRunner().invoke(cli, [
        "train", "--stage", "text", "--data", str(data), "--no-mlflow", "--set", f"text.model={tiny_bert_dir}",
        "--set", "text.finetune.mode=zero-shot", "--set", "n_bootstrap=20", "--set", "baselines=[popularity]"])
    assert result.exit_code == 0, result.output
    assert 'relevant = ["purchase"]' in result.output and "what users liked" in result.output
    assert "positives: click, purchase, relevant: purchase," in result.output
    tested = int(re.search(r"([\d,]+) test users", result.output).group(1).replace(",", ""))
    assert 0 < tested < n_users  # users whose test window holds no purchase are not judged
