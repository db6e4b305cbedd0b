"""Tests of the ``recsys demo`` and ``recsys data synth | validate | split`` commands.

They drive the real library functions through click's ``CliRunner`` on small generated data,
then check the files written and the numbers printed against the data itself.
"""

from __future__ import annotations

import json
import logging
import re

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from features.split import SplitConfig, temporal_split
from recsys import contract as C
from recsys.cli import cli
from recsys.datasets import SPLIT_FILE
from training.demo import DEMO_K, PENDING_STAGES


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """The CLI configures the root logger for its (captured) stderr; undo that after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _summary_count(output: str, name: str) -> int:
    """The number on a ``name  1,234`` line of ``DatasetSummary.render``."""
    found = re.search(rf"^{re.escape(name)}\s+([\d,]+)\s*$", output, flags=re.MULTILINE)
    assert found is not None, f"no {name!r} line in:\n{output}"
    return int(found.group(1).replace(",", ""))


def _table_rows(output: str) -> dict[str, int]:
    """Window -> rows, read from the printed ``split_summary`` table."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"│ (train|valid|test)\s+┆\s+(\d+)\s+┆", output)}


def test_demo_writes_the_data_and_prints_summary_split_and_pending_stages(tmp_path, tiny_bert_dir):
    out = tmp_path / "demo"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _invoke("demo", "--out", str(out), "--tracking-uri", uri, "--text-model", str(tiny_bert_dir),
                     "--text-mode", "lora")
    assert result.exit_code == 0, result.output
    for name in (C.ITEMS_FILE, C.INTERACTIONS_FILE, SPLIT_FILE, "report/report.html", "report/results.json"):
        assert (out / name).is_file(), name

    items = pl.read_parquet(out / C.ITEMS_FILE)
    inter = pl.read_parquet(out / C.INTERACTIONS_FILE)
    split = pl.read_parquet(out / SPLIT_FILE)
    assert _summary_count(result.output, "users") == inter[C.USER_ID].n_unique() == 400
    assert _summary_count(result.output, "items") == items.height
    assert _summary_count(result.output, "interactions") == inter.height
    assert re.search(r"^items with a description\s+\d+\.\d%$", result.output, flags=re.MULTILINE)

    assert "split (global 80/10/10):" in result.output
    counts = dict(split.group_by(C.SPLIT).len().iter_rows())
    assert _table_rows(result.output) == counts
    assert set(counts) == {C.TRAIN, C.VALID, C.TEST}
    assert split.height == inter.height
    assert f"labelled interactions: {out / SPLIT_FILE}" in result.output
    # the ranked pipeline was trained and evaluated beside its ablations, zero-shot and every baseline
    payload = json.loads((out / "report" / "results.json").read_text())
    assert {r["model"] for r in payload["rows"]} >= {"pipeline", "pipeline_no_text", "pipeline_no_cf", "text_alone",
                                                     "lightfm_alone", "zero_shot", "random", "popularity", "ease",
                                                     "lightfm", "als", "itemknn"}
    assert f"browse with: mlflow ui --backend-store-uri {uri}" in result.output
    assert re.search(r"│ ease\s+┆ 0\.\d{4} \[", result.output)
    assert ("not in this build yet: " + "; ".join(PENDING_STAGES) in result.output.splitlines()) == bool(
        PENDING_STAGES)
    # the pipeline was registered, promoted (first version) and exported for every user from the registry
    assert "registered models:/recsys/1 (alias challenger)" in result.output
    assert "no champion yet; -> champion = version 1" in result.output
    recs = pl.read_parquet(out / "recs.parquet")
    assert recs.height == DEMO_K * inter[C.USER_ID].n_unique()
    assert recs.join(inter.filter(pl.col(C.EVENT) != "impression").select(C.USER_ID, C.ITEM_ID).unique(),
                     on=[C.USER_ID, C.ITEM_ID]).height == 0  # nothing a user already clicked or bought
    assert "batch export of the champion: wrote" in result.output and "top 5 of user" in result.output
    assert "Traceback" not in result.output


def test_synth_then_validate_then_split(tmp_path):
    data = tmp_path / "synth"
    result = _invoke("data", "synth", "--out", str(data), "--users", "12", "--items", "20", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert f"wrote {data / C.ITEMS_FILE} and {data / C.INTERACTIONS_FILE}" in result.output

    result = _invoke("data", "validate", "--data", str(data))
    assert result.exit_code == 0, result.output
    inter = pl.read_parquet(data / C.INTERACTIONS_FILE)
    assert _summary_count(result.output, "users") == inter[C.USER_ID].n_unique() == 12
    assert _summary_count(result.output, "items") == 20
    assert _summary_count(result.output, "interactions") == inter.height

    result = _invoke("data", "split", "--data", str(data), "--mode", "per-user", "--valid", "0.1", "--test", "0.2")
    assert result.exit_code == 0, result.output
    assert f"wrote {data / SPLIT_FILE}" in result.output
    written = pl.read_parquet(data / SPLIT_FILE)
    assert C.SPLIT in written.columns
    # the command writes exactly what the library gives for the same settings
    expected = temporal_split(inter, SplitConfig(mode="per-user", valid=0.1, test=0.2)).collect()
    assert_frame_equal(written, expected)
    # every window is printed, an empty one (few events per user here) with zero rows
    assert _table_rows(result.output) == {C.TRAIN: 0, C.VALID: 0, C.TEST: 0} | dict(
        written.group_by(C.SPLIT).len().iter_rows())


def test_split_with_bad_fractions_exits_1_naming_the_options(tmp_path):
    data = tmp_path / "synth"
    assert _invoke("data", "synth", "--out", str(data), "--users", "5", "--items", "10").exit_code == 0
    result = _invoke("data", "split", "--data", str(data), "--valid", "0.9", "--test", "0.5")
    assert result.exit_code == 1
    assert "--valid" in result.output and "--test" in result.output
    assert "got valid=0.9, test=0.5" in result.output
    assert "Traceback" not in result.output
    assert not (data / SPLIT_FILE).exists()


def test_validate_of_a_missing_folder_exits_1_without_traceback(tmp_path):
    result = _invoke("data", "validate", "--data", str(tmp_path / "nowhere"))
    assert result.exit_code == 1
    assert "data folder not found" in result.output
    assert "Traceback" not in result.output
