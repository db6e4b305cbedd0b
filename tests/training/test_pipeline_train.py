"""``recsys train`` (stage ``all``): the ranked pipeline end to end, its MLflow run tree, and its ablations."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from trend_data import write_trend_data

from recsys.cli import cli
from training.baseline_specs import LIGHTFM_EPOCHS

STAGE_RUNS = {"split", "text_tower", "lightfm", "candidates", "features", "ranker"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """One CLI run of every stage on a small log where taste and freshness both matter, tracked in SQLite."""
    root = tmp_path_factory.mktemp("pipeline")
    data = write_trend_data(root / "data", seed=0)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = CliRunner().invoke(cli, [
        "train", "--data", str(data), "--tracking-uri", uri,
        "--set", f"text.model={tiny_bert_dir}", "--set", "text.finetune.mode=full", "--set", "text.max_epochs=2",
        "--set", "split.mode=global", "--set", "history=train+valid", "--set", "n_bootstrap=100",
        "--set", "baselines=[popularity]", "--set", "text.pretrained_fallback=false",
        "--set", "pipeline.cold_curve_slots=[4]", "--set", "pipeline.cold_curve_places=[end]"])
    assert result.exit_code == 0, result.output
    return data, uri, result.output


def _parent(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("recsys-train").experiment_id
    return client, client.search_runs([experiment], "tags.stage = 'all'")[0]


def test_every_model_of_the_ablation_is_in_the_table(trained):
    _, _, output = trained
    for name in ("pipeline", "pipeline_no_text", "pipeline_no_cf", "pipeline_no_ease", "pipeline_no_new", "text_alone",
                 "lightfm_alone", "zero_shot", "popularity"):
        assert f"│ {name} " in output
    assert "│ quota        ┆ 4     ┆ end   ┆ pipeline_cold4of20_end" in output  # in the new-item table


def test_run_tree_has_a_child_per_stage_with_metrics_and_plots(trained):
    _, uri, _ = trained
    client, parent = _parent(uri)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {run.info.run_name: run for run in children}
    assert STAGE_RUNS <= set(by_name)
    assert by_name["lightfm"].data.metrics["best_epochs"] in LIGHTFM_EPOCHS  # the recipe: the baseline's grid
    assert 0 < by_name["candidates"].data.metrics["test_recall"] <= 1
    assert by_name["candidates"].data.metrics["label_recall"] > 0
    assert by_name["ranker"].data.metrics["mean_best_ndcg"] > 0
    assert by_name["features"].data.metrics["n_features"] >= 20
    ranker_files = {a.path for a in client.list_artifacts(by_name["ranker"].info.run_id)}
    assert {"ranker_learning_curves.png", "ranker_importance.png", "ranker_importance.csv"} <= ranker_files
    assert "lightfm_epochs.png" in {a.path for a in client.list_artifacts(by_name["lightfm"].info.run_id)}
    assert client.get_metric_history(by_name["text_tower"].info.run_id, "valid/auc")
    assert parent.data.metrics["pipeline/ndcg_at_10"] > 0
    assert parent.data.metrics["run/wall_s"] > 0
    # the process's peak memory after each stage: where a run's peak RSS came from
    assert 100 < parent.data.metrics["ranker/peak_rss_mb"] <= parent.data.metrics["pipeline/peak_rss_mb"]


def test_parent_run_holds_config_and_data_fingerprint(trained, tmp_path):
    data, uri, _ = trained
    client, parent = _parent(uri)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "data_fingerprint.json", "report.html", "results.json", "cold_tradeoff.png",
            "cold_tradeoff.csv"} <= artifacts
    local = client.download_artifacts(parent.info.run_id, "data_fingerprint.json", str(tmp_path))
    fingerprint = json.loads(open(local).read())
    interactions = data / "interactions.parquet"
    assert fingerprint["interactions"]["sha256"] == hashlib.sha256(interactions.read_bytes()).hexdigest()
    assert fingerprint["interactions"]["rows"] == pl.read_parquet(interactions).height
    assert parent.data.params["train.stage"] == "all"


def test_pipeline_beats_each_tower_alone(trained):
    """On data where taste and freshness both matter, the ranked pipeline clearly beats the collaborative tower and
    popularity alone, and still adds to the text tower, whose words carry most of this log's taste."""
    data, _, _ = trained
    results = json.loads((data / "reports" / "train" / "results.json").read_text())
    ndcg = {row["model"]: row["value"] for row in results["rows"] if row["metric"] == "ndcg@10"}
    for alone in ("lightfm_alone", "popularity"):
        assert ndcg["pipeline"] > 1.3 * ndcg[alone], ndcg
    assert ndcg["pipeline"] > 1.05 * ndcg["text_alone"], ndcg
    paired = {(r["model"], r["metric"]): r for r in results["paired"]}
    assert paired[("lightfm_alone", "ndcg@10")]["ci_high"] < 0  # pipeline minus it: CI above zero


