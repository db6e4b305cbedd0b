"""MicroLens importer: tiny files written literally in the published formats (TSV pairs, CRLF titles CSV)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from features.split import SplitConfig, temporal_split
from recsys import contract as C
from recsys.cli import cli
from recsys.errors import DataContractError
from recsys.importers import import_dataset
from recsys.importers.microlens import SYNTHETIC_EPOCH, import_microlens
from recsys.io import DatasetPaths, validate_dataset

# user_id<TAB>items oldest first; item 99 has no title; user 3 repeats nothing and is the shortest.
PAIRS = (
    "1\t20 3 17 5\n"
    "2\t3 99 20\n"
    "3\t17\n"
)
# header item,title; RFC-4180 quotes around commas, a doubled quote and a line break; CRLF line ends.
TITLES = (
    "item,title\n"
    '3,"Cat vs cucumber, round two #funny #cat"\n'
    '5,"He said ""no"" #prank"\n'
    '17,"Street food in Xi\'an,\nspicy noodles #food"\n'
    "20,Sunset timelapse\n"
    "21,Never clicked #orphan\n"
).replace("\n", "\r\n")


def _write(folder: Path, pairs: str = PAIRS, titles: str = TITLES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MicroLens-50k_pairs.tsv").write_bytes(pairs.encode("utf-8"))
    (folder / "MicroLens-50k_titles.csv").write_bytes(titles.encode("utf-8"))
    return folder


@pytest.fixture
def microlens(tmp_path: Path) -> Path:
    return _write(tmp_path / "microlens-50k")


def _at(seconds: int) -> datetime:
    return SYNTHETIC_EPOCH + timedelta(seconds=seconds)


def test_every_pair_is_a_click_dated_by_its_position_in_the_user_history(microlens):
    inter = import_microlens(microlens).interactions
    assert set(inter[C.EVENT]) == {C.CLICK}
    assert inter[C.IMPRESSION_ID].null_count() == inter[C.RATING].null_count() == inter.height == 7
    by_user = {u: rows.sort(C.TS).select(C.ITEM_ID, C.TS).rows()
               for (u,), rows in inter.group_by(C.USER_ID)}
    assert by_user == {
        "1": [("20", _at(0)), ("3", _at(1)), ("17", _at(2)), ("5", _at(3))],
        # 99 has no title: dropped, and its position stays empty so 20 is still the third click.
        "2": [("3", _at(0)), ("20", _at(2))],
        "3": [("17", _at(0))],
    }


def test_items_get_the_title_as_text(microlens):
    items = import_microlens(microlens).items.sort(pl.col(C.ITEM_ID).cast(pl.Int64))
    assert items[C.ITEM_ID].to_list() == ["3", "5", "17", "20", "21"]
    assert items[C.TITLE].to_list() == ["Cat vs cucumber, round two #funny #cat", 'He said "no" #prank',
                                        "Street food in Xi'an,\r\nspicy noodles #food", "Sunset timelapse",
                                        "Never clicked #orphan"]
    assert items[C.DESCRIPTION].null_count() == 5
    assert items[C.TAGS].to_list() == [[]] * 5


def test_count_check_accounts_for_every_line_pair_and_title(tmp_path):
    pairs = PAIRS + "\n4\t99\n5\t\n"  # a blank line, a user whose only item is unknown, one with no items
    titles = TITLES + '20,"a second copy"\r\n22,""\r\n,"no id"\r\n'
    data = import_microlens(_write(tmp_path / "m", pairs, titles))
    by_file = {s.file: (s.rows_in, s.rows_out, s.dropped) for s in data.report.sources}
    assert by_file == {
        "MicroLens-50k_titles.csv": (8, 5, {"duplicate item id (first titled copy kept)": 1, "empty title": 1,
                                            "missing item id": 1}),
        "MicroLens-50k_pairs.tsv (lines)": (6, 3, {"blank line": 1, "user has no items": 1,
                                                   "item not in the titles file": 1}),
        "MicroLens-50k_pairs.tsv (pairs)": (9, 7, {"item not in the titles file": 2}),
    }
    data.report.check()
    assert data.items.filter(pl.col(C.ITEM_ID) == "20")[C.TITLE].to_list() == ["Sunset timelapse"]


def test_import_dataset_writes_contract_tables_that_validate_and_split_per_user(microlens, tmp_path):
    out = tmp_path / "out"
    report = import_dataset("microlens", microlens, out)
    assert report.tables == {C.ITEMS_FILE: 5, C.INTERACTIONS_FILE: 7}
    assert sorted(p.name for p in out.iterdir()) == [C.INTERACTIONS_FILE, C.ITEMS_FILE]
    checked, data = validate_dataset(DatasetPaths.from_dir(out))
    assert checked.ok and not checked.problems
    assert data.interactions.schema[C.TS] == C.DATETIME
    split = temporal_split(data.interactions, SplitConfig(mode="per-user", valid=0.0, test=0.25)).collect()
    user1 = split.filter(pl.col(C.USER_ID) == "1").sort(C.TS)
    assert user1.select(C.ITEM_ID, C.SPLIT).rows() == [("20", C.TRAIN), ("3", C.TRAIN), ("17", C.TRAIN),
                                                       ("5", C.TEST)]


def test_cli_import_prints_the_count_check_and_validate_passes(microlens, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "import", "microlens", str(microlens), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "MicroLens-50k_pairs.tsv (pairs): 8 rows in, 7 used, 1 dropped (item not in the titles file)" \
        in result.output
    assert "interactions.parquet 7 rows" in result.output
    assert "time across users is not meaningful" in result.output
    result = runner.invoke(cli, ["data", "validate", "--data", str(out)])
    assert result.exit_code == 0, result.output
    assert "interactions                 7" in result.output


@pytest.mark.parametrize(("pairs", "match"), [
    ("1\t20 3\n2 20 3\n", r"_pairs\.tsv: line 2 does not have 2 tab-separated fields \(user_id, items\)"),
    ("1\t20\n\t3\n", r"_pairs\.tsv: line 2 field user_id is empty"),
    ("1\t20\t3\n", r"_pairs\.tsv: line 1 does not have 2 tab-separated fields"),
    ("\n\n", r"_pairs\.tsv: the file has no user lines"),
])
def test_malformed_pairs_lines_are_named(tmp_path, pairs, match):
    with pytest.raises(DataContractError, match=match):
        import_microlens(_write(tmp_path / "m", pairs=pairs))


def test_non_utf8_pairs_name_the_line(tmp_path):
    folder = _write(tmp_path / "m")
    (folder / "MicroLens-50k_pairs.tsv").write_bytes(b"1\t20\n2\t3 \xe9\n")
    with pytest.raises(DataContractError, match=r"_pairs\.tsv: line 2 is not UTF-8"):
        import_microlens(folder)


def test_bad_titles_header_is_named(tmp_path):
    with pytest.raises(DataContractError, match=r"_titles\.csv: header is 'video_id,name'; expected 'item,title'"):
        import_microlens(_write(tmp_path / "m", titles="video_id,name\r\n3,x\r\n"))


def test_missing_and_ambiguous_files_are_named(tmp_path):
    with pytest.raises(DataContractError, match="MicroLens folder not found"):
        import_microlens(tmp_path / "nothing")
    folder = _write(tmp_path / "m")
    (folder / "MicroLens-50k_titles.csv").unlink()
    with pytest.raises(DataContractError, match=r"no \*_titles\.csv file found"):
        import_microlens(folder)
    _write(folder)
    (folder / "MicroLens-100k_pairs.tsv").write_text(PAIRS)
    with pytest.raises(DataContractError, match=r"several \*_pairs\.tsv files \(MicroLens-100k_pairs\.tsv, "
                                                 r"MicroLens-50k_pairs\.tsv\)"):
        import_microlens(folder)
