"""The registered pyfunc model and ``recsys recommend``: lists, fallback, resume, new items, bad input."""

from __future__ import annotations

import json
import shutil
import threading

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from recsys.bundle import ModelBundle
from recsys.cli import cli
from recsys.errors import RecsysError
from recsys.export import ExportConfig, export_recommendations, load_export_inputs, parts_folder
from recsys.pyfunc_model import SIGNATURE, load_registered

CHAMPION = "models:/recsys@champion"


@pytest.fixture(scope="module")
def model(champion):
    return champion


def _recommend(uri: str, *args: str):
    return CliRunner().invoke(cli, ["recommend", "--model", CHAMPION, "--tracking-uri", uri, *args])


def _seen(data) -> pl.DataFrame:
    events = pl.read_parquet(data / "interactions.parquet")
    return events.filter(pl.col("event").is_in(["click", "purchase"])).select("user_id", "item_id").unique()


def test_pyfunc_has_a_signature_and_answers_users_with_k_rows(model):
    data, _, loaded = model
    assert loaded.metadata.signature == SIGNATURE
    users = pl.read_parquet(data / "interactions.parquet")["user_id"].unique().sort().head(3).to_list()
    out = loaded.predict(pd.DataFrame({"user_id": users + ["stranger"], "k": [5, 5, 3, 4]}))
    assert list(out.columns) == ["user_id", "item_id", "score", "rank", "fallback"]
    counts = out.groupby("user_id", sort=False).size()
    assert counts.to_dict() == {users[0]: 5, users[1]: 5, users[2]: 3, "stranger": 4}
    assert list(out["user_id"].drop_duplicates()) == users + ["stranger"]  # input order kept
    assert out.loc[out.user_id == "stranger", "fallback"].all() and not out.loc[out.user_id != "stranger",
                                                                               "fallback"].any()
    for _, rows in out.groupby("user_id"):
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
        assert rows["item_id"].is_unique


def test_seen_items_are_excluded_unless_asked(model):
    data, _, loaded = model
    seen = _seen(data)
    heavy = seen.group_by("user_id").len().sort("len", descending=True)["user_id"][0]
    mine = set(seen.filter(pl.col("user_id") == heavy)["item_id"].to_list())
    fresh = loaded.predict(pd.DataFrame({"user_id": [heavy], "k": [40]}))
    assert not set(fresh["item_id"]) & mine
    every = loaded.predict(pd.DataFrame({"user_id": [heavy], "k": [40], "exclude_seen": [False]}))
    assert set(every["item_id"]) & mine


