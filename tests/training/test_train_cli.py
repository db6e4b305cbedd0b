"""``recsys train --stage text``: config files, overrides, the report and the MLflow runs."""

from __future__ import annotations

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
    assert len(history) == 2  # one holdout AUC per epoch
