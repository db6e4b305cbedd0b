"""A dataset folder is written as a whole: a kill at any moment leaves the old dataset or the new one, never a mix."""

from __future__ import annotations

import os

import polars as pl
import pytest
from click.testing import CliRunner

from recsys import contract as C
from recsys.cli import cli
from recsys.errors import DataContractError
from recsys.io import DatasetPaths, load_dataset, recover_dataset_folder, write_dataset_folder


def _synth(out, seed: int):
    result = CliRunner().invoke(cli, ["data", "synth", "--out", str(out), "--users", "12", "--items", "15",
                                      "--seed", str(seed)])
    assert result.exit_code == 0, result.output
    return load_dataset(DatasetPaths.from_dir(out))


def _same(a, b) -> bool:
    return a.items.equals(b.items) and a.interactions.equals(b.interactions)


def test_a_write_killed_midway_leaves_the_old_dataset_whole(tmp_path, monkeypatch):
    out = tmp_path / "data"
    old = _synth(out, seed=0)
    (out / "reports").mkdir()
    (out / "reports" / "note.txt").write_text("kept")
    calls = {"n": 0}
    original = pl.DataFrame.write_parquet

    def killed_on_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # items written, interactions not yet: the moment that used to tear the folder
            raise KeyboardInterrupt("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        _synth_direct(out, seed=1)
    monkeypatch.undo()
    assert _same(load_dataset(DatasetPaths.from_dir(out)), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging folder, no orphan .tmp


def _synth_direct(out, seed: int) -> None:
    from recsys.datasets import write_synthetic
    from recsys.synthetic import SyntheticConfig

    write_synthetic(out, SyntheticConfig(n_users=12, n_items=15, seed=seed))


def test_what_a_hard_kill_leaves_is_finished_or_undone_on_the_next_start(tmp_path):
    out = tmp_path / "data"
    old = _synth(out, seed=0)
    # killed (no cleanup ran) while writing: a staging folder with half a table
    staging = tmp_path / ".data.writing-abc123"
    staging.mkdir()
    (staging / C.ITEMS_FILE).write_bytes(b"PAR1 half")
    # killed between the two renames: the old dataset aside, no folder at --out
    os.rename(out, tmp_path / ".data.replaced-def456")
    assert _same(load_dataset(DatasetPaths.from_dir(out)), old)  # a reader restores it, and clears the staging
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    staging.mkdir()
    new = _synth(out, seed=1)  # a write clears a staging folder first too
    assert not _same(new, old) and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    # killed after both renames: the new dataset in place, the old one (with a report) still aside
    aside = tmp_path / ".data.replaced-ghi789"
    aside.mkdir()
    (aside / C.ITEMS_FILE).write_bytes(b"old")
    (aside / "reports").mkdir()
    recover_dataset_folder(out)
    assert (out / "reports").is_dir() and not aside.exists() and _same(load_dataset(DatasetPaths.from_dir(out)), new)


def test_a_new_import_replaces_the_tables_and_keeps_the_rest(tmp_path):
    out = tmp_path / "data"
    _synth(out, seed=0)
    (out / "reports").mkdir()
    pl.read_parquet(out / C.ITEMS_FILE).write_ndjson(out / "items.jsonl")  # another format of a table: replaced too
    os.remove(out / C.ITEMS_FILE)
    new = _synth(out, seed=1)
    assert sorted(p.name for p in out.iterdir()) == [C.INTERACTIONS_FILE, C.ITEMS_FILE, "reports"]
    assert new.items.height == 15


def test_a_folder_that_is_not_the_datasets_own_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataContractError, match="give the dataset a folder of its own"):
        write_dataset_folder({C.ITEMS_FILE: pl.DataFrame({"a": [1]})}, ".")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataContractError, match="is a file"):
        write_dataset_folder({C.ITEMS_FILE: pl.DataFrame({"a": [1]})}, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
