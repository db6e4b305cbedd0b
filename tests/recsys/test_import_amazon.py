"""Amazon reviews importer: tiny files of the 2014, 2018 and 2023 releases, written literally."""

from __future__ import annotations

import gzip
import json
import re
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from recsys import contract as C
from recsys.cli import cli
from recsys.errors import DataContractError
from recsys.importers.amazon import import_amazon
from recsys.importers.base import ImportedDataset, write_dataset
from recsys.io import DatasetPaths, validate_dataset

# 2014 (McAuley): reviews are strict JSON, meta lines are Python dict literals.
REVIEWS_2014 = """\
{"reviewerID": "A1", "asin": "0001", "reviewerName": "Ann", "helpful": [2, 3], "reviewText": "Great", \
"overall": 5.0, "summary": "Loved it", "unixReviewTime": 1400000000, "reviewTime": "05 13, 2014"}
{"reviewerID": "A1", "asin": "0001", "reviewerName": "Ann", "helpful": [0, 0], "reviewText": "Again", \
"overall": 4.0, "summary": "Twice", "unixReviewTime": 1400000000, "reviewTime": "05 13, 2014"}
{"reviewerID": "A2", "asin": "0002", "helpful": [0, 0], "reviewText": "ok", "overall": 2.0, \
"summary": "meh", "unixReviewTime": 1400100000, "reviewTime": "05 14, 2014"}
{"reviewerID": "A2", "asin": "0099", "helpful": [0, 0], "reviewText": "?", "overall": 1.0, \
"summary": "lost", "unixReviewTime": 1400100000, "reviewTime": "05 14, 2014"}
{"reviewerID": "A2", "asin": "0004", "helpful": [0, 0], "reviewText": "fun", "overall": 3.0, \
"summary": "fine", "unixReviewTime": 1400086400, "reviewTime": "05 14, 2014"}
{"reviewerID": "A3", "asin": "0003", "helpful": [1, 1], "reviewText": "nice", "overall": 4.0, \
"summary": "good", "unixReviewTime": 1388534400, "reviewTime": "01 1, 2014"}
{"reviewerID": "", "asin": "0003", "helpful": [0, 0], "reviewText": "anon", "overall": 1.0, \
"summary": "who", "unixReviewTime": 1388534400, "reviewTime": "01 1, 2014"}
"""
META_2014 = """\
{'asin': '0001', 'title': 'Harry <b>Potter</b>', 'categories': [['Books', 'Fiction'], ['Books', 'Kids']], \
'description': '<p>A wizard &amp; his friends.</p>', 'salesRank': {'Books': 12}}
{'asin': '0002', 'categories': [['Books']], 'description': 'An item without a title.', 'price': 3.5}
{"asin": "0003", "title": "Strict JSON line", "categories": [["Books", "Poetry"]]}
{'asin': '0004', 'title': "Don't Panic", 'categories': [['Books', 'Science Fiction', 'Books']], 'imUrl': None}
{'asin': '0001', 'title': 'Harry Potter again'}
"""

# 2018 (Ni et al.): strict JSON, list descriptions, HTML in places.
REVIEWS_2018 = """\
{"overall": 5.0, "verified": true, "reviewTime": "11 9, 2012", "reviewerID": "B1", "asin": "B0001", \
"style": {"Format:": " DVD"}, "reviewerName": "Bob", "reviewText": "Classic.", "summary": "Five Stars", \
"unixReviewTime": 1352419200}
{"overall": 2.0, "vote": "3", "verified": false, "reviewTime": "11 10, 2012", "reviewerID": "B2", \
"asin": "B0003", "reviewText": "Scary.", "summary": "Two Stars", "unixReviewTime": 1352505600}
{"overall": 4.0, "verified": true, "reviewTime": "11 10, 2012", "reviewerID": "B2", "asin": "B0002", \
"reviewText": "?", "summary": "Four Stars", "unixReviewTime": 1352505600}
"""
META_2018 = """\
{"category": ["Movies & TV", "Movies", "</span></span></span>"], "tech1": "", \
"description": ["<b>Classic</b> western.", "Restored &amp; remastered."], "fit": "", "title": "The Searchers", \
"also_buy": [], "image": [], "brand": "John Ford", "feature": [], "rank": "123", "also_view": [], \
"main_cat": "<img src=\\"https://images-na.ssl-images-amazon.com/images/G/01/digital/logo.png\\" \
class=\\"nav-categ-image\\" alt=\\"Prime Video\\"/>", "similar_item": "", "date": "", "price": "$9.99", \
"asin": "B0001"}
{"category": [], "description": [], "title": "", "main_cat": "Movies & TV", "asin": "B0002"}
{"category": ["Movies & TV"], "description": [], "title": "Alien", "main_cat": "Movies & TV", "asin": "B0003"}
"""

