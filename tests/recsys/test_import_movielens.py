"""The MovieLens importer on fixture files in the distributor's formats (CRLF CSVs, ml-1m .dat)."""

from __future__ import annotations

import gzip
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from recsys import contract as C
from recsys.cli import cli
from recsys.errors import DataContractError
from recsys.importers import import_dataset
from recsys.importers.movielens import MovieLensOptions, import_movielens
from recsys.io import DatasetPaths, validate_dataset

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,Jumanji (1995),Adventure|Children|Fantasy
3,"American President, The (1995)",Comedy|Drama|Romance
4,Unrated Thing (2001),(no genres listed)
"""
RATINGS = """userId,movieId,rating,timestamp
1,1,4.0,964982703
1,2,3.5,964981247
1,3,5.0,964982224
2,1,2.0,1445714994
2,3,4.5,1445714996
2,9,4.0,1445715000
"""
TAGS = """userId,movieId,tag,timestamp
2,1,pixar,1445714990
2,3,"politics, romance",1445714999
1,9,ghost,964982000
"""
LINKS = """movieId,imdbId,tmdbId
1,0114709,862
2,0113497,8844
3,0112346,9087
4,0000001,
"""
TMDB = """budget,id,overview,tagline,release_date,title
30000000,862,"Led by Woody, Andy's toys live happily.
A second line of plot.",,1995-10-30,Toy Story
65000000,8844,"",Roll the dice,1995-12-15,Jumanji
62000000,9087,"A widowed president dates a lobbyist.",Why can't the most powerful man,1995-11-17,The American President
1,862,"duplicate id row, ignored",,2000-01-01,Toy Story again
"""


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


@pytest.fixture
def ml_latest(tmp_path: Path) -> Path:
    """A parent folder holding ml-latest-small/ (CRLF, as shipped) and the TMDB file beside it."""
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    for name, text in {"movies.csv": MOVIES, "ratings.csv": RATINGS, "tags.csv": TAGS, "links.csv": LINKS}.items():
        (folder / name).write_bytes(_crlf(text).encode())
    (tmp_path / "tmdb_5000_movies.csv").write_text(TMDB)
    return tmp_path


def test_ratings_become_events_by_the_threshold_rule(ml_latest):
    data = import_movielens(ml_latest)
    inter = data.interactions.sort(C.USER_ID, C.ITEM_ID)
    assert inter[C.EVENT].to_list() == ["purchase", "click", "purchase", "click", "purchase"]
    assert inter[C.RATING].to_list() == [4.0, 3.5, 5.0, 2.0, 4.5]
    assert inter[C.TS][0] == datetime(2000, 7, 30, 18, 45, 3)
    assert inter[C.IMPRESSION_ID].null_count() == 5
    everything_clicks = import_movielens(ml_latest, MovieLensOptions(purchase_threshold=None))
    assert set(everything_clicks.interactions[C.EVENT]) == {C.CLICK}


def test_count_check_accounts_for_every_row(ml_latest):
    data = import_movielens(ml_latest, MovieLensOptions(min_rating=3.0))
    by_file = {s.file: s for s in data.report.sources}
    assert by_file["ratings.csv"].rows_in == 6
    assert by_file["ratings.csv"].dropped == {"rating below 3.0": 1, "movie not in movies file": 1}
    assert by_file["ratings.csv"].rows_out == 4 == data.interactions.height
    assert by_file["tags.csv"].dropped == {"movie not in movies file, or empty tag": 1}
    assert all(s.balanced for s in data.report.sources)
    data.report.check()


def test_items_get_titles_genres_and_tmdb_overviews(ml_latest):
    items = import_movielens(ml_latest).items.sort(C.ITEM_ID)
    assert items[C.TITLE].to_list()[:3] == ["Toy Story (1995)", "Jumanji (1995)", "American President, The (1995)"]
    assert items[C.TAGS].to_list() == [["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
                                       ["Adventure", "Children", "Fantasy"], ["Comedy", "Drama", "Romance"], []]
    assert items[C.CATEGORY].to_list() == ["Adventure", "Adventure", "Comedy", None]
    assert items[C.DESCRIPTION].to_list() == [
        "Led by Woody, Andy's toys live happily.\nA second line of plot.",
        None,  # empty overview: no description, the tagline alone is not used
        "Why can't the most powerful man A widowed president dates a lobbyist.",
        None,
    ]
    assert items[C.PUBLISHED_AT].to_list() == [datetime(1995, 10, 30), datetime(1995, 1, 1),
                                               datetime(1995, 11, 17), datetime(2001, 1, 1)]


def test_user_tags_stay_out_of_item_text_with_author_and_time(ml_latest):
    data = import_movielens(ml_latest)
    assert not data.items[C.DESCRIPTION].drop_nulls().str.contains("pixar").any()
    tags = data.user_tags.sort(C.TS)
    assert tags.columns == [C.USER_ID, C.ITEM_ID, C.TAG, C.TS]
    assert tags.rows() == [("2", "1", "pixar", datetime(2015, 10, 24, 19, 29, 50)),
                           ("2", "3", "politics, romance", datetime(2015, 10, 24, 19, 29, 59))]


def test_without_tmdb_items_have_no_description(ml_latest):
    data = import_movielens(ml_latest, MovieLensOptions(use_tmdb=False))
    assert data.items[C.DESCRIPTION].null_count() == 4
    assert any("no TMDB" in note for note in data.report.notes)


def test_movies_metadata_with_messy_ids_joins_too(ml_latest, tmp_path):
    meta = tmp_path / "movies_metadata.csv"
    meta.write_text('adult,id,overview,tagline,release_date\nFalse,862,"Toys.",,1995-10-30\n'
                    'False,1997-08-20,"broken row, id is a date",,\n')
    data = import_movielens(ml_latest / "ml-latest-small", MovieLensOptions(tmdb=meta))
    assert data.items.sort(C.ITEM_ID)[C.DESCRIPTION].to_list() == ["Toys.", None, None, None]


def test_ml_1m_dat_files_latin1(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Comedy\n2::Amélie (2001)::Romance\n"
                                        .encode("latin-1"))
    (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    data = import_movielens(tmp_path)
    assert data.items.sort(C.ITEM_ID)[C.TITLE].to_list() == ["Toy Story (1995)", "Amélie (2001)"]
    assert data.interactions.sort(C.USER_ID, C.ITEM_ID)[C.EVENT].to_list() == ["purchase", "click", "purchase"]
    assert data.users.sort(C.USER_ID).rows() == [("1", "F", 1, 10, "48067"), ("2", "M", 56, 16, "70072")]


def test_garbled_dat_line_names_the_line(tmp_path):
    (tmp_path / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n")
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n1::1\n")
    with pytest.raises(DataContractError, match=r"ratings\.dat: line 2 does not have 4 '::'-separated fields"):
        import_movielens(tmp_path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DataContractError, match="MovieLens folder not found"):
        import_movielens(tmp_path / "nothing")
    with pytest.raises(DataContractError, match=r"expected ratings\.csv \+ movies\.csv"):
        import_movielens(tmp_path)


def test_cli_import_then_validate(ml_latest, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["data", "import", "movielens", str(ml_latest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ratings.csv: 6 rows in, 5 used, 1 dropped (movie not in movies file)" in result.output
    assert "interactions.parquet 5 rows" in result.output
    assert sorted(p.name for p in out.iterdir()) == [C.INTERACTIONS_FILE, C.ITEMS_FILE, C.USER_TAGS_FILE]
    report, data = validate_dataset(DatasetPaths.from_dir(out))
    assert report.ok and not report.problems
    assert data.interactions.height == 5
    assert pl.read_parquet(out / C.ITEMS_FILE).schema[C.TAGS] == pl.List(pl.String)


def test_cli_import_missing_source_exits_1(tmp_path):
    result = CliRunner().invoke(cli, ["data", "import", "movielens", str(tmp_path / "x"), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "source not found" in result.output and "Traceback" not in result.output


# ml-1m as shipped in ../shared/data/ml-1m: latin-1 movies, a gzipped subset of ratings.dat, users.dat.
ML1M_MOVIES = ("1::Toy Story (1995)::Animation|Children's|Comedy\n2::Amélie (2001)::Comedy|Romance\n"
               "3::Heat (1995)::Action\n")
ML1M_RATINGS = ("1::1::5::978300760\n1::2::3::978302109\n1::3::4::978301968\n"
                "2::3::2::978298709\n2::7::5::978299000\n")
ML1M_USERS = "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"


@pytest.fixture
def ml_1m(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "movies.dat").write_bytes(ML1M_MOVIES.encode("latin-1"))
    (folder / "ratings_users_1-2999.dat.gz").write_bytes(gzip.compress(ML1M_RATINGS.encode("latin-1")))
    (folder / "users.dat").write_bytes(ML1M_USERS.encode("latin-1"))
    return folder


def test_ml_1m_gzipped_ratings_and_user_features_are_written(ml_1m, tmp_path):
    out = tmp_path / "out"
    report = import_dataset("movielens", ml_1m, out)
    by_file = {s.file: (s.rows_in, s.rows_out, s.dropped) for s in report.sources}
    assert by_file == {"movies.dat": (3, 3, {}),
                       "ratings_users_1-2999.dat.gz": (5, 4, {"movie not in movies file": 1}),
                       "users.dat": (3, 2, {"user has no rating": 1})}
    assert report.tables == {C.ITEMS_FILE: 3, C.INTERACTIONS_FILE: 4, C.USERS_FILE: 2}
    users = pl.read_parquet(out / C.USERS_FILE).sort(C.USER_ID)
    assert users.columns == [C.USER_ID, "gender", "age", "occupation", "zip"]
    assert users.rows() == [("1", "F", 1, 10, "48067"), ("2", "M", 56, 16, "70072")]
    inter = pl.read_parquet(out / C.INTERACTIONS_FILE).sort(C.USER_ID, C.ITEM_ID)
    assert inter.select(C.USER_ID, C.ITEM_ID, C.EVENT, C.RATING).rows() == [
        ("1", "1", "purchase", 5.0), ("1", "2", "click", 3.0), ("1", "3", "purchase", 4.0), ("2", "3", "click", 2.0)]
    assert inter[C.TS].to_list()[:2] == [datetime(2000, 12, 31, 22, 12, 40), datetime(2000, 12, 31, 22, 35, 9)]
    items = pl.read_parquet(out / C.ITEMS_FILE).sort(C.ITEM_ID)
    assert items[C.TITLE][1] == "Amélie (2001)"
    assert items[C.TAGS][0].to_list() == ["Animation", "Children's", "Comedy"]
    checked, data = validate_dataset(DatasetPaths.from_dir(out))
    assert checked.ok and not checked.problems and data.users.height == 2


def test_cli_imports_ml_1m_and_validate_passes(ml_1m, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "import", "movielens", str(ml_1m.parent), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "users.dat: 3 rows in, 2 used, 1 dropped (user has no rating)" in result.output
    assert sorted(p.name for p in out.iterdir()) == [C.INTERACTIONS_FILE, C.ITEMS_FILE, C.USERS_FILE]
    result = runner.invoke(cli, ["data", "validate", "--data", str(out)])
    assert result.exit_code == 0, result.output
    assert "users                        2" in result.output


def test_ml_1m_bad_value_names_file_line_and_field(ml_1m):
    (ml_1m / "ratings_users_1-2999.dat.gz").write_bytes(gzip.compress(b"1::1::5::978300760\n\n1::2::five::978302109\n"))
    with pytest.raises(DataContractError, match=r"ratings_users_1-2999\.dat\.gz: line 3, field Rating: 'five' is not "
                                                r"a number"):
        import_movielens(ml_1m)
    (ml_1m / "ratings_users_1-2999.dat.gz").write_bytes(gzip.compress(ML1M_RATINGS.encode()))
    (ml_1m / "users.dat").write_text("1::F::1::10::48067\n2::M::fifty::16::70072\n")
    with pytest.raises(DataContractError, match=r"users\.dat: line 2, field Age: 'fifty' is not an integer"):
        import_movielens(ml_1m)


def test_ml_1m_truncated_gzip_and_several_ratings_files_are_named(ml_1m):
    (ml_1m / "ratings_users_1-2999.dat.gz").write_bytes(gzip.compress(ML1M_RATINGS.encode())[:-12])
    with pytest.raises(DataContractError, match=r"ratings_users_1-2999\.dat\.gz: cannot be read"):
        import_movielens(ml_1m)
    (ml_1m / "ratings.dat").write_text(ML1M_RATINGS)
    with pytest.raises(DataContractError,
                       match=r"several ratings files \(ratings\.dat, ratings_users_1-2999\.dat\.gz\)"):
        import_movielens(ml_1m)


@pytest.mark.parametrize(("line", "message"), [
    ("3,1,NaN,964982703", r"ratings\.csv: line 8, field rating: nan is not a MovieLens rating \(0 to 5 stars\)"),
    ("3,1,inf,964982703", r"line 8, field rating: inf is not a MovieLens rating"),
    ("3,1,-3,964982703", r"line 8, field rating: -3\.0 is not a MovieLens rating"),
    ("3,1,4.0,-100000000000", r"line 8, field timestamp: -100000000000 is not a Unix time in seconds between 1970"),
])
def test_ratings_outside_the_movielens_scale_or_time_are_refused(ml_latest, line, message):
    ratings = ml_latest / "ml-latest-small" / "ratings.csv"
    ratings.write_text(RATINGS + line + "\n")
    with pytest.raises(DataContractError, match=message):
        import_movielens(ml_latest)


def test_a_threshold_outside_the_stars_is_one_line_from_the_cli(ml_latest, tmp_path):
    result = CliRunner().invoke(cli, ["data", "import", "movielens", str(ml_latest), "--out", str(tmp_path / "o"),
                                      "--purchase-threshold", "7"])
    assert result.exit_code == 1 and "--purchase-threshold must be between 0 and 5" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()