NEW_ITEMS_TABLE = "new items (whole catalogue ranked): on merit"


def test_new_items_table_is_printed_and_plotted(trained):
    data, _, output = trained
    assert NEW_ITEMS_TABLE in output
    assert (data / "reports" / "train" / "cold_tradeoff.png").stat().st_size > 1000
    settings = {line.split("┆")[0].strip("│ ") for line in output[output.index(NEW_ITEMS_TABLE):].splitlines()
                if "┆ pipeline" in line}
    assert settings == {"merit", "quota", "no text", "no new items"}, output
    assert "on merit " in output and "each user's best new item was chosen by" in output


def test_new_items_reach_the_lists_on_merit_where_they_are_chosen(trained):
    """Fresh items are most of what is clicked next on this log: with no quota the ranker lets them in, and
    overall recall is above the same pipeline without new-item candidates (whose lists never hold one)."""
    data, uri, _ = trained
    results = json.loads((data / "reports" / "train" / "results.json").read_text())
    rows = {(r["model"], r["metric"]): r["value"] for r in results["rows"]}
    assert rows[("pipeline", "cold_recall@20")] > 0.2
    assert rows[("pipeline_no_new", "cold_recall@20")] == 0.0
    assert rows[("pipeline", "recall@20")] > rows[("pipeline_no_new", "recall@20")] + 0.05
    # the evidence printed under the table: each user's best new item is chosen more often than what stands
    # at positions 16-20, so the ranker was right to place new items in the first page
    metrics = _parent(uri)[1].data.metrics
    assert metrics["new_items/users_with_new"] > 0.9 and metrics["new_items/new_per_list"] >= 1
    assert metrics["new_items/best_new_hit_rate"] > metrics["new_items/page_end_hit_rate"] > 0
    curve = pl.read_csv(data / "reports" / "train" / "cold_tradeoff.csv")
    assert curve.filter(pl.col("setting") == "no new items")["new_per_list"].item() == 0


