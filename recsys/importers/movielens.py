"""MovieLens (ml-latest family CSVs, or ml-1m ``::`` files) to the data contract.

ml-1m's ratings are read from ``ratings.dat`` or any one ``ratings*.dat`` / ``ratings*.dat.gz``
(e.g. a gzipped subset such as ``ratings_users_1-2999.dat.gz``, read as it is). Its ``users.dat``
(gender, age band, occupation code, zip code) becomes the users side table, for the users who
have a rating; the others are counted as dropped.

Ratings become events by one documented rule (``MovieLensOptions``): a rating at or above
``purchase_threshold`` is a ``purchase`` (a strong positive), any other rating a ``click``;
the rating itself is kept. Items get MovieLens' title and genres; an optional TMDB metadata
file (``tmdb_5000_movies.csv`` or Kaggle's ``movies_metadata.csv``), joined through
``links.csv`` (``tmdbId`` -> ``id``), adds the overview as the description.

User tags (``tags.csv``) are events of users, written with their author and time to a side
table and never folded into item text: on the per-user split, 63 of the 64 tags on the test
window's cold items were written by the very user whose test rating is predicted.
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys import contract as C
from recsys.errors import ConfigError, DataContractError
from recsys.importers.base import ImportedDataset, ImportReport, SourceCount

__all__ = ["MovieLensOptions", "import_movielens", "TMDB_FILES"]

logger = logging.getLogger(__name__)

TMDB_FILES = ("movies_metadata.csv", "tmdb_5000_movies.csv")
"""TMDB metadata files looked for beside the MovieLens folder, largest coverage first."""
NO_GENRES = "(no genres listed)"
_LINE = "__line"  # 1-based line number of a .dat row, for error messages

# Field names of ml-1m's headerless .dat files, as its README names them.
_RATINGS_DAT = {"UserID": pl.String(), "MovieID": pl.String(), "Rating": pl.Float64(), "Timestamp": pl.Int64()}
_MOVIES_DAT = {"MovieID": pl.String(), "Title": pl.String(), "Genres": pl.String()}
_USERS_DAT = {"UserID": pl.String(), "Gender": pl.String(), "Age": pl.Int32(), "Occupation": pl.Int32(),
              "Zip-code": pl.String()}
_USER_FEATURES = {"Gender": "gender", "Age": "age", "Occupation": "occupation", "Zip-code": "zip"}
"""users.dat field -> users table column (codes as in the ml-1m README)."""

# Drop reasons, as they appear in the report.
NO_RATING = "user has no rating"
DUPLICATE_USER = "duplicate user id (first kept)"


@dataclass(frozen=True)
class MovieLensOptions:
    """How MovieLens ratings and metadata become contract tables."""

    purchase_threshold: float | None = 4.0
    """Ratings >= this are ``purchase`` events, the rest ``click``; ``None``: every rating is a click."""
    min_rating: float | None = None
    """Ratings below this are dropped (and counted); ``None`` keeps all."""
    tmdb: Path | None = None
    """TMDB metadata CSV with ``id`` and ``overview``; ``None`` looks for one of ``TMDB_FILES``."""
    use_tmdb: bool = True
    """Set False to import without descriptions even if a TMDB file is present."""

    def __post_init__(self) -> None:
        for name in ("purchase_threshold", "min_rating"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 5:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be between 0 and 5 (MovieLens stars), got {value}")


@dataclass(frozen=True)
class _Layout:
    folder: Path
    flavour: str  # "csv" (ml-latest, ml-20m, ...) or "dat" (ml-1m)
    ratings: Path
    tmdb: Path | None


def _dat_ratings(folder: Path) -> Path | None:
    """The one ``ratings*.dat[.gz]`` of an ml-1m folder (``None`` if there is none)."""
    found = sorted(p for pattern in ("ratings*.dat", "ratings*.dat.gz") for p in folder.glob(pattern) if p.is_file())
    if len(found) > 1:
        raise DataContractError(f"{folder}: several ratings files ({', '.join(p.name for p in found)}); "
                                "keep one, or import a folder holding only the one you want")
    return found[0] if found else None


def _locate(src: Path, opts: MovieLensOptions) -> _Layout:
    if not src.is_dir():
        raise DataContractError(f"{src}: MovieLens folder not found")
    candidates = [src, *sorted(p for p in src.iterdir() if p.is_dir())]
    for folder in candidates:
        if (folder / "ratings.csv").exists() and (folder / "movies.csv").exists():
            return _Layout(folder, "csv", folder / "ratings.csv", _find_tmdb(folder, src, opts))
        if (folder / "movies.dat").exists() and (ratings := _dat_ratings(folder)) is not None:
            return _Layout(folder, "dat", ratings, _find_tmdb(folder, src, opts))
    raise DataContractError(f"{src}: no MovieLens files found; expected ratings.csv + movies.csv "
                            "(ml-latest family) or ratings*.dat[.gz] + movies.dat (ml-1m), here or one folder down")


def _find_tmdb(folder: Path, src: Path, opts: MovieLensOptions) -> Path | None:
    if not opts.use_tmdb:
        return None
    if opts.tmdb is not None:
        if not opts.tmdb.exists():
            raise DataContractError(f"{opts.tmdb}: TMDB metadata file not found")
        return opts.tmdb
    for place in (folder, src, folder.parent):
        for name in TMDB_FILES:
            if (place / name).exists():
                return place / name
    return None


def _read_csv(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    try:
        return pl.read_csv(path, schema_overrides=schema, columns=list(schema))
    except Exception as exc:
        raise DataContractError(f"{path}: cannot be read as MovieLens CSV with columns "
                                f"{', '.join(schema)} ({str(exc).splitlines()[0][:200]})") from exc


def _dat_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # a bad gzip stream is an OSError or EOFError
        raise DataContractError(f"{path}: cannot be read ({exc}); is the file complete?") from exc
    return raw.decode("latin-1")  # latin-1 maps every byte, so decoding never fails


def _read_dat(path: Path, fields: dict[str, pl.DataType]) -> pl.DataFrame:
    """ml-1m's ``::``-separated, Latin-1 files, gzipped or not (polars has no multi-character separator).

    Returns:
        One column per field, cast to its type, plus ``__line`` (1-based line in the file).

    Raises:
        DataContractError: naming the file, line and field of the first malformed value.
    """
    # Split on "\n" only: str.splitlines also breaks at latin-1 0x85 (NEL), and line numbers must match the file.
    lines = pl.DataFrame({"line": _dat_text(path).split("\n")}).with_row_index(_LINE, offset=1).with_columns(
        pl.col("line").str.strip_suffix("\r")).filter(pl.col("line") != "")
    names = list(fields)
    parts = lines["line"].str.split("::")
    bad = parts.list.len() != len(names)
    if bad.any():
        row = lines[_LINE][int(bad.arg_true()[0])]
        raise DataContractError(f"{path}: line {row} does not have {len(names)} '::'-separated fields "
                                f"({', '.join(names)})")
    df = pl.DataFrame({_LINE: lines[_LINE], **{name: parts.list.get(i) for i, name in enumerate(names)}})
    for name, dtype in fields.items():
        if dtype == pl.String():
            continue
        cast = df[name].str.strip_chars().cast(dtype, strict=False)
        if cast.null_count():
            at = int(cast.is_null().arg_true()[0])
            kind = "an integer" if dtype.is_integer() else "a number"
            raise DataContractError(f"{path}: line {df[_LINE][at]}, field {name}: {df[name][at]!r} is not {kind}")
        df = df.with_columns(cast)
    return df


def _ratings(layout: _Layout) -> pl.DataFrame:
    if layout.flavour == "csv":
        df = _read_csv(layout.folder / "ratings.csv", {"userId": pl.String, "movieId": pl.String,
                                                        "rating": pl.Float64, "timestamp": pl.Int64})
    else:
        df = _read_dat(layout.ratings, _RATINGS_DAT).select(
            pl.col("UserID").alias("userId"), pl.col("MovieID").alias("movieId"),
            pl.col("Rating").alias("rating"), pl.col("Timestamp").alias("timestamp"))
    _check_ratings(df, layout.ratings)
    return df.rename({"userId": C.USER_ID, "movieId": C.ITEM_ID, "rating": C.RATING, "timestamp": C.TS}).drop(
        _LINE, strict=False)


def _check_ratings(df: pl.DataFrame, path: Path) -> None:
    """Stars between 0 and 5 and Unix seconds between 1970 and now: NaN, -3 or year -1199 is a broken file.

    Raises:
        DataContractError: naming the file, line, field and value of the first bad row.
    """
    lines = df[_LINE] if _LINE in df.columns else pl.int_range(2, df.height + 2, eager=True)  # CSV: header line 1
    now = int(time.time()) + 86_400
    checks = (("rating", ~df["rating"].is_finite() | (df["rating"] < 0) | (df["rating"] > 5),
               "is not a MovieLens rating (0 to 5 stars)"),
              ("timestamp", (df["timestamp"] < 0) | (df["timestamp"] > now),
               "is not a Unix time in seconds between 1970 and now"))
    for field, bad, why in checks:
        bad = bad.fill_null(True)
        if bad.any():
            at = int(bad.arg_true()[0])
            raise DataContractError(f"{path}: line {lines[at]}, field {field}: {df[field][at]!r} {why} "
                                    f"({int(bad.sum())} row(s) like it)")


def _movies(layout: _Layout) -> pl.DataFrame:
    if layout.flavour == "csv":
        df = _read_csv(layout.folder / "movies.csv", {"movieId": pl.String, "title": pl.String,
                                                       "genres": pl.String})
    else:
        df = _read_dat(layout.folder / "movies.dat", _MOVIES_DAT).select(
            pl.col("MovieID").alias("movieId"), pl.col("Title").alias("title"), pl.col("Genres").alias("genres"))
    genres = pl.col("genres").str.split("|").list.eval(pl.element().filter(pl.element() != NO_GENRES))
    year = pl.col("title").str.extract(r"\((\d{4})\)\s*$").cast(pl.Int32, strict=False)
    return df.select(
        pl.col("movieId").alias(C.ITEM_ID),
        pl.col("title").str.strip_chars().alias(C.TITLE),
        genres.list.first().alias(C.CATEGORY),
        genres.fill_null([]).alias(C.TAGS),
        pl.date(year, 1, 1).cast(C.DATETIME).alias(C.PUBLISHED_AT),
    )


def _tmdb_text(layout: _Layout, report: ImportReport) -> pl.DataFrame | None:
    """movieId -> description (tagline + overview) and release date, through links.csv."""
    links_path = layout.folder / "links.csv"
    if layout.tmdb is None or not links_path.exists():
        if layout.tmdb is not None:
            report.notes.append(f"{layout.tmdb.name} ignored: links.csv (movieId -> tmdbId) is missing")
        return None
    links = _read_csv(links_path, {"movieId": pl.String, "imdbId": pl.String, "tmdbId": pl.String})
    meta = _read_csv(layout.tmdb, {"id": pl.String, "overview": pl.String, "tagline": pl.String,
                                   "release_date": pl.String})
    clean = pl.col("overview").str.strip_chars()
    meta = meta.select(
        pl.col("id").str.strip_chars().cast(pl.Int64, strict=False).alias("tmdb"),
        pl.when(clean != "").then(clean).alias("overview"),
        pl.col("tagline").str.strip_chars().alias("tagline"),
        pl.col("release_date").str.to_date("%Y-%m-%d", strict=False).cast(C.DATETIME).alias("released"),
    ).drop_nulls("tmdb").unique("tmdb", keep="first", maintain_order=True)
    text = pl.concat_str([pl.col("tagline"), pl.col("overview")], separator=" ", ignore_nulls=True)
    joined = links.select(pl.col("movieId").alias(C.ITEM_ID),
                          pl.col("tmdbId").cast(pl.Int64, strict=False).alias("tmdb")).join(
        meta, on="tmdb", how="inner").filter(pl.col("overview").is_not_null())
    return joined.select(C.ITEM_ID, text.alias(C.DESCRIPTION), "released")


def _events(ratings: pl.DataFrame, opts: MovieLensOptions) -> pl.Expr:
    if opts.purchase_threshold is None:
        return pl.lit(C.CLICK).alias(C.EVENT)
    return (pl.when(pl.col(C.RATING) >= opts.purchase_threshold).then(pl.lit(C.PURCHASE))
            .otherwise(pl.lit(C.CLICK)).alias(C.EVENT))


def _interactions(layout: _Layout, items: pl.DataFrame, opts: MovieLensOptions,
                  report: ImportReport) -> pl.DataFrame:
    ratings = _ratings(layout)
    count = SourceCount(layout.ratings.name, ratings.height, 0)
    if opts.min_rating is not None:
        low = ratings[C.RATING] < opts.min_rating
        count.dropped[f"rating below {opts.min_rating}"] = int(low.sum())
        ratings = ratings.filter(~low)
    known = ratings[C.ITEM_ID].is_in(items[C.ITEM_ID].implode())
    if not known.all():
        count.dropped["movie not in movies file"] = int((~known).sum())
        ratings = ratings.filter(known)
    count.rows_out = ratings.height
    report.sources.append(count)
    return ratings.select(
        C.USER_ID, C.ITEM_ID,
        pl.from_epoch(pl.col(C.TS), time_unit="s").cast(C.DATETIME).alias(C.TS),
        _events(ratings, opts),
        pl.lit(None, pl.String).alias(C.IMPRESSION_ID),
        C.RATING,
        pl.lit(False).alias(C.FROM_HISTORY),
    )


def _user_tags(layout: _Layout, items: pl.DataFrame, report: ImportReport) -> pl.DataFrame | None:
    path = layout.folder / "tags.csv"
    if layout.flavour != "csv" or not path.exists():
        return None
    tags = _read_csv(path, {"userId": pl.String, "movieId": pl.String, "tag": pl.String,
                            "timestamp": pl.Int64})
    count = SourceCount("tags.csv", tags.height, 0)
    keep = tags["movieId"].is_in(items[C.ITEM_ID].implode()) & tags["tag"].is_not_null()
    if not keep.all():
        count.dropped["movie not in movies file, or empty tag"] = int((~keep).sum())
    tags = tags.filter(keep)
    count.rows_out = tags.height
    report.sources.append(count)
    return tags.select(pl.col("userId").alias(C.USER_ID), pl.col("movieId").alias(C.ITEM_ID),
                       pl.col("tag").str.strip_chars().alias(C.TAG),
                       pl.from_epoch("timestamp", time_unit="s").cast(C.DATETIME).alias(C.TS))


def _users(layout: _Layout, interactions: pl.DataFrame, report: ImportReport) -> pl.DataFrame | None:
    """ml-1m ``users.dat`` as user features, for users with a rating (the others are counted as dropped)."""
    path = layout.folder / "users.dat"
    if layout.flavour != "dat" or not path.exists():
        return None
    users = _read_dat(path, _USERS_DAT)
    reason = (pl.when(~pl.col("UserID").is_first_distinct()).then(pl.lit(DUPLICATE_USER))
              .when(~pl.col("UserID").is_in(interactions[C.USER_ID].unique().implode())).then(pl.lit(NO_RATING)))
    users = users.with_columns(reason.alias("__reason"))
    dropped = users.filter(pl.col("__reason").is_not_null())["__reason"].value_counts(sort=True)
    kept = users.filter(pl.col("__reason").is_null())
    report.sources.append(SourceCount(path.name, users.height, kept.height, dict(dropped.iter_rows())))
    return kept.select(pl.col("UserID").alias(C.USER_ID),
                       *(pl.col(field).alias(column) for field, column in _USER_FEATURES.items()))


def import_movielens(src: str | Path, options: MovieLensOptions = MovieLensOptions()) -> ImportedDataset:
    """Import a MovieLens folder (and optional TMDB overviews) into contract frames.

    Args:
        src: a folder holding ``ratings.csv``/``movies.csv`` (or the ml-1m ``movies.dat``,
            ``users.dat`` and one ``ratings*.dat`` or ``ratings*.dat.gz``), or its parent
            (e.g. ``data/movielens`` holding ``ml-latest-small/``).
        options: event rule and TMDB settings.

    Returns:
        Items, interactions, the user-tag side table (CSV family) or user features (ml-1m: ``gender``,
        ``age``, ``occupation``, ``zip``), and an import report whose count check covers every
        ratings, tags and users row.

    Raises:
        DataContractError: the folder or a required file is missing or unreadable.
    """
    layout = _locate(Path(src), options)
    report = ImportReport(f"movielens ({layout.folder.name})")
    logger.info("reading movies from %s", layout.folder)
    items = _movies(layout)
    report.sources.append(SourceCount(f"movies.{layout.flavour}", items.height, items.height))
    text = _tmdb_text(layout, report)
    if text is not None:
        items = items.join(text, on=C.ITEM_ID, how="left").with_columns(
            pl.coalesce("released", C.PUBLISHED_AT).alias(C.PUBLISHED_AT)).drop("released")
        n = items[C.DESCRIPTION].is_not_null().sum()
        report.notes.append(f"{n:,} of {items.height:,} movies got a description from {layout.tmdb.name}")
    else:
        items = items.with_columns(pl.lit(None, pl.String).alias(C.DESCRIPTION))
        report.notes.append("no TMDB metadata file found: items have titles and genres only")
    logger.info("reading ratings")
    interactions = _interactions(layout, items, options, report)
    rule = ("every rating is a click" if options.purchase_threshold is None else
            f"rating >= {options.purchase_threshold} -> purchase, else click")
    report.notes.append(f"event rule: {rule}")
    return ImportedDataset(items, interactions, report, users=_users(layout, interactions, report),
                           user_tags=_user_tags(layout, items, report))
