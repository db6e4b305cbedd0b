"""Item attributes from the catalogue, as of each row's cut, and the ranking-table key columns.

The ranking stage works on integer indices (``user_idx``, ``item_idx``) and one cut time per
user (``cut``): the instant the features are computed at. ``recsys.contract`` names the raw
string ids only, so the index names are written once here and imported by the other feature
modules of the ranking table (``popularity``, ``history``, ``table``).

Catalogue features carry the prefix ``item_``. Only attributes that are known at the cut are
used: an item published after the cut gets a null age, never a negative one (see
:func:`add_item_attributes`).
"""

from __future__ import annotations

import polars as pl

from recsys import contract as C
from recsys.contract import CUT, ITEM_IDX

__all__ = ["add_item_attributes", "days_between"]


def days_between(start: pl.Expr, end: pl.Expr) -> pl.Expr:
    """``end - start`` in fractional days, Float32 (null when either side is null)."""
    return (end - start).dt.total_days(fractional=True).cast(pl.Float32)


def add_item_attributes(pairs: pl.LazyFrame, items: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``item_published_age_days`` and ``item_has_description`` to each (user, item) row.

    Args:
        pairs: rows with ``item_idx`` (Int64) and ``cut`` (Datetime("us")); other columns pass
            through, row order is kept.
        items: the catalogue, one row per ``item_idx`` (Int64), with ``published_at``
            (Datetime("us"), nullable) and ``description`` (String, nullable); either column may
            be absent.

    Returns:
        ``pairs`` plus:

        * ``item_published_age_days`` (Float32): ``cut - published_at`` in days. Null when
          ``published_at`` is null or absent, and null when the item is published after the
          cut: at serving time (cut = now) no candidate can be unpublished, so a negative age
          would be a value the model never sees in production, and it would tell the model
          which items appear in the label window.
        * ``item_has_description`` (Int32): 1 if the description has a non-blank character, 0 if
          it is null or blank, null when the catalogue has no ``description`` column (unknown,
          not absent) or the item is not in the catalogue.
    """
    names = items.collect_schema().names()
    published = pl.col(C.PUBLISHED_AT) if C.PUBLISHED_AT in names else pl.lit(None, dtype=C.DATETIME)
    described = (pl.col(C.DESCRIPTION).str.strip_chars().str.len_chars().fill_null(0) > 0).cast(pl.Int32) \
        if C.DESCRIPTION in names else pl.lit(None, dtype=pl.Int32)
    attrs = items.select(pl.col(ITEM_IDX), published.alias("_published"), described.alias("item_has_description"))
    age = days_between(pl.col("_published"), pl.col(CUT))
    return (pairs.join(attrs, on=ITEM_IDX, how="left", maintain_order="left")
            .with_columns(pl.when(age >= 0).then(age).alias("item_published_age_days"))
            .select(pl.all().exclude("_published", "item_has_description"),
                    pl.col("item_has_description")))