def test_run_prints_its_recipe_and_verdict_first_and_ships_a_model_of_every_event(trained):
    """The default recipe and the verdict lead the output; the registered model learned from the test window too."""
    from recsys.pyfunc_model import load_registered

    data, uri, output = trained
    lines = output.splitlines()
    assert lines[0].startswith("recipe for ") and "budget 15 min, planned 2.0" in lines[0]
    assert any(line.strip().startswith("text.max_length = ") for line in lines[1:8])
    verdict = next(line for line in lines if "the best baseline" in line)
    assert "ndcg@10" in verdict and "paired 95% CI" in verdict and "popularity" in verdict
    assert lines.index(verdict) < next(i for i, line in enumerate(lines) if line.startswith("split "))
    bundle = load_registered("models:/recsys/1", uri)
    positives = pl.read_parquet(data / "interactions.parquet").filter(pl.col("event").is_in(["click", "purchase"]))
    assert bundle.state.events["timestamp"].max() == positives["timestamp"].max()  # the test window's newest event
    assert bundle.meta["fitted_on"] == "every event"
    assert bundle.meta["relevant"] == ["click", "purchase"]  # unrated data: every positive; later windows judge so
    # where taste and freshness both matter the ranker earns its place on the held-out label users
    assert bundle.meta["serves"] == "ranker" and bundle.state.ranker is not None
    client, parent = _parent(uri)
    assert parent.data.metrics["ranker/gate_kept_ranker"] == 1.0
    assert "recipe.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_a_ranker_that_cannot_learn_ships_the_best_baseline_on_the_valid_window(tmp_path, tiny_bert_dir):
    """Where the ranker loses its gate, the run registers the baseline the valid window chose, as it was evaluated."""
    from recsys.pyfunc_model import load_registered

    data = write_trend_data(tmp_path / "data", seed=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(cli, [
        "train", "--data", str(data), "--tracking-uri", uri, "--no-recipe",
        "--set", f"text.model={tiny_bert_dir}", "--set", "text.finetune.mode=zero-shot", "--set", "n_bootstrap=50",
        "--set", "history=train+valid", "--set", "baselines=[popularity,itemknn]", "--set", "pipeline.ablations=false",
        "--set", "pipeline.ranker.min_data_in_leaf=1000000", "--set", "pipeline.ranker_base=false",  # it cannot split
        "--set", "pipeline.gate_min_users=5",
        "--set", "pipeline.cold_curve_slots=[4]", "--set", "pipeline.cold_curve_places=[end]"])
    assert result.exit_code == 0, result.output
    bundle = load_registered("models:/recsys/1", uri)
    served = bundle.meta["serves"]
    assert served in ("popularity", "itemknn") and bundle.state.ranker is None
    assert list(bundle.state.models) == [served]
    verdict = next(line for line in result.output.splitlines() if "baseline alone" in line)
    assert verdict.startswith(f"a simpler model won on held-out users, so pipeline serves the {served} baseline alone")
    results = json.loads((data / "reports" / "train" / "results.json").read_text())
    rows = {(r["model"], r["metric"], r.get("slice", "all")): r["value"] for r in results["rows"]}
    for metric in ("ndcg@10", "recall@20", "mrr"):  # the registered model's figures are the baseline's own
        assert rows[("pipeline", metric, "all")] == rows[(served, metric, "all")]
    paired = next(p for p in results["paired"] if p["model"] == served and p["metric"] == "ndcg@10")
    assert paired["mean_diff"] == paired["ci_low"] == paired["ci_high"] == 0
    client, parent = _parent(uri)
    assert parent.data.metrics["ranker/gate_kept_baseline"] == 1.0


def test_the_terminal_shows_the_run_not_the_libraries(trained):
    """No library banners, tips or warnings; no bar lines in a log; per-fold detail only with -v; the run ends with
    what was registered, how it compares, and the commands that open, use and serve it."""
    _, uri, output = trained
    for noise in ("GPU available", "TPU available", "Tip:", "LeafSpec", "in eval mode", "Loading weights",
                  "fit_ranker: fold", "0%|", "ranker: features_s=", "`Trainer.fit` stopped"):
        assert noise not in output, noise
    verdict = next(line for line in output.splitlines() if "the best baseline" in line)
    assert output.count(verdict) == 2  # first, and again in the closing summary
    assert "text tower: fine-tuning full on " in output and "holdout AUC" in output  # its one line each way
    tail = output[output.rindex("summary:"):].splitlines()
    assert tail[1].split() == ["registered", "models:/recsys/1,", "now", "the", "champion"]
    labels = [line.split()[0] for line in tail[1:]]
    assert labels == ["registered", "result", "report", "runs", "top-k", "serve"]
    assert f"mlflow ui --backend-store-uri {uri}" in tail[4]
    assert "recsys recommend --model models:/recsys@champion --data " in tail[5]
    assert tail[6].endswith("mlflow models serve -m models:/recsys@champion --env-manager local")
    # the cold-exposure settings are in their own table, not in the model table
    table = output[:output.index(NEW_ITEMS_TABLE)]
    assert "pipeline_cold4of20_end" not in table and "│ pipeline " in table


def test_verbose_prints_the_per_fold_and_per_stage_detail(tmp_path, tiny_bert_dir):
    """`recsys -v train`: the detail the default output leaves to MLflow (folds, tuning, stage figures)."""
    data = write_trend_data(tmp_path / "data", seed=2)
    result = CliRunner().invoke(cli, [
        "-v", "train", "--data", str(data), "--no-mlflow", "--set", f"text.model={tiny_bert_dir}",
        "--set", "text.finetune.mode=zero-shot", "--set", "n_bootstrap=20", "--set", "baselines=[popularity,itemknn]",
        "--set", "pipeline.ablations=false", "--set", "pipeline.cold_curve_slots=[4]",
        "--set", "pipeline.cold_curve_places=[end]"])
    assert result.exit_code == 0, result.output
    for detail in ("fit_ranker: fold 0 best iteration", "itemknn 50: valid ndcg@10", "ranker: features_s=",
                   "evaluating pipeline"):
        assert detail in result.output, detail
