"""The data contract: column names, event names and the normalised schema, written once.

Inner code imports these constants instead of typing column names. ``recsys.io`` checks
raw files against this contract once, at load time, and hands back frames in exactly the
schemas below, so nothing downstream re-checks them.

Items (one row per catalogue item)::

    item_id: str (unique)  title: str (non-empty)  description: str | null
    category: str | null   tags: list[str]          published_at: datetime | null

Interactions (one row per event)::

    user_id: str  item_id: str  timestamp: datetime (UTC, naive)  event: str
    impression_id: str | null   (items shown together; shown-not-clicked = explicit negative)
    rating: float | null        (explicit rating, kept by the MovieLens importer)
    from_history: bool          (MIND: click reconstructed from a user's history column)

Users (optional side table): ``user_id`` plus any feature columns.
"""

from __future__ import annotations

import polars as pl

__all__ = [
    "USER_ID", "ITEM_ID", "TS", "EVENT", "IMPRESSION_ID", "RATING", "FROM_HISTORY",
    "TITLE", "DESCRIPTION", "CATEGORY", "TAGS", "PUBLISHED_AT", "TAG",
    "IMPRESSION", "CLICK", "PURCHASE", "DEFAULT_EVENT_WEIGHTS",
    "SPLIT", "TRAIN", "VALID", "TEST", "IS_COLD_ITEM", "IS_COLD_USER",
    "USER_IDX", "ITEM_IDX", "CUT", "LABEL",
    "DATETIME", "ITEM_SCHEMA", "INTERACTION_SCHEMA", "USER_TAG_SCHEMA",
    "ITEM_REQUIRED", "ITEM_OPTIONAL", "INTERACTION_REQUIRED", "INTERACTION_OPTIONAL",
    "ITEMS_FILE", "INTERACTIONS_FILE", "USERS_FILE", "USER_TAGS_FILE",
]

# Interaction columns.
USER_ID = "user_id"
ITEM_ID = "item_id"
TS = "timestamp"
EVENT = "event"
IMPRESSION_ID = "impression_id"
RATING = "rating"
FROM_HISTORY = "from_history"

# Item columns.
TITLE = "title"
DESCRIPTION = "description"
CATEGORY = "category"
TAGS = "tags"
PUBLISHED_AT = "published_at"

# User-tag side table (MovieLens tags are events of users, never item text by default).
TAG = "tag"

# Event names. More can be added through configuration, each with a weight.
IMPRESSION = "impression"
CLICK = "click"
PURCHASE = "purchase"
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {IMPRESSION: 0.0, CLICK: 1.0, PURCHASE: 2.0}

# Index columns of the evaluation and the ranking stage (rows and columns of its matrices), the
# per-user cut that features are computed as of, and the ranker's graded label.
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
CUT = "cut"
LABEL = "label"

# Columns added by the temporal split (features/split.py).
SPLIT = "split"
TRAIN = "train"
VALID = "valid"
TEST = "test"
IS_COLD_ITEM = "is_cold_item"
IS_COLD_USER = "is_cold_user"

DATETIME = pl.Datetime("us")

ITEM_SCHEMA: dict[str, pl.DataType] = {
    ITEM_ID: pl.String(),
    TITLE: pl.String(),
    DESCRIPTION: pl.String(),
    CATEGORY: pl.String(),
    TAGS: pl.List(pl.String()),
    PUBLISHED_AT: DATETIME,
}
ITEM_REQUIRED: tuple[str, ...] = (ITEM_ID, TITLE)
ITEM_OPTIONAL: tuple[str, ...] = (DESCRIPTION, CATEGORY, TAGS, PUBLISHED_AT)

INTERACTION_SCHEMA: dict[str, pl.DataType] = {
    USER_ID: pl.String(),
    ITEM_ID: pl.String(),
    TS: DATETIME,
    EVENT: pl.String(),
    IMPRESSION_ID: pl.String(),
    RATING: pl.Float64(),
    FROM_HISTORY: pl.Boolean(),
}
INTERACTION_REQUIRED: tuple[str, ...] = (USER_ID, ITEM_ID, TS, EVENT)
INTERACTION_OPTIONAL: tuple[str, ...] = (IMPRESSION_ID, RATING, FROM_HISTORY)

USER_TAG_SCHEMA: dict[str, pl.DataType] = {
    USER_ID: pl.String(), ITEM_ID: pl.String(), TAG: pl.String(), TS: DATETIME,
}

# File names of a dataset folder, as written by the importers and the demo.
ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
USERS_FILE = "users.parquet"
USER_TAGS_FILE = "user_tags.parquet"
