"""MIND importer: tiny files written literally in the published (headerless TSV) format."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from recsys import contract as C
from recsys.cli import cli
from recsys.errors import DataContractError
from recsys.importers.base import ImportedDataset, write_dataset
from recsys.importers.mind import import_mind
from recsys.io import DatasetPaths, validate_dataset

# news_id, category, subcategory, title, abstract, url, title_entities, abstract_entities
TRAIN_NEWS = (
    'N1\tnews\tnewsworld\tThe "Big" Storm\tA storm hit the coast.\thttps://assets.msn.com/labs/mind/AA1.html'
    '\t[{"Label": "Storm", "Type": "E", "WikidataId": "Q1", "Confidence": 1.0, "OccurrenceOffsets": [9], '
    '"SurfaceForms": ["Storm"]}]\t[]\n'
    "N2\tsports\tfootball_nfl\tBears win again\t\thttps://assets.msn.com/labs/mind/AA2.html\t[]\t[]\n"
    "N3\tfinance\tmarkets\tStocks rally\tMarkets rose on Friday.\thttps://assets.msn.com/labs/mind/AA3.html"
    "\t[]\t[]\n"
    "N9\tnews\tnewsus\t\tAn abstract without a title.\thttps://assets.msn.com/labs/mind/AA9.html\t[]\t[]\n"
)
DEV_NEWS = (
    'N1\tnews\tnewsworld\tThe "Big" Storm\tA storm hit the coast.\thttps://assets.msn.com/labs/mind/AA1.html'
    "\t[]\t[]\n"
    "N4\tlifestyle\tlifestyleroyals\tA royal visit\tThe queen visited.\thttps://assets.msn.com/labs/mind/AA4.html"
    "\t[]\t[]\n"
)
# impression_id, user_id, time, history, impressions
TRAIN_BEHAVIORS = (
    "1\tU1\t11/11/2019 9:05:58 AM\tN1 N2\tN3-1 N2-0\n"
    "2\tU1\t11/12/2019 3:00:00 PM\tN1 N2\tN4-0 N3-0 N99-1\n"
    "3\tU2\t11/13/2019 10:22:32 AM\t\tN1-1 N9-0\n"
)
DEV_BEHAVIORS = (
    "1\tU1\t11/10/2019 8:00:00 AM\tN2 N1\tN4-1\n"
    "2\tU3\t11/15/2019 12:00:00 PM\tN3\tN99-0\n"
    "3\tU2\t11/15/2019 1:00:00 PM\t\tN98-0\n"
)


def _write(folder: Path, news: str, behaviors: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text(news, encoding="utf-8")
    (folder / "behaviors.tsv").write_text(behaviors, encoding="utf-8")
    return folder


@pytest.fixture()
def mind_two_splits(tmp_path: Path) -> Path:
    src = tmp_path / "mind"
    _write(src / "MINDsmall_train", TRAIN_NEWS, TRAIN_BEHAVIORS)
    _write(src / "MINDsmall_dev", DEV_NEWS, DEV_BEHAVIORS)
    return src


@pytest.fixture()
def mind_data(mind_two_splits: Path) -> ImportedDataset:
    return import_mind(mind_two_splits)


def _events(data: ImportedDataset, event: str, *, from_history: bool = False) -> pl.DataFrame:
    return data.interactions.filter(
        (pl.col(C.EVENT) == event) & (pl.col(C.FROM_HISTORY) == from_history)).sort(C.TS, C.ITEM_ID)


def test_items_are_deduplicated_news_with_titles(mind_data: ImportedDataset) -> None:
    items = mind_data.items.sort(C.ITEM_ID)
    assert items.schema == pl.Schema(C.ITEM_SCHEMA)
    assert items[C.ITEM_ID].to_list() == ["N1", "N2", "N3", "N4"]  # N1 once, N9 (no title) dropped
    n1, n2 = items.row(0, named=True), items.row(1, named=True)
    assert n1[C.TITLE] == 'The "Big" Storm'  # quotes kept: the file is read with quoting disabled
    assert n1[C.DESCRIPTION] == "A storm hit the coast."
    assert (n1[C.CATEGORY], n1[C.TAGS], n1[C.PUBLISHED_AT]) == ("news", ["newsworld"], None)
    assert n2[C.DESCRIPTION] is None  # empty abstract
    assert n2[C.TAGS] == ["football_nfl"]


def test_impressions_and_clicks_carry_time_and_prefixed_impression_id(mind_data: ImportedDataset) -> None:
    assert mind_data.interactions.schema == pl.Schema(C.INTERACTION_SCHEMA)
    shown = _events(mind_data, C.IMPRESSION)
    assert shown.height == 6  # 7 + 3 shown items, less N99 x2, N98 (unknown) and N9 (untitled)
    clicks = _events(mind_data, C.CLICK)
    assert clicks.select(C.USER_ID, C.ITEM_ID, C.TS, C.IMPRESSION_ID).rows() == [
        ("U1", "N4", datetime(2019, 11, 10, 8, 0, 0), "MINDsmall_dev/1"),
        ("U1", "N3", datetime(2019, 11, 11, 9, 5, 58), "MINDsmall_train/1"),
        ("U2", "N1", datetime(2019, 11, 13, 10, 22, 32), "MINDsmall_train/3"),
    ]
    afternoon = shown.filter(pl.col(C.IMPRESSION_ID) == "MINDsmall_train/2")
    assert afternoon[C.ITEM_ID].sort().to_list() == ["N3", "N4"]
    assert afternoon[C.TS].unique().to_list() == [datetime(2019, 11, 12, 15, 0, 0)]  # 3:00:00 PM
    assert mind_data.interactions[C.RATING].null_count() == mind_data.interactions.height


def test_history_clicks_are_deduplicated_and_dated_before_first_impression(mind_data: ImportedDataset) -> None:
    history = _events(mind_data, C.CLICK, from_history=True)
    # U1 lists N1 N2 on three lines; the earliest (dev, 11/10 8:00:00 AM) dates both clicks.
    assert history.select(C.USER_ID, C.ITEM_ID, C.TS).sort(C.USER_ID, C.ITEM_ID).rows() == [
        ("U1", "N1", datetime(2019, 11, 10, 7, 59, 59)),
        ("U1", "N2", datetime(2019, 11, 10, 7, 59, 59)),
        ("U3", "N3", datetime(2019, 11, 15, 11, 59, 59)),
    ]
    assert history[C.IMPRESSION_ID].null_count() == 3
    assert mind_data.interactions.height == 6 + 3 + 3


def test_report_accounts_for_every_line_shown_item_and_history_entry(mind_data: ImportedDataset) -> None:
    report = mind_data.report
    report.check()
    by_file = {s.file: s for s in report.sources}
    assert all(s.balanced for s in report.sources)
    expected = {
        # Splits are read in name order, so dev's N1 comes first and train's is the duplicate.
        "MINDsmall_dev/news.tsv": (2, 2, {}),
        "MINDsmall_train/news.tsv": (4, 2, {"news has no title": 1, "news id already read (duplicate)": 1}),
        "MINDsmall_dev/behaviors.tsv": (3, 2, {"news id not in news.tsv": 1}),
        "MINDsmall_train/behaviors.tsv": (3, 3, {}),
        "MINDsmall_dev/behaviors.tsv (shown items)": (3, 1, {"news id not in news.tsv": 2}),
        "MINDsmall_train/behaviors.tsv (shown items)": (7, 5, {"news has no title": 1,
                                                               "news id not in news.tsv": 1}),
        "MINDsmall_dev/behaviors.tsv (history entries)": (3, 3, {}),
        # Both of U1's history items were credited to the earlier dev line.
        "MINDsmall_train/behaviors.tsv (history entries)": (
            4, 0, {"history entry repeated (one click kept per user and item)": 4}),
    }
    assert {f: (s.rows_in, s.rows_out, s.dropped) for f, s in by_file.items()} == expected
    assert report.tables == {C.ITEMS_FILE: 4, C.INTERACTIONS_FILE: 12}
    assert "click 3, click (from history) 3, impression 6" in report.render()


def test_written_dataset_meets_the_contract(mind_data: ImportedDataset, tmp_path: Path) -> None:
    write_dataset(mind_data, tmp_path / "out")
    report, dataset = validate_dataset(DatasetPaths.from_dir(tmp_path / "out"))
    assert report.ok, report.render()
    assert dataset is not None and dataset.interactions.height == 12


def test_flat_folder_keeps_impression_ids_and_skips_blank_lines(tmp_path: Path) -> None:
    src = _write(tmp_path / "MINDsmall_train", TRAIN_NEWS + DEV_NEWS, TRAIN_BEHAVIORS + "\n")
    data = import_mind(src)
    assert sorted(data.interactions[C.IMPRESSION_ID].drop_nulls().unique().to_list()) == ["1", "2", "3"]
    lines = next(s for s in data.report.sources if s.file == "behaviors.tsv")
    assert (lines.rows_in, lines.rows_out, lines.dropped) == (4, 3, {"blank line": 1})
    write_dataset(data, tmp_path / "out")
    assert validate_dataset(DatasetPaths.from_dir(tmp_path / "out"))[0].ok


def test_test_split_without_labels_keeps_history_only(tmp_path: Path) -> None:
    src = _write(tmp_path / "MINDlarge_test", TRAIN_NEWS, "1\tU7\t11/16/2019 9:00:00 AM\tN1\tN2 N3\n")
    data = import_mind(src)
    assert data.interactions.select(C.ITEM_ID, C.EVENT, C.FROM_HISTORY).rows() == [("N1", C.CLICK, True)]
    shown = next(s for s in data.report.sources if s.file == "behaviors.tsv (shown items)")
    assert shown.dropped == {"shown item has no click label (MIND test split)": 2}


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="MIND folder not found"):
        import_mind(tmp_path / "nope")


def test_folder_without_mind_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataContractError, match="no MIND files found; expected behaviors.tsv and news.tsv"):
        import_mind(tmp_path / "empty")


def test_missing_news_file(tmp_path: Path) -> None:
    src = tmp_path / "mind"
    _write(src / "MINDsmall_train", TRAIN_NEWS, TRAIN_BEHAVIORS)
    (src / "MINDsmall_dev").mkdir()
    (src / "MINDsmall_dev" / "behaviors.tsv").write_text(DEV_BEHAVIORS)
    with pytest.raises(DataContractError, match=r"MINDsmall_dev: missing news\.tsv"):
        import_mind(src)


def test_garbled_behaviors_names_the_line(tmp_path: Path) -> None:
    garbled = TRAIN_BEHAVIORS + "4\tU2\tyesterday\tN1\tN2-0\n" + "5\tU2\n"
    src = _write(tmp_path / "mind", TRAIN_NEWS, garbled)
    with pytest.raises(DataContractError, match=r"behaviors\.tsv: 2 malformed line\(s\), e\.g\. line 4, 5"):
        import_mind(src)


def test_garbled_news_cannot_be_parsed(tmp_path: Path) -> None:
    src = _write(tmp_path / "mind", TRAIN_NEWS + "N5\ta\tb\tc\td\te\tf\tg\th\ti\n", TRAIN_BEHAVIORS)
    with pytest.raises(DataContractError, match=r"news\.tsv: cannot be parsed .*expected 8 tab-separated"):
        import_mind(src)


def test_binary_behaviors_file(tmp_path: Path) -> None:
    src = _write(tmp_path / "mind", TRAIN_NEWS, "")
    (src / "behaviors.tsv").write_bytes(b"\x1f\x8b\x08\x00\xff\xfe\x00garbage\n")
    with pytest.raises(DataContractError, match=r"behaviors\.tsv: cannot be parsed"):
        import_mind(src)


# Titles and abstracts with HTML tags and entities; N3's title is only a tag cut before its ">".
MARKUP_NEWS = (
    "N1\tnews\tnewsworld\t<b>Storm</b> hits &amp; floods the coast\tIt&#8217;s the worst in&nbsp;years.<br/>More"
    "\thttps://assets.msn.com/labs/mind/AA1.html\t[]\t[]\n"
    "N2\tsports\tfootball_nfl\tBears win &quot;again&quot;\t\thttps://assets.msn.com/labs/mind/AA2.html\t[]\t[]\n"
    'N3\tnews\tnewsus\t<span class="headline"\tAn abstract under a broken title.'
    "\thttps://assets.msn.com/labs/mind/AA3.html\t[]\t[]\n"
    "N4\tfinance\tmarkets\tStocks rally\t<p>Markets rose on Friday.</p>\thttps://assets.msn.com/labs/mind/AA4.html"
    "\t[]\t[]\n"
    "N5\tfinance\tmarkets\tThe \"Big\" Rally\tPlain text.\thttps://assets.msn.com/labs/mind/AA5.html\t[]\t[]\n"
)


def test_cli_import_cleans_markup_in_titles_and_abstracts_and_counts_it(tmp_path: Path) -> None:
    src = _write(tmp_path / "mind", MARKUP_NEWS, "1\tU1\t11/11/2019 9:05:58 AM\tN4\tN1-1 N2-0 N3-0 N5-0\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["data", "import", "mind", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    items = {r[C.ITEM_ID]: r for r in pl.read_parquet(out / C.ITEMS_FILE).iter_rows(named=True)}
    assert sorted(items) == ["N1", "N2", "N4", "N5"]  # N3's title was only markup: no title
    assert items["N1"][C.TITLE] == "Storm hits & floods the coast"
    assert items["N1"][C.DESCRIPTION] == "It\u2019s the worst in years. More"
    assert (items["N2"][C.TITLE], items["N2"][C.DESCRIPTION]) == ('Bears win "again"', None)
    assert items["N4"][C.DESCRIPTION] == "Markets rose on Friday."
    assert (items["N5"][C.TITLE], items["N5"][C.DESCRIPTION]) == ('The "Big" Rally', "Plain text.")
    assert "news.tsv: 5 rows in, 4 used, 1 dropped (news has no title)" in result.output
    assert "repaired (still used): 2 markup removed from title, 2 markup removed from abstract" in result.output
    assert "(shown items): 4 rows in, 3 used, 1 dropped (news has no title)" in result.output
