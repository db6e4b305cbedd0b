"""``recsys train --from``: a warm-started update on a window where the users' topics changed (planted drift)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from tiny_train import tiny_train_args
from trend_data import write_drift_windows

from recsys.cli import cli
from recsys.evaluation.window import score_window
from recsys.pyfunc_model import load_registered
from training.fit_lightfm import LightFMConfig, LightFMRecommender


def _held_back(window) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The window's events before and after its 80% time quantile."""
    events = pl.read_parquet(window / "interactions.parquet")
    cut = events["timestamp"].sort()[int(events.height * 0.8)]
    return events.filter(pl.col("timestamp") < cut), events.filter(pl.col("timestamp") >= cut)


def _without_old_targets(before, folder):
    """The pre-drift window minus the events after its 80% quantile: no version, and no replay, sees them."""
    history, _ = _held_back(before)
    folder.mkdir()
    shutil.copyfile(before / "items.parquet", folder / "items.parquet")
    history.write_parquet(folder / "interactions.parquet")
    return folder


@pytest.fixture(scope="module")
def drift(tmp_path_factory, tiny_bert_dir):
    """v1 trained before the drift; v2 an update without replay, v3 with replay, v4 with a strong L2-SP.

    v1 trains on the pre-drift window without its last 20% of events (the forgetting targets),
    so replay, which samples what v1 saw, cannot leak them.
    """
    root = tmp_path_factory.mktemp("warm")
    before, after = write_drift_windows(root / "data")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    outputs = {}
    first = CliRunner().invoke(cli, tiny_train_args(_without_old_targets(before, root / "seen"), uri, tiny_bert_dir))
    assert first.exit_code == 0, first.output
    for version, extra in ((2, []), (3, ["--set", "update.replay=1.0"]), (4, ["--set", "update.l2sp=100.0"])):
        result = CliRunner().invoke(cli, tiny_train_args(after, uri, tiny_bert_dir)
                                    + ["--from", "models:/recsys/1", *extra])
        assert result.exit_code == 0, result.output
        outputs[version] = result.output
    return before, after, uri, outputs


def _score(uri: str, version: int, window) -> float:
    history, targets = _held_back(window)
    return score_window(load_registered(f"models:/recsys/{version}", uri), history, targets).mean()["ndcg@10"]


def test_update_recovers_quality_where_the_stale_model_does_not(drift):
    _, after, uri, outputs = drift
    stale, updated = _score(uri, 1, after), _score(uri, 2, after)
    assert updated > 2 * stale and updated > 0.2, (stale, updated)
    results = json.loads((after / "reports" / "train" / "results.json").read_text())
    ndcg = {r["model"]: r["value"] for r in results["rows"] if r["metric"] == "ndcg@10"}
    # the run itself compares the update with its parent, on the same users: clearly better
    parent = next(p for p in results["paired"] if p["model"] == "parent" and p["metric"] == "ndcg@10")
    assert ndcg["pipeline"] > 1.5 * ndcg["parent"] and parent["ci_high"] < 0, (ndcg, parent)


def test_update_is_registered_as_a_challenger_naming_its_parent_and_gated_on_one_window(drift):
    _, _, uri, outputs = drift
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version("recsys", "2")
    assert version.tags["parent_version"] == "1" and version.tags["parent_model"] == "models:/recsys/1"
    assert "promotion gate: recsys version 2 vs champion version 1" in outputs[2]
    assert "-> champion = version 2" in outputs[2]  # the update beats its stale parent on the new window
    run = client.get_run(version.tags["parent_run"])
    assert run.data.tags["parent_model"] == "models:/recsys/1"
    assert {"test_per_user.parquet", "parent_test_per_user.parquet"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}


def test_replay_reduces_forgetting(drift):
    before, _, uri, _ = drift
    remembered, plain, stale = _score(uri, 3, before), _score(uri, 2, before), _score(uri, 1, before)
    assert remembered > plain + 0.1, (remembered, plain)
    assert stale > plain  # without replay the update forgot the old tastes


def test_l2sp_keeps_the_encoder_near_the_previous_weights(drift):
    _, _, uri, _ = drift
    parent = load_registered("models:/recsys/1", uri).state.models["text"].encoder.state_dict()

    def moved(version: int) -> float:
        encoder = load_registered(f"models:/recsys/{version}", uri).state.models["text"].encoder.state_dict()
        return float(sum(((encoder[k] - parent[k]) ** 2).sum() for k in parent if parent[k].is_floating_point()))

    assert moved(4) < 0.5 * moved(2), (moved(4), moved(2))
    assert moved(2) > 0


def test_unknown_parent_fails_clearly_and_writes_nothing(drift, tiny_bert_dir):
    _, after, uri, _ = drift
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("recsys-train").experiment_id
    runs, versions = len(client.search_runs([experiment])), len(client.search_model_versions("name='recsys'"))
    for uri_from, message in (("models:/recsys@nobody", "has no alias 'nobody'"),
                              ("models:/ghost@champion", "no registered model 'ghost'")):
        result = CliRunner().invoke(cli, tiny_train_args(after, uri, tiny_bert_dir) + ["--from", uri_from])
        assert result.exit_code == 1 and message in result.output, result.output
    assert len(client.search_runs([experiment])) == runs
    assert len(client.search_model_versions("name='recsys'")) == versions


def test_lightfm_warm_start_copies_known_rows_and_grows_for_new_ids():
    import scipy.sparse as sp

    from recsys.indexing import FitInput

    rng = np.random.default_rng(0)
    old = sp.csr_matrix((rng.random((20, 15)) < 0.3).astype(np.float32))
    parent = LightFMRecommender(LightFMConfig(no_components=8, epochs=3)).fit(FitInput(old, old))
    new = sp.csr_matrix((rng.random((25, 18)) < 0.3).astype(np.float32))
    user_map = np.r_[np.arange(20)[::-1], np.full(5, -1)]  # users reordered, 5 new ones
    item_map = np.r_[np.arange(15), np.full(3, -1)]
    grown = LightFMRecommender(LightFMConfig(no_components=8)).warm_start(parent, FitInput(new, new), user_map,
                                                                          item_map)
    # the parent is the registered scorer: LightFM's own arrays travel in its ``state``
    np.testing.assert_array_equal(grown.model_.user_embeddings[:20], parent.state["user_embeddings"][::-1])
    np.testing.assert_array_equal(grown.model_.item_embeddings[:15], parent.state["item_embeddings"][:15])
    np.testing.assert_array_equal(grown.model_.item_embedding_gradients[:15],
                                  parent.state["item_embedding_gradients"][:15])
    assert grown.model_.user_embeddings.shape == (25, 8) and grown.model_.item_embeddings.shape == (18, 8)
    # before any update the grown model scores known users and items exactly as the parent did
    np.testing.assert_allclose(grown.scorer().score(np.arange(20), new[:20])[:, :15],
                               parent.score(np.arange(20)[::-1], old[::-1]), rtol=1e-5, atol=1e-6)
    grown.partial_fit(FitInput(new, new), epochs=2)
    assert grown.epochs_trained_ == 2
    with pytest.raises(ValueError, match="components"):
        LightFMRecommender(LightFMConfig(no_components=4)).warm_start(parent, FitInput(new, new), user_map, item_map)
