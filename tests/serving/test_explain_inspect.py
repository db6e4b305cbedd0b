"""Explanations (``recsys.explain``, ``recsys explain``, the pyfunc ``explain`` column) and the user inspector.

All on the session's registered model (``registered_model``), checked against the dataset it
was trained on: the "because" items are the user's own clicks, the contributions add up to the
ranker's score, and the inspector's HTML page renders in headless Chromium with the titles in it.
"""

from __future__ import annotations

import dataclasses
import html
import shutil
import subprocess
from datetime import datetime

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from click.testing import CliRunner

from recsys.cli import cli
from recsys.errors import RecsysError
from recsys.explain import EXPLAIN_SCHEMA, explain
from recsys.export import prepare_bundle
from recsys.inspect_page import Inspection, render_page
from recsys.pipeline import RankingPipeline
from recsys.pyfunc_model import SIGNATURE, load_registered
from recsys.ranker import RankerEnsemble, base_scores

CHAMPION = "models:/recsys@champion"
STRANGER = "no-such-user-42"
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


@pytest.fixture(scope="module")
def model(registered_model):
    """(data folder, tracking URI, the registered bundle, the bundle reading the data folder's histories)."""
    data, uri = registered_model
    bundle = load_registered(CHAMPION, uri)
    prepared, _ = prepare_bundle(bundle, data)
    return data, uri, bundle, prepared


@pytest.fixture(scope="module")
def positives(registered_model) -> dict[str, set[str]]:
    """Each user's clicked or purchased items in the interactions data."""
    data, _ = registered_model
    events = pl.read_parquet(data / "interactions.parquet").filter(pl.col("event").is_in(["click", "purchase"]))
    return {u: set(items) for u, items in events.group_by("user_id").agg(pl.col("item_id").unique()).iter_rows()}


@pytest.fixture(scope="module")
def titles(registered_model) -> dict[str, str]:
    data, _ = registered_model
    return dict(pl.read_parquet(data / "items.parquet").select("item_id", "title").iter_rows())


@pytest.fixture(scope="module")
def users(positives) -> list[str]:
    """Three users with the most positives, and the lowest id among ties."""
    return sorted(positives, key=lambda u: (-len(positives[u]), u))[:3]


def _invoke(uri: str, *args: str):
    return CliRunner().invoke(cli, [*args[:1], "--model", CHAMPION, "--tracking-uri", uri, *args[1:]])


def test_explanations_name_a_history_item_the_user_has(model, positives, titles, users):
    _, _, bundle, prepared = model
    sources = {*bundle.state.sources, "cold"}
    for which in (bundle, prepared):  # the model's own histories, and those read from the data folder
        frame = explain(which, users, k=5)
        assert frame.schema == pl.Schema(EXPLAIN_SCHEMA)
        recs = which.recommend(users, 5)
        assert frame.select("user_id", "item_id", "rank").equals(recs.select("user_id", "item_id", "rank"))
        np.testing.assert_allclose(frame["score"].to_numpy(), recs["score"].to_numpy(), rtol=1e-12)
        for row in frame.iter_rows(named=True):
            assert row["because_item_id"] in positives[row["user_id"]], row
            assert row["because_item_id"] != row["item_id"]
            assert row["because_title"] == titles[row["because_item_id"]]
            assert row["title"] == titles[row["item_id"]]
            assert f'because you liked "{row["because_title"]}"' in row["reason"]
            named = row["sources"].split(", ")
            assert named and set(named) <= sources, row["sources"]
            assert row["reason"].startswith("suggested by ")
            assert "mostly for: " in row["reason"] or "against: " in row["reason"]
            features = [c["feature"] for c in row["contributions"]]
            assert 0 < len(features) <= 5 and set(features) <= set(which.state.ranker.features)
            values = [abs(c["value"]) for c in row["contributions"]]
            assert values == sorted(values, reverse=True)
            assert not row["fallback"]