# 2023 (Hou et al.): JSON Lines, times in milliseconds, items are parent_asin.
REVIEWS_2023 = """\
{"rating": 5.0, "title": "Such a lovely scent", "text": "Love it", "images": [], "asin": "B00YQ6X8EO", \
"parent_asin": "P1", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588687728923, \
"helpful_vote": 0, "verified_purchase": true}
{"rating": 4.0, "title": "ok", "text": "", "images": [], "asin": "B00YQ6X8EP", "parent_asin": "P1", \
"user_id": "U2", "timestamp": 1588615855070, "helpful_vote": 1, "verified_purchase": true}
{"rating": 3.0, "title": "fine", "text": "", "images": [], "asin": "B01", "parent_asin": "P2", \
"user_id": "U2", "timestamp": 1589000000000, "helpful_vote": 0, "verified_purchase": false}
{"rating": 1.0, "title": "gone", "text": "", "images": [], "asin": "B02", "parent_asin": "P3", \
"user_id": "U3", "timestamp": 1589000000000, "helpful_vote": 0, "verified_purchase": false}
"""
META_2023 = """\
{"main_category": "All Beauty", "title": "Howard LC0008 Leather Conditioner, 8-Ounce (4-Pack)", \
"average_rating": 4.8, "rating_number": 10, "features": [], "description": [], "price": null, "images": [], \
"videos": [], "store": "Howard Products", "categories": [], "details": {"Package Dimensions": "7.1 x 5.5 x 3"}, \
"parent_asin": "P1", "bought_together": null}
{"main_category": null, "title": "Lip Balm", "average_rating": 4.0, "rating_number": 2, \
"features": ["Moisturising", "SPF 15"], "description": [], "price": 4.99, "images": [], "videos": [], \
"store": "Acme", "categories": ["Beauty & Personal Care", "Skin Care", "Lips"], "details": {}, \
"parent_asin": "P2", "bought_together": null}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture()
def amazon_2014(tmp_path: Path) -> Path:
    _write(tmp_path / "a2014" / "reviews_Books_5.json", REVIEWS_2014)
    _write(tmp_path / "a2014" / "meta_Books.json.gz", META_2014)
    return tmp_path / "a2014"


@pytest.fixture()
def amazon_2018(tmp_path: Path) -> Path:
    _write(tmp_path / "a2018" / "Movies_and_TV_5.json.gz", REVIEWS_2018)
    _write(tmp_path / "a2018" / "meta_Movies_and_TV.json.gz", META_2018)
    return tmp_path / "a2018"


@pytest.fixture()
def amazon_2023(tmp_path: Path) -> Path:
    _write(tmp_path / "a2023" / "All_Beauty.jsonl", REVIEWS_2023)
    _write(tmp_path / "a2023" / "meta_All_Beauty.jsonl", META_2023)
    return tmp_path / "a2023"


def _item(data: ImportedDataset, item_id: str) -> dict:
    return data.items.filter(pl.col(C.ITEM_ID) == item_id).row(0, named=True)


def _counts(data: ImportedDataset) -> dict[str, tuple[int, int, dict[str, int]]]:
    return {s.file: (s.rows_in, s.rows_out, s.dropped) for s in data.report.sources}


def test_2014_python_literal_meta_and_drops(amazon_2014: Path) -> None:
    data = import_amazon(amazon_2014)
    assert data.items.schema == pl.Schema(C.ITEM_SCHEMA)
    assert data.items[C.ITEM_ID].to_list() == ["0001", "0002", "0003", "0004"]
    harry = _item(data, "0001")
    assert harry[C.TITLE] == "Harry Potter"  # first copy kept, tags stripped
    assert harry[C.DESCRIPTION] == "A wizard & his friends."
    assert (harry[C.CATEGORY], harry[C.TAGS]) == ("Books", ["Books", "Fiction", "Kids"])
    assert _item(data, "0004")[C.TITLE] == "Don't Panic"
    assert _item(data, "0004")[C.TAGS] == ["Books", "Science Fiction"]
    assert _item(data, "0003")[C.DESCRIPTION] is None
    assert _item(data, "0002")[C.TITLE] == "An item without a title"  # no title, no brand: the description's
    assert data.interactions.sort(C.TS).select(C.USER_ID, C.ITEM_ID, C.TS, C.EVENT, C.RATING).rows() == [
        ("A3", "0003", datetime(2014, 1, 1), C.PURCHASE, 4.0),
        ("A1", "0001", datetime(2014, 5, 13, 16, 53, 20), C.PURCHASE, 5.0),  # the repeat (4.0) is dropped
        ("A2", "0004", datetime(2014, 5, 14, 16, 53, 20), C.PURCHASE, 3.0),
        ("A2", "0002", datetime(2014, 5, 14, 20, 40), C.PURCHASE, 2.0),
    ]
    assert _counts(data) == {
        "meta_Books.json.gz": (5, 4, {"duplicate item id in meta (first titled copy kept)": 1}),
        "reviews_Books_5.json": (7, 4, {"duplicate review (same user, item and time)": 1,
                                        "item not in meta file": 1, "missing user id, item id or time": 1}),
    }
    assert data.report.sources[0].repaired == {"title from description": 1, "markup removed from title": 1,
                                               "markup removed from description": 1}


def test_2018_strips_html_and_reads_gzip(amazon_2018: Path) -> None:
    data = import_amazon(amazon_2018, show_progress=True)
    searchers = _item(data, "B0001")
    assert searchers[C.DESCRIPTION] == "Classic western. Restored & remastered."
    assert searchers[C.CATEGORY] == "Prime Video"  # from the <img alt=...> logo of main_cat
    assert searchers[C.TAGS] == ["Movies & TV", "Movies"]  # "</span></span></span>" is not a tag
    assert _item(data, "B0003")[C.CATEGORY] == "Movies & TV"
    assert data.interactions.height == 2
    b2 = data.interactions.filter(pl.col(C.USER_ID) == "B2").row(0, named=True)
    assert (b2[C.ITEM_ID], b2[C.TS], b2[C.RATING]) == ("B0003", datetime(2012, 11, 10), 2.0)
    assert _counts(data)["Movies_and_TV_5.json.gz"] == (3, 2, {"item has no title": 1})
    assert data.report.notes == ["release 2018: Movies_and_TV_5.json.gz with meta_Movies_and_TV.json.gz"]


def test_2023_millisecond_times_and_parent_asin(amazon_2023: Path) -> None:
    data = import_amazon(amazon_2023 / "All_Beauty.jsonl")  # a reviews file, its meta beside it
    assert data.items[C.ITEM_ID].to_list() == ["P1", "P2"]
    balm = _item(data, "P2")
    assert balm[C.DESCRIPTION] == "Moisturising SPF 15"  # no description: the features
    assert (balm[C.CATEGORY], balm[C.TAGS]) == ("Beauty & Personal Care",
                                                ["Beauty & Personal Care", "Skin Care", "Lips"])
    conditioner = _item(data, "P1")
    assert (conditioner[C.CATEGORY], conditioner[C.TAGS], conditioner[C.DESCRIPTION]) == ("All Beauty", [], None)
    first = data.interactions.filter(pl.col(C.USER_ID) == "AGKHLEW2SOWHNMFQIJGBECAF7INQ").row(0, named=True)
    assert first[C.ITEM_ID] == "P1"  # the variant B00YQ6X8EO counts as its parent
    assert first[C.TS] == datetime(2020, 5, 5, 14, 8, 48, 923000)
    assert data.interactions.filter(pl.col(C.USER_ID) == "U2")[C.ITEM_ID].sort().to_list() == ["P1", "P2"]
    assert _counts(data)["All_Beauty.jsonl"] == (4, 3, {"item not in meta file": 1})


@pytest.mark.parametrize("fixture", ["amazon_2014", "amazon_2018", "amazon_2023"])
def test_written_dataset_meets_the_contract(fixture: str, request: pytest.FixtureRequest,
                                            tmp_path: Path) -> None:
    data = import_amazon(request.getfixturevalue(fixture))
    assert all(s.balanced for s in data.report.sources)
    assert data.interactions.schema == pl.Schema(C.INTERACTION_SCHEMA)
    write_dataset(data, tmp_path / "out")
    report, dataset = validate_dataset(DatasetPaths.from_dir(tmp_path / "out"))
    assert report.ok, report.render()
    assert dataset is not None and dataset.interactions.height == data.interactions.height


def test_category_picks_one_of_several(amazon_2018: Path) -> None:
    _write(amazon_2018 / "Toys.json", REVIEWS_2018)
    with pytest.raises(DataContractError, match=r"several categories \(Movies_and_TV_5, Toys\).*category="):
        import_amazon(amazon_2018)
    assert import_amazon(amazon_2018, category="Movies_and_TV").interactions.height == 2
    with pytest.raises(DataContractError, match="no reviews file for category 'Games'"):
        import_amazon(amazon_2018, category="Games")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="Amazon reviews folder or file not found"):
        import_amazon(tmp_path / "nope")


def test_folder_without_reviews(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "meta_Books.json", META_2014)
    with pytest.raises(DataContractError, match="no Amazon reviews file found"):
        import_amazon(tmp_path / "a")
    with pytest.raises(DataContractError, match="is a meta file"):
        import_amazon(tmp_path / "a" / "meta_Books.json")


def test_missing_meta_file(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "Books_5.json.gz", REVIEWS_2018)
    with pytest.raises(DataContractError, match=r"missing the meta file .*meta_Books\.json or meta_Books\.json\.gz"):
        import_amazon(tmp_path / "a")


def test_garbled_reviews_line(amazon_2018: Path) -> None:
    broken = REVIEWS_2018.splitlines()
    _write(amazon_2018 / "Movies_and_TV_5.json.gz", "\n".join([broken[0], broken[1][:40], broken[2]]) + "\n")
    with pytest.raises(DataContractError, match=r"Movies_and_TV_5\.json\.gz: line 2 is not valid JSON"):
        import_amazon(amazon_2018)


def test_garbled_2014_meta_line(amazon_2014: Path) -> None:
    _write(amazon_2014 / "meta_Books.json.gz", META_2014 + "{'asin': '0005', 'title': 'cut\n")
    with pytest.raises(DataContractError, match="line 6 is neither JSON nor a Python dict literal"):
        import_amazon(amazon_2014)


def test_truncated_gzip(amazon_2018: Path) -> None:
    whole = (amazon_2018 / "meta_Movies_and_TV.json.gz").read_bytes()
    (amazon_2018 / "meta_Movies_and_TV.json.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataContractError, match="cannot be decompressed .*download it again"):
        import_amazon(amazon_2018)


def test_small_blocks_give_the_same_result_and_line_numbers(amazon_2014: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    whole = import_amazon(amazon_2014)
    monkeypatch.setattr("recsys.importers.amazon._BLOCK_BYTES", 64)  # lines straddle every block
    small = import_amazon(amazon_2014)
    assert small.items.equals(whole.items) and small.interactions.equals(whole.interactions)
    _write(amazon_2014 / "reviews_Books_5.json", REVIEWS_2014 + "not json\n")
    with pytest.raises(DataContractError, match="line 8 is not valid JSON"):
        import_amazon(amazon_2014)


# Scraped HTML as the 2018 and 2023 dumps carry it (written with json.dumps: the markup is full of quotes).
CUT_SPAN = '<span class="a-size-medium a-color-secondary"'  # the title of most 2018 Magazine Subscriptions
LONG_LINE = ("Every issue brings the best of science, technology and culture from writers who know their field "
             "and explain it plainly to curious readers")
META_2018_MARKUP = [
    {"asin": "M1", "title": CUT_SPAN, "brand": "Cond&eacute; Nast", "main_cat": "Magazine Subscriptions",
     "description": ["<p>The magazine of &quot;ideas&quot;.</p>"], "category": []},
    {"asin": "M2", "title": '<span class="a-size-medium a-color-secondary a-text-normal', "brand": "",
     "description": ["<br/>", "<b>Wired</b> &#8211; the future, today. Subscribe now.", "Second line."],
     "category": []},
    {"asin": "M3", "title": "Tom &amp; Jerry&#39;s &#8217;Best&#8217;&nbsp;Of <i>Comics</i>", "brand": "Acme",
     "description": ["Cartoons &amp; more&lt;br /&gt;every month"], "category": []},
    {"asin": "M4", "title": '<span class="a-size-medium"></span>', "description": [], "category": []},
    {"asin": "M5", "title": "", "description": [f"<p>{LONG_LINE}</p>"], "category": []},
]
META_2023_MARKUP = [
    {"parent_asin": "P1", "title": "", "store": "Howard Products", "description": [], "features": [],
     "categories": []},
    {"parent_asin": "P2", "title": "<div>  </div>", "store": None,
     "description": ["Soft &amp; gentle cleanser. Use daily."], "features": [], "categories": []},
    {"parent_asin": "P3", "title": "Lip&nbsp;Balm &lt;SPF 15&gt; &amp; more", "store": "Acme", "description": [],
     "features": [], "categories": []},
    {"parent_asin": "P4", "title": "   ", "store": "", "description": ["<br>"], "features": ["<b>Soap</b>"],
     "categories": []},
]


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _import_cli(src: Path, out: Path) -> tuple[str, dict[str, dict]]:
    """Run ``recsys data import amazon``; return its output and the written items by id."""
    result = CliRunner().invoke(cli, ["data", "import", "amazon", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    items = pl.read_parquet(out / C.ITEMS_FILE)
    return result.output, {row[C.ITEM_ID]: row for row in items.iter_rows(named=True)}


def test_2018_scraped_titles_are_cleaned_or_repaired_and_counted(tmp_path: Path) -> None:
    src = tmp_path / "mags"
    reviews = [{"reviewerID": f"U{i}", "asin": f"M{i}", "overall": 4.0, "unixReviewTime": 1500000000 + i}
               for i in range(1, 6)]
    _write(src / "Magazine_Subscriptions.json.gz", _jsonl(reviews))
    _write(src / "meta_Magazine_Subscriptions.json.gz", _jsonl(META_2018_MARKUP))
    output, items = _import_cli(src, tmp_path / "out")
    assert sorted(items) == ["M1", "M2", "M3", "M5"]  # M4: markup-only title, no brand, no description
    assert items["M1"][C.TITLE] == "Cond\u00e9 Nast"  # the cut <span ... tag is no title: the brand is
    assert items["M1"][C.DESCRIPTION] == 'The magazine of "ideas".'
    # No brand ("" is none): the first description line with text, its first sentence.
    assert items["M2"][C.TITLE] == "Wired \u2013 the future, today"
    assert items["M2"][C.DESCRIPTION] == "Wired \u2013 the future, today. Subscribe now. Second line."
    assert items["M3"][C.TITLE] == "Tom & Jerry's \u2019Best\u2019 Of Comics"  # own title kept, brand unused
    assert items["M3"][C.DESCRIPTION] == "Cartoons & more every month"  # escaped <br /> is markup too
    # A first line without a sentence end is cut at a word boundary, at most 120 characters.
    title = items["M5"][C.TITLE]
    assert title == LONG_LINE[:LONG_LINE.rindex(" ", 0, 121)] and len(title) <= 120 < len(LONG_LINE)
    texts = [row[c] for row in items.values() for c in (C.TITLE, C.DESCRIPTION)]
    assert not [t for t in texts if re.search(r"<|&#?\w+;|\s{2}", t)]  # no tag, entity or run of spaces left
    assert "meta_Magazine_Subscriptions.json.gz: 5 rows in, 4 used, 1 dropped (item has no title)" in output
    assert ("repaired (still used): 1 title from brand, 2 title from description, 1 markup removed from title, "
            "4 markup removed from description") in output
    assert "\n  Magazine_Subscriptions.json.gz: 5 rows in, 4 used, 1 dropped (item has no title)" in output
    assert "items.parquet 4 rows, interactions.parquet 4 rows" in output


def test_2023_title_falls_back_to_store_then_description(tmp_path: Path) -> None:
    src = tmp_path / "beauty"
    reviews = [{"user_id": f"U{i}", "parent_asin": f"P{i}", "rating": 5.0, "timestamp": 1588687728923 + i}
               for i in range(1, 5)]
    _write(src / "All_Beauty.jsonl", _jsonl(reviews))
    _write(src / "meta_All_Beauty.jsonl", _jsonl(META_2023_MARKUP))
    output, items = _import_cli(src, tmp_path / "out")
    assert sorted(items) == ["P1", "P2", "P3"]  # P4: features are description text, never a title
    assert items["P1"][C.TITLE] == "Howard Products"
    assert (items["P2"][C.TITLE], items["P2"][C.DESCRIPTION]) == ("Soft & gentle cleanser",
                                                                  "Soft & gentle cleanser. Use daily.")
    assert items["P3"][C.TITLE] == "Lip Balm <SPF 15> & more"  # escaped text that is no HTML element stays
    assert "meta_All_Beauty.jsonl: 4 rows in, 3 used, 1 dropped (item has no title)" in output
    # Entities count as markup: P2's "&amp;" was decoded.
    assert ("repaired (still used): 1 title from brand, 1 title from description, 1 markup removed from title, "
            "1 markup removed from description\n") in output