def test_export_writes_every_user_in_row_groups_and_matches_the_pyfunc(model, tmp_path):
    data, uri, loaded = model
    out = tmp_path / "recs.parquet"
    result = _recommend(uri, "--data", str(data), "--k", "7", "--out", str(out), "--block-size", "40")
    assert result.exit_code == 0, result.output
    recs = pl.read_parquet(out)
    users = pl.read_parquet(data / "interactions.parquet")["user_id"].unique()
    assert set(recs["user_id"]) == set(users) and recs.height == 7 * users.len()
    assert pq.ParquetFile(out).num_row_groups == -(-users.len() // 40)
    assert recs.join(_seen(data), on=["user_id", "item_id"]).height == 0
    assert "users/s" in result.output and not parts_folder(out).exists()
    sample = recs["user_id"].unique().sort().head(10).to_list()
    online = pl.from_pandas(loaded.predict(pd.DataFrame({"user_id": sample, "k": [7] * len(sample)})))
    batch = recs.filter(pl.col("user_id").is_in(sample)).sort("user_id", "rank")
    assert batch.select("user_id", "item_id", "rank").equals(online.sort("user_id", "rank").select(
        "user_id", "item_id", "rank"))
    np.testing.assert_allclose(batch["score"].to_numpy(), online.sort("user_id", "rank")["score"].to_numpy(),
                               rtol=1e-5)


def test_a_crash_leaves_no_output_and_resume_continues(model, tmp_path, monkeypatch):
    data, uri, _ = model
    clean = tmp_path / "clean.parquet"
    assert _recommend(uri, "--data", str(data), "--k", "5", "--out", str(clean), "--block-size", "16").exit_code == 0
    original = ModelBundle.recommend
    _crash_after(monkeypatch, 3)
    out = tmp_path / "recs.parquet"
    crashed = _recommend(uri, "--data", str(data), "--k", "5", "--out", str(out), "--block-size", "16",
                         "--workers", "1")  # one block at a time: exactly the three before the crash are kept
    assert crashed.exit_code != 0
    assert not out.exists() and len(list(parts_folder(out).glob("part-*.parquet"))) == 3
    monkeypatch.setattr(ModelBundle, "recommend", original)
    resumed = _recommend(uri, "--data", str(data), "--k", "5", "--out", str(out), "--block-size", "16", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "3 resumed" in resumed.output
    assert pl.read_parquet(out).equals(pl.read_parquet(clean))
    changed = _recommend(uri, "--data", str(data), "--k", "6", "--out", str(tmp_path / "other.parquet"))
    assert changed.exit_code == 0


def test_blocks_scored_at_once_write_the_same_file_and_a_failed_block_stops_the_rest(model, tmp_path, monkeypatch):
    data, uri, _ = model
    one, three = tmp_path / "one.parquet", tmp_path / "three.parquet"
    for out, workers in ((one, "1"), (three, "3")):
        result = _recommend(uri, "--data", str(data), "--k", "6", "--out", str(out), "--block-size", "8",
                            "--workers", workers)
        assert result.exit_code == 0, result.output
    assert pl.read_parquet(three).equals(pl.read_parquet(one))
    assert pq.ParquetFile(three).num_row_groups == pq.ParquetFile(one).num_row_groups > 3
    calls = _crash_after(monkeypatch, 2, RecsysError("block failed"))
    out = tmp_path / "failed.parquet"
    failed = _recommend(uri, "--data", str(data), "--k", "6", "--out", str(out), "--block-size", "8",
                        "--workers", "3")
    assert failed.exit_code != 0 and "block failed" in failed.output and not out.exists()
    written = len(list(parts_folder(out).glob("part-*.parquet")))
    assert 2 <= written < pq.ParquetFile(one).num_row_groups  # the blocks queued after the failure never ran
    assert calls["n"] <= 3 + 2  # at most the two other workers' blocks in flight were finished
    refused = _recommend(uri, "--data", str(data), "--out", str(tmp_path / "none.parquet"), "--workers", "0")
    assert refused.exit_code != 0 and "workers must be >= 1; got 0" in refused.output


def test_blocks_in_flight_share_the_cores_and_the_settings_come_back(model, tmp_path, monkeypatch):
    """Four blocks at once on 4 cores: each block's torch, OpenMP and LightGBM steps take 1 thread, not 4 each
    (nor the machine's count, which a thread the pool starts would otherwise get)."""
    import torch
    from threadpoolctl import threadpool_info

    import recsys.threads as threads

    data, uri, _ = model
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    seen: list[tuple[str, int, int, list[int]]] = []
    original = ModelBundle.recommend

    def record(self, *args, **kwargs):
        openmp = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"]
        seen.append((threading.current_thread().name, torch.get_num_threads(), threads.block_threads(), openmp))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ModelBundle, "recommend", record)
    before = torch.get_num_threads()
    result = _recommend(uri, "--data", str(data), "--k", "6", "--out", str(tmp_path / "recs.parquet"),
                        "--block-size", "8", "--workers", "4")
    assert result.exit_code == 0, result.output
    first, *later = seen
    assert first[2] == 4  # the first block runs alone, on every core
    assert len(later) >= 2 and all(name != first[0] for name, *_ in later)
    assert {(torch_threads, lightgbm) for _, torch_threads, lightgbm, _ in later} == {(1, 1)}
    assert all(openmp and set(openmp) == {1} for *_, openmp in later)
    assert torch.get_num_threads() == before and threads.block_threads() == 4


def test_resume_refuses_other_settings(model, tmp_path, monkeypatch):
    data, uri, _ = model
    out = tmp_path / "recs.parquet"
    monkeypatch.setattr(ModelBundle, "recommend", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert _recommend(uri, "--data", str(data), "--k", "5", "--out", str(out)).exit_code != 0
    monkeypatch.undo()
    other = _recommend(uri, "--data", str(data), "--k", "9", "--out", str(out), "--resume")
    assert other.exit_code == 1 and "k: 5 then, 9 now" in other.output and not out.exists()


def _crash_after(monkeypatch, blocks: int, error: BaseException | None = None) -> dict[str, int]:
    """ModelBundle.recommend dies (as a kill would end it, or with ``error``) once ``blocks`` blocks are scored;
    the count of its calls."""
    calls = {"n": 0}
    original = ModelBundle.recommend

    def crash(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > blocks:
            raise error if error is not None else KeyboardInterrupt("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ModelBundle, "recommend", crash)
    return calls


def test_resume_refuses_when_the_alias_moved_or_the_data_changed(model, tmp_path, monkeypatch):
    """The manifest pins the version the alias named and the data's bytes, not the alias."""
    data, uri, _ = model
    client = mlflow.MlflowClient(uri, uri)
    name = "resume_pins"
    client.create_registered_model(name)
    source = client.get_model_version("recsys", "1")
    for _ in range(2):
        client.create_model_version(name, source.source, run_id=source.run_id)
    client.set_registered_model_alias(name, "live", "1")
    out, live = tmp_path / "recs.parquet", f"models:/{name}@live"
    args = ["recommend", "--model", live, "--tracking-uri", uri, "--data", str(data), "--k", "5", "--out", str(out),
            "--block-size", "16"]
    _crash_after(monkeypatch, 2)
    assert CliRunner().invoke(cli, args).exit_code != 0
    monkeypatch.undo()
    manifest = json.loads((parts_folder(out) / "manifest.json").read_text())
    assert manifest["model"] == f"models:/{name}/1" and manifest["model_requested"] == live
    client.set_registered_model_alias(name, "live", "2")  # the alias moves while the export is unfinished
    moved = CliRunner().invoke(cli, [*args, "--resume"])
    assert moved.exit_code == 1 and f"models:/{name}/1\" then, \"models:/{name}/2\" now" in moved.output
    assert not out.exists() and len(list(parts_folder(out).glob("part-*"))) == 2  # nothing of v2 mixed in
    client.set_registered_model_alias(name, "live", "1")
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    events = pl.read_parquet(copy / "interactions.parquet")
    events.head(events.height - 1).write_parquet(copy / "interactions.parquet")  # one event fewer
    changed = CliRunner().invoke(cli, [*args[:5], "--data", str(copy), *args[7:], "--resume"])
    assert changed.exit_code == 1 and "interactions_sha256" in changed.output
    same = CliRunner().invoke(cli, [*args, "--resume"])  # the alias is back on v1, the data as it was
    assert same.exit_code == 0 and "2 resumed" in same.output, same.output


def test_a_second_export_to_the_same_file_is_refused_while_the_first_runs(model, tmp_path, monkeypatch):
    """Two exports to one --out would share its parts: the second stops at once, the first finishes alone."""
    data, uri, _ = model
    out = tmp_path / "recs.parquet"
    started, go_on = threading.Event(), threading.Event()
    original = ModelBundle.recommend

    def slow(self, *args, **kwargs):
        started.set()
        go_on.wait(60)
        return original(self, *args, **kwargs)

    found = load_export_inputs(CHAMPION, data, out, tracking_uri=uri)
    monkeypatch.setattr(ModelBundle, "recommend", slow)
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(
        summary=export_recommendations(found.bundle, found.users, out, ExportConfig(k=5, block_size=64),
                                       show_progress=False, model=found.model, inputs=found.pins)))
    worker.start()
    assert started.wait(60)
    with pytest.raises(RecsysError, match="another export is writing"):
        export_recommendations(found.bundle, found.users, out, ExportConfig(k=3), show_progress=False,
                               model=found.model)
    second = _recommend(uri, "--data", str(data), "--k", "3", "--out", str(out))
    assert second.exit_code == 1 and "another export is writing" in second.output
    assert "Traceback" not in second.output
    go_on.set()
    worker.join(120)
    recs = pl.read_parquet(out)
    assert first["summary"].resumed_blocks == 0 and recs.group_by("user_id").len()["len"].unique().to_list() == [5]
    assert not parts_folder(out).exists() and not list(tmp_path.glob(".recs.parquet.*tmp"))
    assert not (tmp_path / ".recs.parquet.lock").exists()  # removed by the run that held it


def test_a_killed_runs_temporary_file_is_removed_by_the_next_export(model, tmp_path):
    data, uri, _ = model
    out = tmp_path / "recs.parquet"
    stale = [tmp_path / ".recs.parquet.tmp", tmp_path / ".recs.parquet.x1y2.tmp"]
    for path in stale:
        path.write_bytes(b"half a parquet file")
    assert _recommend(uri, "--data", str(data), "--k", "3", "--out", str(out)).exit_code == 0
    assert not any(path.exists() for path in stale) and pl.read_parquet(out).height > 0


def test_row_count_check_catches_a_short_list(model, tmp_path, monkeypatch):
    data, uri, _ = model
    original = ModelBundle.recommend
    monkeypatch.setattr(ModelBundle, "recommend", lambda self, *a, **k: original(self, *a, **k).slice(1))
    out = tmp_path / "recs.parquet"
    result = _recommend(uri, "--data", str(data), "--k", "5", "--out", str(out))
    assert result.exit_code == 1 and "row-count check failed" in result.output
    assert not out.exists()


def test_users_file_limits_the_export(model, tmp_path):
    data, uri, _ = model
    users = tmp_path / "users.txt"
    picked = pl.read_parquet(data / "interactions.parquet")["user_id"].unique().sort().head(4).to_list()
    users.write_text("\n".join(picked) + "\n")
    out = tmp_path / "recs.parquet"
    result = _recommend(uri, "--data", str(data), "--k", "3", "--out", str(out), "--users", str(users))
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out)["user_id"].unique(maintain_order=True).to_list() == picked


def _new_items(data, tmp_path, twin_of: str) -> tuple:
    items = pl.read_parquet(data / "items.parquet")
    twin = items.filter(pl.col("item_id") == twin_of).with_columns(pl.lit("new-twin").alias("item_id"))
    fresh = items.head(2).with_columns(pl.Series("item_id", ["new-a", "new-b"]),
                                       pl.Series("title", ["Quantum gardening notes", "Ancient jazz tomatoes"]))
    path = tmp_path / "new_items.parquet"
    pl.concat([twin, fresh]).write_parquet(path)
    return path, items


def test_new_items_are_encoded_and_compete_without_retraining(model, tmp_path):
    data, uri, _ = model
    path, items = _new_items(data, tmp_path, twin_of="i0005")
    bundle = load_registered(CHAMPION, uri)
    grown = bundle.with_new_items(pl.read_parquet(path))
    assert grown.n_items == items.height + 3
    text = grown.state.models["text"]
    index = {item: i for i, item in enumerate(grown.item_ids)}
    np.testing.assert_allclose(text.item_vectors_[index["new-twin"]].numpy(),
                               text.item_vectors_[index["i0005"]].numpy(), atol=1e-5)
    assert grown.state.cold[-3:].all()
    out = tmp_path / "recs.parquet"
    result = _recommend(uri, "--data", str(data), "--k", "20", "--out", str(out), "--new-items", str(path),
                        "--cold-slots", "4")
    assert result.exit_code == 0, result.output
    recs = pl.read_parquet(out)
    shown = recs.filter(pl.col("item_id").str.starts_with("new-"))
    assert shown["user_id"].n_unique() > 0 and shown["rank"].min() >= 17  # the quota's end-of-page slots
    assert recs.group_by("user_id").len()["len"].unique().to_list() == [20]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "models:/recsys@nobody"], "has no alias 'nobody'"),
    (["--model", "models:/unregistered@champion"], "no registered model 'unregistered'"),
    (["--model", "models:/recsys/42"], "has no version '42'"),
    (["--model", "not-a-uri://x"], "cannot load model"),
    (["--k", "0"], "k must be between 1 and 10000"),
    (["--k", "20000"], "k must be between 1 and 10000"),
])
def test_bad_model_or_k_is_a_clear_error_and_writes_nothing(model, tmp_path, args, message):
    data, uri, _ = model
    out = tmp_path / "recs.parquet"
    base = ["recommend", "--model", CHAMPION, "--tracking-uri", uri, "--data", str(data), "--out", str(out), "--k", "5"]
    result = CliRunner().invoke(cli, base + args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not out.exists() and not parts_folder(out).exists()


def test_bad_users_or_new_items_files_are_clear_errors(model, tmp_path):
    data, uri, _ = model
    out = tmp_path / "recs.parquet"
    users = tmp_path / "users.csv"
    pl.DataFrame({"user_id": ["u0001", "ghost-1", "ghost-2"]}).write_csv(users)
    result = _recommend(uri, "--data", str(data), "--out", str(out), "--users", str(users))
    assert result.exit_code == 1 and "2 user ids are neither known" in result.output and "ghost-1" in result.output
    broken = tmp_path / "new.csv"
    pl.DataFrame({"item_id": ["n1", "n1"], "title": ["A", "B"]}).write_csv(broken)
    result = _recommend(uri, "--data", str(data), "--out", str(out), "--new-items", str(broken))
    assert result.exit_code == 1 and "duplicate item id" in result.output and "new.csv" in result.output
    clash = tmp_path / "clash.csv"
    pl.DataFrame({"item_id": ["i0001"], "title": ["Again"]}).write_csv(clash)
    result = _recommend(uri, "--data", str(data), "--out", str(out), "--new-items", str(clash))
    assert result.exit_code == 1 and "already in the model's catalogue" in result.output
    assert not out.exists() and not parts_folder(out).exists()


def test_the_bundle_indexes_a_log_and_counts_what_it_does_not_know(model):
    data, uri, _ = model
    bundle = load_registered(CHAMPION, uri)
    log = pl.read_parquet(data / "interactions.parquet").head(50)
    stranger = log.head(3).with_columns(pl.lit("stranger").alias("user_id"))
    odd_item = log.head(2).with_columns(pl.lit("no-such-item").alias("item_id"))
    both = log.head(1).with_columns(pl.lit("stranger").alias("user_id"), pl.lit("no-such-item").alias("item_id"))
    indexed, unknown_items, unknown_users = bundle.index(pl.concat([log, stranger, odd_item, both]))
    assert (unknown_items, unknown_users) == (3, 3)  # a row naming neither counts once, as an unknown item
    assert indexed.columns == ["user_idx", "item_idx", "timestamp", "event", "impression_id"]  # no string ids
    assert indexed.height == log.height
    assert bundle.user_ids[indexed["user_idx"].to_numpy()].astype(str).tolist() == log["user_id"].to_list()
    assert bundle.item_ids[indexed["item_idx"].to_numpy()].astype(str).tolist() == log["item_id"].to_list()
    assert indexed["timestamp"].to_list() == log["timestamp"].to_list()


def test_the_summary_tells_the_first_block_from_the_rate_after_it(model, tmp_path):
    """The first block builds the indexes alone; the rate after it is what a longer export runs at."""
    data, uri, _ = model
    out = tmp_path / "recs.parquet"
    found = load_export_inputs(CHAMPION, data, out, tracking_uri=uri)
    summary = export_recommendations(found.bundle, found.users, out, ExportConfig(k=5, block_size=64),
                                     show_progress=False, model=found.model, inputs=found.pins)
    assert summary.blocks == -(-len(found.users) // 64) > 2
    assert summary.later_users == len(found.users) - 64
    assert 0 < summary.first_block_s < summary.seconds and 0 < summary.later_s < summary.seconds
    assert summary.steady_users_per_s == pytest.approx(summary.later_users / summary.later_s)
    assert f"{summary.steady_users_per_s:,.0f} users/s after a first block of" in summary.render()
    alone = export_recommendations(found.bundle, found.users[:10], tmp_path / "ten.parquet",
                                   ExportConfig(k=5, block_size=64), show_progress=False)
    assert alone.later_users == 0 and alone.steady_users_per_s is None and "after a first" not in alone.render()
