"""`recsys data validate` and the contract checks behind it, driven through the CLI and the API."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from contract_tables import write_table

from recsys import contract as C
from recsys.cli import cli
from recsys.errors import DataContractError
from recsys.io import DatasetPaths, load_dataset, validate_dataset
from recsys.validation import ContractPolicy


def run_validate(items: Path, interactions: Path, *extra: str):
    return CliRunner().invoke(cli, ["data", "validate", "--items", str(items), "--interactions",
                                    str(interactions), *extra])


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_valid_data_prints_summary_in_every_format(dataset_files, ext):
    result = run_validate(*dataset_files(ext=ext))
    assert result.exit_code == 0, result.output
    lines = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in result.output.splitlines()
                 if re.search(r"\S\s{2,}\S", line))
    assert lines["users"] == "3"
    assert lines["items"] == "4"
    assert lines["interactions"] == "8"
    assert lines["impression"] == "4" and lines["click"] == "3" and lines["purchase"] == "1"
    assert lines["impression groups"] == "2"
    assert lines["time range"] == "2024-01-01 10:00:00 .. 2024-01-05 08:30:00"
    assert lines["items with a description"] == "75.0%"
    assert lines["items never interacted with"] == "0 (0.0%)"


def test_normalised_frames_follow_the_contract(dataset_files):
    data = load_dataset(DatasetPaths(*dataset_files()))
    assert dict(data.items.schema) == C.ITEM_SCHEMA
    assert dict(data.interactions.schema) == C.INTERACTION_SCHEMA
    assert data.items[C.TAGS].to_list() == [["cooking", "baking"], [], ["jazz"], []]
    assert data.interactions[C.TS].is_sorted()
    assert data.interactions[C.FROM_HISTORY].sum() == 0


def test_timestamps_in_every_accepted_form_mean_the_same_instant(tmp_path, items, interactions):
    forms = ["2024-01-01 10:00:00", "2024-01-01T10:00:00", "1704103200", "2024-01-01T11:00:00+01:00",
             "2024-01-01T10:00:00Z", "2024-01-01 10:00:00.000", "1704103200.0", "2024-01-01 10:00:00"]
    inter = interactions.with_columns(pl.Series(C.TS, forms))
    data = load_dataset(DatasetPaths(write_table(items, tmp_path / "i.csv"), write_table(inter, tmp_path / "x.csv")))
    assert set(data.interactions[C.TS].to_list()) == {datetime(2024, 1, 1, 10)}


def test_integer_ids_and_epoch_numbers_in_parquet_are_accepted(tmp_path, items, interactions):
    items = items.with_columns(pl.Series(C.ITEM_ID, [1, 2, 3, 4]))
    inter = interactions.with_columns(pl.Series(C.ITEM_ID, [1, 2, 1, 3, 1, 4, 2, 4]),
                                      pl.Series(C.TS, [1704103200] * 8))
    data = load_dataset(DatasetPaths(write_table(items, tmp_path / "i.parquet"),
                                     write_table(inter, tmp_path / "x.parquet")))
    assert data.items[C.ITEM_ID].to_list() == ["1", "2", "3", "4"]
    assert data.interactions[C.TS].unique().to_list() == [datetime(2024, 1, 1, 10)]


def _garbled_parquet(tmp_path, items, inter):
    (tmp_path / "items.parquet").write_bytes(b"PAR1\x00\x01garbage-not-a-footer")
    return tmp_path / "items.parquet", write_table(inter, tmp_path / "x.csv")


def _bad_utf8_csv(tmp_path, items, inter):
    path = tmp_path / "items.csv"
    path.write_bytes(b"item_id,title\na,\xff\xfe\xfa broken\n")
    return path, write_table(inter, tmp_path / "x.csv")


def _missing_file(tmp_path, items, inter):
    return tmp_path / "nope.csv", write_table(inter, tmp_path / "x.csv")


def _unsupported_ext(tmp_path, items, inter):
    path = tmp_path / "items.xlsx"
    path.write_bytes(b"whatever")
    return path, write_table(inter, tmp_path / "x.csv")


def _empty_file(tmp_path, items, inter):
    (tmp_path / "items.csv").write_bytes(b"")
    return tmp_path / "items.csv", write_table(inter, tmp_path / "x.csv")


def _files(items_frame, inter_frame, ext=".csv"):
    def make(tmp_path, items, inter):
        i = items_frame(items) if items_frame else items
        x = inter_frame(inter) if inter_frame else inter
        return write_table(i, tmp_path / f"items{ext}"), write_table(x, tmp_path / f"inter{ext}")
    return make


def _set(frame: pl.DataFrame, column: str, row: int, value, dtype=pl.String) -> pl.DataFrame:
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=dtype))


BAD_INPUTS = [
    ("missing file", _missing_file, None, r"nope\.csv: file not found"),
    ("garbled parquet", _garbled_parquet, None, r"items\.parquet: cannot be read as Parquet"),
    ("invalid utf-8", _bad_utf8_csv, None, r"items\.csv: cannot be read as CSV .*UTF-8"),
    ("unsupported extension", _unsupported_ext, None, r"unsupported file extension '\.xlsx'; use one of"),
    ("empty file", _empty_file, None, r"items\.csv: the file is empty"),
    ("missing column", _files(lambda f: f.drop(C.TITLE), None), "title",
     r"missing required column 'title'; found columns: item_id, description, category, tags"),
    ("wrong type", _files(lambda f: f.with_columns(pl.Series(C.TITLE, [1, 2, 3, 4])), None, ".parquet"),
     "title", r"wrong type Int64: expected text"),
    ("null item id", _files(lambda f: _set(f, C.ITEM_ID, 2, None), None), "item_id",
     r"null or empty item id \(1 row, e\.g\. row 3\)"),
    ("null user id", _files(None, lambda f: _set(f, C.USER_ID, 4, "")), "user_id",
     r"null or empty user id \(1 row, e\.g\. row 5\)"),
    ("duplicate item ids", _files(lambda f: _set(f, C.ITEM_ID, 3, "a"), None), "item_id",
     r"duplicate item id .*\(2 rows, e\.g\. row 1 'a', 4 'a'\)"),
    ("empty title", _files(lambda f: _set(f, C.TITLE, 1, "  "), None), "title", r"empty title .*row 2 '  '\)"),
    ("unknown item", _files(None, lambda f: _set(f, C.ITEM_ID, 7, "zz")), "item_id",
     r"item id not in the item table; .*--drop-unknown-items \(1 row, e\.g\. row 8 'zz'\)"),
    ("bad timestamp", _files(None, lambda f: _set(f, C.TS, 2, "yesterday")), "timestamp",
     r"missing or unparseable value; e\.g\. 'yesterday'.* \(1 row, e\.g\. row 3\)"),
    ("unknown event", _files(None, lambda f: _set(f, C.EVENT, 3, "view")), "event",
     r"unknown event name\(s\) 'view'; must be one of impression, click, purchase"),
    ("empty items table", _files(lambda f: f.clear(), None), None, r"items\.csv: the table has no rows"),
    ("empty interactions", _files(None, lambda f: f.clear(), ".parquet"), None,
     r"inter\.parquet: the table has no rows"),
    ("impression-only user", _files(None, lambda f: _set(f, C.EVENT, 7, "impression")), "user_id",
     r"1 user\(s\) have only impressions .*'u3'.*--drop-impression-only-users "
     r"\(3 rows, e\.g\. row 6 'u3', 7 'u3', 8 'u3'\)"),
    ("NaN rating", _files(None, lambda f: f.with_columns(pl.Series(C.RATING, [4.0] * 3 + [float("nan")] +
                                                                   [float("inf")] + [3.0] * (f.height - 5)))),
     "rating", r"NaN or infinite rating; a rating is a finite number \(2 rows, e\.g\. row 4 'NaN', 5 'inf'\)"),
    ("year -1199", _files(None, lambda f: _set(f, C.TS, 1, "-100000000000")), "timestamp",
     r"time before 1900 or more than a year ahead .*milliseconds or nanoseconds need converting \(1 row, e\.g\. "
     r"row 2\)"),
    ("milliseconds as seconds", _files(None, lambda f: _set(f, C.TS, 3, "1714000000000")), "timestamp",
     r"time before 1900 or more than a year ahead \(e\.g\. \+56284-06-30"),
    ("epoch overflow", _files(None, lambda f: _set(f, C.TS, 0, "1e20")), "timestamp",
     r"missing or unparseable value; e\.g\. '1e20'"),
    ("header twice", _files(None, lambda f: f.with_columns(pl.col(C.EVENT).alias("event_duplicated_0"))), "event",
     r"the header names column 'event' more than once; keep one"),
]


@pytest.mark.parametrize(("name", "make", "column", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_reported_with_exit_code_1_and_no_traceback(tmp_path, items, interactions, name, make,
                                                                 column, message):
    result = run_validate(*make(tmp_path, items, interactions))
    assert result.exit_code == 1
    assert re.search(message, result.output), result.output
    if column:
        assert f"column '{column}'" in result.output
    assert "Traceback" not in result.output
    assert "error: validation failed" in result.output


def test_all_problems_are_reported_together(dataset_files, items, interactions):
    bad_items = _set(_set(items, C.TITLE, 0, ""), C.ITEM_ID, 3, "a")
    bad_inter = _set(_set(interactions, C.EVENT, 0, "view"), C.TS, 1, "never")
    result = run_validate(*dataset_files(bad_items, bad_inter))
    assert result.exit_code == 1
    # Replacing item d by a second "a" also orphans d's two interactions: a fifth error.
    assert "5 error(s)" in result.output
    for fragment in ("empty title", "duplicate item id", "unknown event", "unparseable value",
                     "--drop-unknown-items (2 rows, e.g. row 6 'd', 8 'd')", "duplicate item id (ids must be unique; "
                     "dedupe the catalogue) (2 rows, e.g. row 1 'a', 4 'a')"):
        assert fragment in result.output


def test_extra_column_is_a_warning_not_an_error(dataset_files, items):
    result = run_validate(*dataset_files(items.with_columns(pl.lit(1).alias("price"))))
    assert result.exit_code == 0
    assert "1 warning(s)" in result.output
    assert "extra column 'price' is not part of the contract and is ignored" in result.output
    assert "users" in result.output


def test_verbose_shows_a_traceback(tmp_path, interactions):
    result = CliRunner().invoke(cli, ["-v", "data", "validate", "--items", str(tmp_path / "nope.csv"),
                                      "--interactions", str(write_table(interactions, tmp_path / "x.csv"))])
    assert result.exit_code == 1
    assert "Traceback" in result.output


def test_policy_switches_repair_instead_of_failing(tmp_path, items, interactions):
    inter = pl.concat([_set(interactions, C.ITEM_ID, 4, "zz"), interactions.head(1)])
    inter = pl.concat([inter, pl.DataFrame({C.USER_ID: ["u9"], C.ITEM_ID: ["a"], C.TS: ["2024-01-09"],
                                            C.EVENT: ["impression"], C.IMPRESSION_ID: ["s9"]})])
    paths = DatasetPaths(write_table(items, tmp_path / "i.csv"), write_table(inter, tmp_path / "x.csv"))
    report, data = validate_dataset(paths)
    assert data is None and len(report.errors) == 2  # unknown item, impression-only user
    assert len(report.warnings) == 1  # the duplicate row
    policy = ContractPolicy(drop_unknown_items=True, dedupe=True, drop_impression_only_users=True)
    report, data = validate_dataset(paths, policy)
    assert report.ok and data is not None
    assert data.interactions.height == inter.height - 3
    assert "zz" not in data.interactions[C.ITEM_ID] and "u9" not in data.interactions[C.USER_ID]
    assert len(report.warnings) == 3
    result = run_validate(paths.items, paths.interactions, "--drop-unknown-items", "--dedupe",
                          "--drop-impression-only-users")
    assert result.exit_code == 0 and "dropped rows whose item is not in the catalogue" in result.output


def test_every_repeat_of_an_earlier_rows_key_is_flagged_and_deduped_exactly(tmp_path):
    """Repeats are found through a hash of the key, then compared by the key itself: rows sharing four of the five
    key fields are not repeats, a triple keeps its first row, and --dedupe leaves what ``unique`` would."""
    rng = np.random.default_rng(0)
    n = 400
    inter = pl.DataFrame({C.USER_ID: rng.choice(["u1", "u2", "u3"], n), C.ITEM_ID: rng.choice(["a", "b", "c"], n),
                          C.TS: rng.choice(["2024-01-01", "2024-01-02"], n),
                          C.EVENT: rng.choice(["click", "purchase"], n),
                          C.IMPRESSION_ID: [("s1", None)[i] for i in rng.integers(0, 2, n)]})
    items = pl.DataFrame({C.ITEM_ID: ["a", "b", "c"], C.TITLE: ["A", "B", "C"]})
    paths = DatasetPaths(write_table(items, tmp_path / "i.csv"), write_table(inter, tmp_path / "x.csv"))
    key = [C.USER_ID, C.ITEM_ID, C.TS, C.EVENT, C.IMPRESSION_ID]
    distinct = inter.unique(key, keep="first", maintain_order=True)
    report, data = validate_dataset(paths)
    assert f"exact duplicate interaction rows, kept; drop them with --dedupe ({n - distinct.height} rows" in str(
        report.warnings[0].render()) and data.interactions.height == n
    _, deduped = validate_dataset(paths, ContractPolicy(dedupe=True))
    got = deduped.interactions.select(pl.col(key).cast(pl.String)).sort(key, nulls_last=True)
    want = distinct.select(pl.col(C.USER_ID, C.ITEM_ID), pl.col(C.TS).str.to_datetime().cast(pl.String),
                           pl.col(C.EVENT, C.IMPRESSION_ID)).sort(key, nulls_last=True)
    assert got.equals(want)


def test_custom_event_names_are_allowed_by_policy(dataset_files, interactions):
    files = dataset_files(None, _set(interactions, C.EVENT, 3, "add_to_cart"))
    assert run_validate(*files).exit_code == 1
    assert run_validate(*files, "--events", "impression,click,purchase,add_to_cart").exit_code == 0


def test_load_dataset_raises_every_problem_at_once(dataset_files, items):
    files = dataset_files(_set(_set(items, C.TITLE, 0, ""), C.TITLE, 2, None))
    with pytest.raises(DataContractError, match=r"empty title .*\(2 rows, e\.g\. row 1 '', 3\)"):
        load_dataset(DatasetPaths(*files))


def test_data_folder_option(tmp_path, items, interactions):
    write_table(items, tmp_path / C.ITEMS_FILE)
    write_table(interactions, tmp_path / C.INTERACTIONS_FILE)
    result = CliRunner().invoke(cli, ["data", "validate", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    missing = CliRunner().invoke(cli, ["data", "validate", "--data", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "data folder not found" in missing.output


def test_nothing_left_after_dropping_unknown_items_is_an_error(tmp_path, items, interactions):
    strangers = interactions.with_columns(pl.lit("not-in-catalogue").alias(C.ITEM_ID))
    result = run_validate(write_table(items, tmp_path / "items.csv"), write_table(strangers, tmp_path / "inter.csv"),
                          "--drop-unknown-items")
    assert result.exit_code == 1 and "no interaction is left after dropping those on unknown items" in result.output
    assert "time range None" not in result.output and "Traceback" not in result.output


def test_errors_show_the_offending_values_truncated(dataset_files, items, interactions):
    """Each example row comes with its value, so a user can search for it; long values end in an ellipsis."""
    long_id = "B" + "0" * 60
    bad_inter = _set(_set(interactions, C.ITEM_ID, 2, "zz-unknown"), C.ITEM_ID, 5, long_id)
    result = run_validate(*dataset_files(None, bad_inter))
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if "item id not in the item table" in x)
    assert "(2 rows, e.g. row 3 'zz-unknown', 6 'B00000000000000000000000000000000000000…')" in line, line
    assert long_id not in result.output
