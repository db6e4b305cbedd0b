"""The Model Registry through ``recsys registry`` and the promotion gate (paired bootstrap, or --force)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from recsys.cli import cli
from recsys.registry import CHALLENGER, CHAMPION, PER_USER_ARTIFACT, RUN_TAG


def _registry(uri: str, *args: str):
    return CliRunner().invoke(cli, ["registry", "--tracking-uri", uri, *args])


def test_train_registers_a_challenger_with_tags_and_first_champion(registered_model):
    _, uri = registered_model
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("recsys", CHALLENGER)
    assert client.get_model_version_by_alias("recsys", CHAMPION).version == version.version
    assert {"git_commit", "data_fingerprint", RUN_TAG, "test_ndcg_at_10"} <= set(version.tags)
    run = client.get_run(version.tags[RUN_TAG])
    assert run.data.tags["stage"] == "all"
    assert PER_USER_ARTIFACT in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert float(version.tags["test_ndcg_at_10"]) == pytest.approx(run.data.metrics["pipeline/ndcg_at_10"], abs=1e-4)


def test_registry_list_and_show(registered_model):
    _, uri = registered_model
    listed = _registry(uri, "list")
    assert listed.exit_code == 0, listed.output
    assert "recsys" in listed.output and "champion=v1" in listed.output
    shown = _registry(uri, "show", "recsys")
    assert shown.exit_code == 0, shown.output
    assert "challenger" in shown.output and "test_ndcg_at_10" in shown.output
    missing = _registry(uri, "show", "no-such-model")
    assert missing.exit_code == 1 and "no registered model 'no-such-model'" in missing.output


@pytest.fixture
def gate_store(tmp_path, registered_model):
    """A fresh registry whose versions carry hand-made per-user test metrics (the gate's evidence)."""
    _, source_uri = registered_model
    uri = f"sqlite:///{tmp_path / 'gate.db'}"
    source = MlflowClient(source_uri, registry_uri=source_uri).get_model_version("recsys", "1").source
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("gated")
    experiment = client.create_experiment("gate", artifact_location=(tmp_path / "artifacts").as_uri())
    users = [f"u{i:03d}" for i in range(200)]
    rng = np.random.default_rng(0)

    def add(ndcg: np.ndarray) -> str:
        run = client.create_run(experiment)
        path = tmp_path / PER_USER_ARTIFACT
        pl.DataFrame({"user_id": users, "ndcg@10": ndcg}).write_parquet(path)
        client.log_artifact(run.info.run_id, str(path))
        client.set_terminated(run.info.run_id)
        version = client.create_model_version("gated", source, tags={RUN_TAG: run.info.run_id}).version
        return str(version)

    base = rng.uniform(0.1, 0.3, len(users))
    return uri, client, add, base, rng


def test_gate_promotes_only_a_significantly_better_version(gate_store):
    uri, client, add, base, rng = gate_store
    first = add(base)
    result = _registry(uri, "promote", "gated", first, CHAMPION)
    assert result.exit_code == 0 and "no champion yet" in result.output
    same = add(base + rng.normal(0, 0.01, len(base)))
    refused = _registry(uri, "promote", "gated", same, CHAMPION)
    assert refused.exit_code == 3, refused.output
    assert "not better" in refused.output and "champion unchanged" in refused.output
    assert str(client.get_model_version_by_alias("gated", CHAMPION).version) == first
    better = add(base + 0.05)
    promoted = _registry(uri, "promote", "gated", better, CHAMPION)
    assert promoted.exit_code == 0, promoted.output
    assert "difference +0.0500" in promoted.output and "over 200 users" in promoted.output
    assert str(client.get_model_version_by_alias("gated", CHAMPION).version) == better


def test_force_overrides_the_gate_and_other_aliases_move_freely(gate_store):
    uri, client, add, base, _ = gate_store
    first, worse = add(base), add(base - 0.05)
    assert _registry(uri, "promote", "gated", first, CHAMPION).exit_code == 0
    assert _registry(uri, "promote", "gated", worse, CHAMPION).exit_code == 3
    forced = _registry(uri, "promote", "gated", worse, CHAMPION, "--force")
    assert forced.exit_code == 0 and "forced" in forced.output
    assert str(client.get_model_version_by_alias("gated", CHAMPION).version) == worse
    staged = _registry(uri, "promote", "gated", first, "staging")
    assert staged.exit_code == 0
    assert str(client.get_model_version_by_alias("gated", "staging").version) == first


def test_promote_unknown_version_is_a_clear_error(gate_store):
    uri, _, add, base, _ = gate_store
    add(base)
    result = _registry(uri, "promote", "gated", "99", CHAMPION)
    assert result.exit_code == 1 and "has no version '99'" in result.output


def test_a_mistyped_or_unreachable_store_fails_at_once_naming_it(registered_model, tmp_path):
    import socket
    import time

    data, uri = registered_model
    typo = f"sqlite:///{tmp_path / 'mlfow.db'}"
    for args in (["registry", "--tracking-uri", typo, "show", "recsys"],
                 ["recommend", "--model", "models:/recsys@champion", "--tracking-uri", typo, "--data", str(data),
                  "--out", str(tmp_path / "recs.parquet")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and f"no MLflow store at {typo}" in result.output, result.output
    assert not (tmp_path / "mlfow.db").exists() and not (tmp_path / "recs.parquet").exists()
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    result = CliRunner().invoke(cli, ["registry", "--tracking-uri", f"http://127.0.0.1:{port}", "list"])
    assert result.exit_code == 1 and f"cannot reach the MLflow server at http://127.0.0.1:{port}" in result.output
    assert time.perf_counter() - start < 30 and "Traceback" not in result.output
    bad_folder = CliRunner().invoke(cli, ["train", "--data", str(data), "--tracking-uri",
                                          f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}"])
    assert bad_folder.exit_code == 1 and "does not exist; check --tracking-uri" in bad_folder.output