def test_the_because_item_is_the_nearest_history_item_in_text_space(model):
    _, _, _, prepared = model
    vectors = prepared.state.item_vectors
    assert vectors is not None
    frame = explain(prepared, ["u0001"], k=3)
    user = prepared.user_index(["u0001"])[0]
    seen = prepared.history[user].indices
    for row in frame.iter_rows(named=True):
        item = int(np.flatnonzero(prepared.item_ids == row["item_id"])[0])
        best = seen[np.argmax(vectors[seen] @ vectors[item])]
        assert row["because_item_id"] == prepared.item_ids[best]


def test_contributions_plus_bias_add_up_to_the_ranker_score(model, users):
    _, _, _, prepared = model
    ranker = prepared.state.ranker
    index = prepared.user_index(users)
    table = prepared.pipeline.candidate_table(index, prepared.history[index])
    contrib = ranker.contributions(table)
    assert contrib.shape == (table.height, len(ranker.features) + 1) and contrib.dtype == np.float64
    # predict = mean over boosters of the raw score (+ the base column, outside the trees)
    base = base_scores(table, ranker.base) if ranker.base is not None else 0.0
    np.testing.assert_allclose(contrib.sum(axis=1) + base, ranker.predict(table), rtol=0, atol=1e-9)
    manual = np.mean([b.predict(ranker_matrix(table, ranker), num_iteration=it, pred_contrib=True)
                      for b, it in zip(ranker.boosters, ranker.best_iterations, strict=True)], axis=0)
    np.testing.assert_allclose(contrib, manual, rtol=0, atol=1e-12)
    # the same boosters with a base score column: contributions stay the trees' own, the base is added outside
    based = RankerEnsemble(ranker.boosters, ranker.features, ranker.best_iterations, base="score_text")
    np.testing.assert_allclose(based.contributions(table), contrib, rtol=0, atol=1e-12)
    np.testing.assert_allclose(based.contributions(table).sum(axis=1) + base_scores(table, "score_text"),
                               based.predict(table), rtol=0, atol=1e-9)
    assert ranker.contributions(table.head(0)).shape == (0, len(ranker.features) + 1)
    # through explain(): every feature's contribution plus the bias is the listed score
    frame = explain(prepared, users, k=4, top=None)
    for row in frame.iter_rows(named=True):
        assert sorted(c["feature"] for c in row["contributions"]) == sorted(ranker.features)
        total = sum(c["value"] for c in row["contributions"]) + row["bias"]
        assert total == pytest.approx(row["score"], abs=1e-9)


def test_a_ranker_with_a_base_score_is_explained_from_it(model, users):
    _, _, _, prepared = model
    ranker = prepared.state.ranker
    based = RankerEnsemble(ranker.boosters, ranker.features, ranker.best_iterations, base="score_text")
    state = dataclasses.replace(prepared.state, ranker=based)
    bundle = dataclasses.replace(prepared, pipeline=RankingPipeline(state, name=prepared.pipeline.name,
                                                                    cold=prepared.pipeline.cold))
    frame = explain(bundle, users[:2], k=3, top=None)
    recs = bundle.recommend(users[:2], 3)
    assert frame["item_id"].to_list() == recs["item_id"].to_list()
    for row in frame.iter_rows(named=True):
        total = sum(c["value"] for c in row["contributions"]) + row["bias"]
        assert total == pytest.approx(row["score"], abs=1e-9)
        assert "starting from the text score (" in row["reason"]


def ranker_matrix(table: pl.DataFrame, ranker: RankerEnsemble) -> np.ndarray:
    from recsys.ranker import feature_matrix

    return feature_matrix(table, ranker.features)


