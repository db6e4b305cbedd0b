"""Atomic writes: a failed write leaves the previous file intact and no temporary behind."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.io import write_parquet_atomic


def test_write_replaces_the_file(tmp_path):
    target = tmp_path / "sub" / "t.parquet"
    write_parquet_atomic(pl.DataFrame({"a": [1]}), target)
    write_parquet_atomic(pl.DataFrame({"a": [2, 3]}), target)
    assert pl.read_parquet(target)["a"].to_list() == [2, 3]
    assert [p.name for p in target.parent.iterdir()] == ["t.parquet"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "t.parquet"
    write_parquet_atomic(pl.DataFrame({"a": [1]}), target)

    def half_write(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"PAR1 half")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_write)
    with pytest.raises(KeyboardInterrupt):
        write_parquet_atomic(pl.DataFrame({"a": [9]}), target)
    monkeypatch.undo()
    assert pl.read_parquet(target)["a"].to_list() == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
