"""What every importer shares: the count check and writing a dataset folder.

An importer reads a public format and returns contract frames plus an :class:`ImportReport`
that accounts for every input row: written, or dropped with a reason. ``ImportReport.check``
makes "rows in = rows out + rows dropped" an enforced invariant rather than a hope. Rows that
were written only after their text was repaired (markup removed, a title taken from the brand)
are counted too, so that a scraped dump's damage is visible rather than silently fixed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys import contract as C
from recsys.io import write_dataset_folder

__all__ = ["SourceCount", "ImportReport", "ImportedDataset", "write_dataset"]

logger = logging.getLogger(__name__)


@dataclass
class SourceCount:
    """Rows read from one input file and where each went.

    ``rows_out`` counts the input rows that made it into the output (an input row may yield
    several output rows, e.g. a MIND impression; those are reported in ``ImportReport.tables``).
    ``repaired`` counts used rows whose text the importer fixed, per repair (a row may have
    several); repairs move no row, so they are outside the balance.
    """

    file: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + sum(self.dropped.values())


@dataclass
class ImportReport:
    """The count check of one import: per input file, and rows written per output table."""

    dataset: str
    sources: list[SourceCount] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Fail loudly if an input row is unaccounted for (an importer bug, not bad data)."""
        for s in self.sources:
            if not s.balanced:
                raise AssertionError(f"{s.file}: {s.rows_in} rows in != {s.rows_out} out + "
                                     f"{sum(s.dropped.values())} dropped")
            for repair, n in s.repaired.items():
                if not 0 <= n <= s.rows_out:
                    raise AssertionError(f"{s.file}: {n} rows repaired ({repair}) but {s.rows_out} used")

    def render(self) -> str:
        lines = [f"import {self.dataset}: count check passed (rows in = rows out + rows dropped)"]
        for s in self.sources:
            line = f"  {s.file}: {s.rows_in:,} rows in, {s.rows_out:,} used"
            for reason, n in s.dropped.items():
                line += f", {n:,} dropped ({reason})"
            lines.append(line)
            if s.repaired:
                lines.append("    repaired (still used): " + ", ".join(
                    f"{n:,} {repair}" for repair, n in s.repaired.items()))
        lines.append("  written: " + ", ".join(f"{name} {n:,} rows" for name, n in self.tables.items()))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class ImportedDataset:
    """Contract frames produced by an importer (optional tables may be ``None``)."""

    items: pl.DataFrame
    interactions: pl.DataFrame
    report: ImportReport
    users: pl.DataFrame | None = None
    user_tags: pl.DataFrame | None = None


def write_dataset(data: ImportedDataset, out_dir: str | Path) -> ImportReport:
    """Write the tables of ``data`` as Parquet into ``out_dir``, as one folder (:func:`recsys.io.write_dataset_folder`).

    Items and interactions are cast to the contract schemas, so a schema drift in an
    importer fails here rather than in training; the row counts are checked before anything is written.
    """
    out = Path(out_dir)
    items = data.items.select([pl.col(c).cast(t) for c, t in C.ITEM_SCHEMA.items()])
    inter = data.interactions.select([pl.col(c).cast(t) for c, t in C.INTERACTION_SCHEMA.items()]).sort(
        [C.TS, C.USER_ID, C.ITEM_ID, C.EVENT, C.IMPRESSION_ID], nulls_last=True, maintain_order=True)
    tables = {C.ITEMS_FILE: items, C.INTERACTIONS_FILE: inter}
    if data.users is not None:
        tables[C.USERS_FILE] = data.users
    if data.user_tags is not None:
        tables[C.USER_TAGS_FILE] = data.user_tags.select(
            [pl.col(c).cast(t) for c, t in C.USER_TAG_SCHEMA.items()])
    for name, frame in tables.items():
        data.report.tables[name] = frame.height
    data.report.check()
    write_dataset_folder(tables, out)
    for name, frame in tables.items():
        logger.info("wrote %s (%d rows)", out / name, frame.height)
    return data.report