def test_asked_items_outside_the_list_say_why(model, positives):
    _, _, _, prepared = model
    found = None
    for user in prepared.user_ids:
        index = prepared.user_index([user])
        history = prepared.history[index]
        candidates = set(prepared.pipeline.candidate_table(index, history)["item_idx"].to_list())
        rest = sorted(set(range(prepared.n_items)) - candidates - set(history.indices.tolist()))
        if rest:
            found = user, str(prepared.item_ids[rest[0]])
            break
    assert found is not None, "every user's candidates cover the catalogue; the test data changed"
    user, outsider = found
    seen = sorted(positives[user])[0]
    top = explain(prepared, [user], k=1)["item_id"][0]
    frame = explain(prepared, [user], items=[outsider, seen, top])
    by_item = {r["item_id"]: r for r in frame.iter_rows(named=True)}
    assert by_item[top]["rank"] == 1 and by_item[top]["reason"].startswith("suggested by")
    assert "not among the candidates" in by_item[outsider]["reason"]
    assert by_item[outsider]["sources"] is None and by_item[outsider]["contributions"] is None
    n_candidates = len(prepared.pipeline.candidate_table(prepared.user_index([user]),
                                                         prepared.history[prepared.user_index([user])]))
    assert by_item[outsider]["rank"] > n_candidates  # ranked after every candidate
    assert by_item[seen]["rank"] is None and "already in your history" in by_item[seen]["reason"]
    with pytest.raises(RecsysError, match="not in the model's catalogue: no-such-item"):
        explain(prepared, [user], items=["no-such-item"])


def test_unknown_users_are_an_error_or_the_explained_fallback(model):
    _, _, bundle, _ = model
    with pytest.raises(RecsysError, match=STRANGER):
        explain(bundle, ["u0001", STRANGER], k=3)
    frame = explain(bundle, [STRANGER, "u0001"], k=2, unknown="fallback")
    stranger = frame.filter(pl.col("user_id") == STRANGER)
    assert stranger["fallback"].all() and stranger.height == 2
    assert stranger["reason"].str.contains("does not know this user").all()
    assert stranger["because_item_id"].is_null().all()


def test_pyfunc_explain_column_adds_reason(model, users):
    _, uri, bundle, _ = model
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    loaded = mlflow.pyfunc.load_model(CHAMPION)
    assert loaded.metadata.signature == SIGNATURE
    assert SIGNATURE.inputs.optional_input_names() == ["k", "exclude_seen", "explain"]
    assert SIGNATURE.outputs.optional_input_names() == ["reason"]
    plain = loaded.predict(pd.DataFrame({"user_id": users[:1], "k": [3]}))
    assert list(plain.columns) == ["user_id", "item_id", "score", "rank", "fallback"]
    quiet = loaded.predict(pd.DataFrame({"user_id": users[:1], "k": [3], "explain": [False]}))
    assert list(quiet.columns) == list(plain.columns)
    out = loaded.predict(pd.DataFrame({"user_id": [users[0], STRANGER, users[1]], "k": [3, 2, 3],
                                       "explain": [True, True, False]}))
    assert list(out.columns) == ["user_id", "item_id", "score", "rank", "fallback", "reason"]
    assert out["user_id"].tolist() == [users[0]] * 3 + [STRANGER] * 2 + [users[1]] * 3
    first = out[out["user_id"] == users[0]]
    expected = explain(bundle, users[:1], k=3)
    assert first["item_id"].tolist() == expected["item_id"].to_list()
    assert first["reason"].tolist() == expected["reason"].to_list()
    assert out[out["user_id"] == STRANGER]["reason"].str.contains("does not know this user").all()
    assert all(r is None for r in out[out["user_id"] == users[1]]["reason"])  # None: JSON null when served
    # rows without the explain key (JSON records) count as false
    records = loaded.predict(pd.DataFrame([{"user_id": users[0], "k": 2, "explain": True},
                                           {"user_id": users[1], "k": 2}]))
    assert records["reason"].notna().tolist() == [True, True, False, False]


def test_cli_explain_prints_the_reasons_and_history_items(model, positives, titles, users):
    data, uri, _, prepared = model
    user = users[0]
    result = _invoke(uri, "explain", "--user", user, "--k", "3", "--data", str(data))
    assert result.exit_code == 0, result.output
    expected = explain(prepared, [user], k=3)
    for row in expected.iter_rows(named=True):
        assert row["item_id"] in result.output and row["title"] in result.output
        assert row["because_item_id"] in positives[user]
        assert titles[row["because_item_id"]] in result.output
    assert "because you liked" in result.output and "suggested by" in result.output
    item = sorted(set(titles) - positives[user])[0]
    one = _invoke(uri, "explain", "--user", user, "--item", item, "--data", str(data))
    assert one.exit_code == 0, one.output
    assert item in one.output and titles[item] in one.output


