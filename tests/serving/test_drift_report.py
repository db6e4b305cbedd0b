"""``recsys drift``: a planted drift (users move to a new topic, new items and users arrive) calls for an update.

The no-drift references are the model's own training data (nothing moved) and a later window of
the same generator (same users, same tastes, fresh items of the same topics): in this news-like
data every later window is mostly new items, so its new-item and popularity figures are high too;
its text centroid must stay put while the planted drift's moves far.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from recsys import contract as C
from recsys.cli import cli
from recsys.drift import EXPERIMENT, DriftThresholds, drift_report, reference_ndcg
from recsys.pyfunc_model import load_registered
from recsys.synthetic import TOPICS

VERSION_1 = "models:/recsys/1"
START = datetime(2024, 1, 1)  # trend_data's start: the training log covers days 0-89
OLD_TOPICS, NEW_TOPICS = list(range(6)), [6, 7]  # trend_data uses the first six topics


def write_window(train: Path, out: Path, *, drift: bool, seed: int, n_new_items: int = 40, n_new_users: int = 0,
                 first_day: int = 90, days: int = 20, half_life: float = 5.0) -> Path:
    """A window after the training log, simulated like ``trend_data`` (taste x freshness) from its users.

    Each training user keeps their favourite topic (the most clicked one); ``drift`` moves every
    user to one of two topics the training data never had, and the new items are of those topics.
    """
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    items = pl.read_parquet(train / C.ITEMS_FILE)
    clicks = pl.read_parquet(train / C.INTERACTIONS_FILE)
    topic_of = dict(zip(items[C.ITEM_ID], [names.index(t[0]) for t in items[C.TAGS].to_list()], strict=True))
    favourites = (clicks.with_columns(pl.col(C.ITEM_ID).replace_strict(topic_of).alias("t"))
                  .group_by(C.USER_ID).agg(pl.col("t").mode().min()).sort(C.USER_ID))
    topics = NEW_TOPICS if drift else OLD_TOPICS
    favourite = np.asarray(favourites["t"].to_list())
    if drift:
        favourite = np.asarray(NEW_TOPICS)[favourite % len(NEW_TOPICS)]
    users = favourites[C.USER_ID].to_list() + [f"new{u:04d}" for u in range(n_new_users)]
    favourite = np.concatenate([favourite, rng.choice(topics, size=n_new_users)])
    rows = []
    for i in range(n_new_items):
        t = topics[rng.integers(len(topics))]
        category, nouns, adjs = TOPICS[names[t]]
        picked = rng.choice(len(nouns), size=3, replace=False)
        rows.append((f"n{seed}_{i:03d}", f"{adjs[rng.integers(len(adjs))].capitalize()} {nouns[picked[0]].title()}",
                     f"A guide to {nouns[picked[1]]} and {nouns[picked[2]]}.", category, [names[t]],
                     START + timedelta(days=float(first_day + rng.uniform(-2, days)))))
    catalogue = pl.concat([items, pl.DataFrame(rows, schema=C.ITEM_SCHEMA, orient="row")])
    ids = catalogue[C.ITEM_ID].to_list()
    topic = np.asarray([names.index(t[0]) for t in catalogue[C.TAGS].to_list()])
    published = np.asarray([(p - START).total_seconds() / 86400 for p in catalogue[C.PUBLISHED_AT].to_list()])
    events = []
    for u, user in enumerate(users):
        for day in first_day + np.flatnonzero(rng.random(days) < 0.35):
            live = np.flatnonzero(published <= day)
            weight = np.where(topic[live] == favourite[u], 1.0, 0.05) * np.exp(-(day - published[live]) / half_life)
            chosen = rng.choice(live, size=1 + int(rng.random() < 0.5), replace=False, p=weight / weight.sum())
            for k, item in enumerate(chosen):
                when = START + timedelta(days=float(day), seconds=int(rng.integers(3600, 80000)) + k)
                events.append((user, ids[item], when, C.CLICK, None, None, False))
    out.mkdir(parents=True, exist_ok=True)
    catalogue.write_parquet(out / C.ITEMS_FILE)
    pl.DataFrame(events, schema=C.INTERACTION_SCHEMA, orient="row").sort(C.TS, C.USER_ID).write_parquet(
        out / C.INTERACTIONS_FILE)
    return out


@pytest.fixture(scope="module")
def windows(registered_model, tmp_path_factory):
    """The training data itself, a later window without drift, and one with a planted drift."""
    data, _ = registered_model
    root = tmp_path_factory.mktemp("drift")
    return {"training": data,
            "later": write_window(data, root / "later", drift=False, seed=1),
            "shifted": write_window(data, root / "shifted", drift=True, seed=2, n_new_users=100)}


@pytest.fixture(scope="module")
def bundle(registered_model):
    _, uri = registered_model
    return load_registered(VERSION_1, uri)


@pytest.fixture(scope="module")
def reports(registered_model, windows, bundle):
    _, uri = registered_model
    reference = reference_ndcg(VERSION_1, bundle, uri)
    return {name: drift_report(bundle, folder, reference=reference, model_uri=VERSION_1, n_bootstrap=200)
            for name, folder in windows.items()}


def test_planted_drift_calls_for_an_update_naming_every_shift(reports):
    report = reports["shifted"]
    assert report.update_due
    reasons = "\n".join(report.reasons)
    for shift in ("new items:", "new users:", "popularity shift:", "text centroid shift:", "quality drop:"):
        assert shift in reasons, reasons
    assert report.unknown_item_interactions > 0.5 and report.unknown_user_share > 0.3
    assert report.returning_users == report.eval_users > 100  # the training users came back with new clicks
    ndcg, low, high = report.quality["ndcg@10"]
    assert low <= ndcg <= high and ndcg < 0.8 * report.reference_ndcg
    assert report.reference_source.startswith("version 1 tag test_ndcg_at_10")
    assert {"ndcg@10", "recall@20"} <= set(report.quality) and {"ndcg@10", "recall@20"} <= set(
        report.popularity_quality)
    text = report.render()
    assert "UPDATE DUE" in text and "text centroid: shift / spread" in text and "YES" in text


def test_shift_figures_are_larger_than_without_drift(reports):
    training, later, shifted = reports["training"], reports["later"], reports["shifted"]
    limit = shifted.thresholds.centroid_shift
    assert shifted.centroid_shift > limit > later.centroid_shift >= training.centroid_shift == 0.0
    assert shifted.centroid_shift > 10 * later.centroid_shift
    assert shifted.centroid_distance > 10 * later.centroid_distance
    assert shifted.user_centroid_shift > 3 * later.user_centroid_shift
    assert shifted.popularity_tv > later.popularity_tv > training.popularity_tv == 0.0
    assert shifted.popularity_js > later.popularity_js and shifted.top_overlap < later.top_overlap
    assert training.top_overlap == 1.0
    # same tastes: the topics stay put and the model holds up; only the catalogue turned over
    assert not any(r.startswith(("text centroid", "quality", "new users")) for r in later.reasons)
    assert later.quality["ndcg@10"][0] > 2 * shifted.quality["ndcg@10"][0]


def test_the_training_data_itself_shows_no_drift(reports):
    report = reports["training"]
    assert not report.update_due and report.reasons == ()
    assert report.unknown_item_interactions == report.unknown_user_interactions == 0.0
    assert report.eval_users == 0 and report.quality == {}  # everything in it was already seen
    assert any("quality on NEW is not measured" in n for n in report.notes)
    assert "no update due" in report.render()


def test_thresholds_are_checked_and_decide_the_verdict(bundle, windows):
    with pytest.raises(ValueError, match="popularity_tv"):
        DriftThresholds(popularity_tv=1.5)
    lenient = DriftThresholds(new_item_interactions=1.0, new_user_interactions=1.0, popularity_tv=1.0,
                              centroid_shift=5.0, ndcg_drop=1.0)
    report = drift_report(bundle, windows["shifted"], thresholds=lenient, n_bootstrap=50, max_users=30)
    assert not report.update_due and report.popularity_tv > 0.3
    assert any("test ndcg@10 was not found" in n for n in report.notes)  # no reference given
    assert report.eval_users == 30 and any("random sample of 30" in n for n in report.notes)


def _drift(uri: str, *args: str):
    return CliRunner().invoke(cli, ["drift", "--tracking-uri", uri, *args])


def test_cli_prints_the_report_and_logs_it_to_mlflow(registered_model, windows):
    _, uri = registered_model
    result = _drift(uri, "--model", "models:/recsys@champion", "--data", str(windows["shifted"]))
    assert result.exit_code == 0, result.output
    assert "UPDATE DUE" in result.output and "text centroid shift" in result.output
    run_id = re.search(r"MLflow run (\w+) \(experiment recsys-drift\)", result.output).group(1)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.experiment_id == client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert run.data.params["model_uri"] == "models:/recsys@champion"
    assert run.data.params["data"] == str(windows["shifted"])
    metrics = run.data.metrics
    assert metrics["update_due"] == 1.0 and metrics["centroid_shift"] > 0.05 and metrics["popularity_tv"] > 0.3
    assert {"ndcg_at_10", "ndcg_at_10.ci_low", "recall_at_20", "popularity_on_new/ndcg_at_10"} <= set(metrics)
    assert run.data.tags["update_due"] == "true"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"drift_report.json", "drift_report.txt"} <= artifacts
    report = json.loads(Path(client.download_artifacts(run_id, "drift_report.json")).read_text())
    assert report["update_due"] is True and report["centroid_shift"] == pytest.approx(metrics["centroid_shift"])

    runs = len(client.search_runs([run.info.experiment_id]))
    quiet = _drift(uri, "--model", VERSION_1, "--data", str(windows["later"]), "--k", "5", "--no-mlflow")
    assert quiet.exit_code == 0, quiet.output
    assert "ndcg@5" in quiet.output and "recall@10" in quiet.output and "MLflow run" not in quiet.output
    assert len(client.search_runs([run.info.experiment_id])) == runs


def test_cli_bad_model_or_data_fail_clearly(registered_model, windows, tmp_path):
    _, uri = registered_model
    alias = _drift(uri, "--model", "models:/recsys@nope", "--data", str(windows["later"]))
    assert alias.exit_code == 1 and "model 'recsys' has no alias 'nope'" in alias.output
    name = _drift(uri, "--model", "models:/nosuch@champion", "--data", str(windows["later"]))
    assert name.exit_code == 1 and "no registered model 'nosuch'" in name.output
    missing = _drift(uri, "--model", VERSION_1, "--data", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1 and "data folder not found" in missing.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / C.ITEMS_FILE).write_text("not parquet")
    bad = _drift(uri, "--model", VERSION_1, "--data", str(broken))
    assert bad.exit_code == 1 and "items.parquet" in bad.output and "Traceback" not in bad.output