def test_cli_explain_unknown_user_is_a_clear_error(model):
    _, uri, _, _ = model
    result = _invoke(uri, "explain", "--user", STRANGER)
    assert result.exit_code == 1
    assert f"error: user '{STRANGER}' not known to the model" in result.output
    assert "Traceback" not in result.output


def test_cli_inspect_prints_history_and_the_list(model, titles, users, registered_model):
    data, uri, _, prepared = model
    user = users[0]
    result = _invoke(uri, "inspect", "--data", str(data), "--user", user, "--k", "4", "--history", "5")
    assert result.exit_code == 0, result.output
    events = pl.read_parquet(data / "interactions.parquet").filter(pl.col("user_id") == user)
    latest = events.sort("timestamp", descending=True).head(5)
    for row in latest.iter_rows(named=True):
        assert titles[row["item_id"]] in result.output
        assert row["timestamp"].strftime("%Y-%m-%d %H:%M") in result.output
    for title in explain(prepared, [user], k=4)["title"]:
        assert title in result.output
    assert f"user {user}: {events.height} events in the data; top 4" in result.output

    stranger = _invoke(uri, "inspect", "--data", str(data), "--user", STRANGER, "--k", "3")
    assert stranger.exit_code == 0, stranger.output
    assert f"user {STRANGER} is unknown to the model" in stranger.output
    assert "does not know this user" in stranger.output


def test_the_page_escapes_every_text():
    nasty = '<script>alert("x")</script> & <b>bold</b>'
    recs = pl.DataFrame({"user_id": ["u<1>"], "item_id": ["i&1"], "title": [nasty], "rank": [1], "score": [0.5],
                         "sources": ["text"], "because_item_id": ["i2"], "because_title": [nasty],
                         "contributions": [[{"feature": "score_text", "phrase": "high text score", "value": 0.4}]],
                         "bias": [0.1], "reason": [f'because you liked "{nasty}"'], "fallback": [False],
                         "description": [nasty]}, schema=EXPLAIN_SCHEMA | {"description": pl.String})
    history = pl.DataFrame({"timestamp": [datetime(2024, 1, 2, 3, 4)], "event": ["click"], "item_id": ["i2"],
                            "title": [nasty], "category": ["<i>cat</i>"], "description": [nasty]})
    page = render_page(Inspection("u<1>", True, history, 1, recs, model="m&m"))
    assert "<script>" not in page and "<b>bold" not in page and "<i>cat" not in page
    assert html.escape(nasty, quote=True) in page and "u&lt;1&gt;" in page and "m&amp;m" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: the rendered page cannot be checked")
def test_inspect_html_page_renders_in_chromium(model, titles, users, tmp_path):
    data, uri, _, prepared = model
    user = users[1]
    page = tmp_path / "pages" / "user.html"
    result = _invoke(uri, "inspect", "--data", str(data), "--user", user, "--k", "5", "--html", str(page))
    assert result.exit_code == 0, result.output
    assert page.is_file() and f"wrote {page}" in result.output
    assert [p.name for p in page.parent.iterdir()] == ["user.html"]  # no temporary file left behind
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained

    profile = tmp_path / "profile"
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1300,1600",
                    f"--screenshot={shot}", page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a blank page of this size is a few kB
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                          page.resolve().as_uri()], check=True, capture_output=True, text=True, timeout=120).stdout
    text = html.unescape(dom)
    top = explain(prepared, [user], k=5)
    for row in top.iter_rows(named=True):
        assert row["title"] in text and row["reason"] in text
    events = pl.read_parquet(data / "interactions.parquet").filter(pl.col("user_id") == user)
    for item in events.sort("timestamp", descending=True).head(3)["item_id"]:
        assert titles[item] in text
    assert f"User {user}" in text and "Top 5 recommendations" in text
