"""The user inspector: one user's recent history next to their top-k, explained, as text or one HTML page.

:func:`inspect_user` gathers it from a model and a dataset folder (the histories the lists
are built from); :func:`render_page` turns it into a self-contained HTML page (inline CSS, no
scripts, no external resources; every title and description escaped) and :func:`write_page`
writes it atomically (temporary file in the same folder, then rename).
"""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from recsys import contract as C
from recsys.bundle import ModelBundle
from recsys.errors import RecsysError
from recsys.explain import explain
from recsys.io import file_in_the_way

__all__ = ["Inspection", "inspect_user", "render_page", "write_page", "check_page_path", "HISTORY_COLUMNS"]

HISTORY_COLUMNS = (C.TS, C.EVENT, C.ITEM_ID, C.TITLE, C.CATEGORY, C.DESCRIPTION)
"""Columns of :attr:`Inspection.history`, in order."""


@dataclass(frozen=True)
class Inspection:
    """What the inspector shows about one user."""

    user_id: str
    known: bool
    """False: the model does not know the user; ``recommendations`` is the popularity fallback."""
    history: pl.DataFrame
    """The user's latest non-impression events in the data, newest first (:data:`HISTORY_COLUMNS`)."""
    n_events: int
    """All of the user's events in the data (impressions too)."""
    recommendations: pl.DataFrame
    """The top-k with explanations (:data:`recsys.explain.EXPLAIN_SCHEMA`) plus ``description``."""
    model: str = ""
    data: str = ""

    @property
    def note(self) -> str:
        """One line on the user: known or not, and how much history the data has."""
        if self.known:
            return f"user {self.user_id}: {self.n_events} events in the data; top {self.recommendations.height}"
        return (f"user {self.user_id} is unknown to the model: showing the most popular items (fallback); "
                f"{self.n_events} events in the data")


def inspect_user(bundle: ModelBundle, data_dir: Path, user_id: str, *, k: int = 10, history: int = 20,
                 exclude_seen: bool = True, model: str = "") -> Inspection:
    """The user's recent history in ``data_dir`` and their explained top-``k`` from ``bundle``.

    The model reads the histories of ``data_dir`` (as ``recsys recommend --data`` does), so the
    lists and their "because you liked" items come from the history shown.

    Args:
        bundle: the model as registered (its own histories are replaced by those of ``data_dir``).
        data_dir: dataset folder (items and interactions).
        user_id: the user to inspect; one the model does not know gets the fallback list.
        k: list length.
        history: how many of the latest events to show.
    """
    from recsys.io import DatasetPaths, load_dataset
    from recsys.validation import ContractPolicy

    dataset = load_dataset(DatasetPaths.from_dir(data_dir), ContractPolicy(drop_unknown_items=True))
    bundle = bundle.with_interactions(dataset.interactions)
    mine = dataset.interactions.filter(pl.col(C.USER_ID) == user_id)
    weights = bundle.event_weights
    shown = mine.filter(pl.col(C.EVENT).replace_strict(weights, default=1.0, return_dtype=pl.Float64) > 0)
    catalogue = dataset.items.select(C.ITEM_ID, *(c for c in (C.TITLE, C.CATEGORY, C.DESCRIPTION)
                                                  if c in dataset.items.columns))
    recent = (shown.sort(C.TS, descending=True).head(history).select(C.TS, C.EVENT, C.ITEM_ID)
              .join(catalogue, on=C.ITEM_ID, how="left", maintain_order="left"))
    for column in HISTORY_COLUMNS:
        if column not in recent.columns:
            recent = recent.with_columns(pl.lit(None, pl.String).alias(column))
    known = bool(bundle.user_index([user_id])[0] >= 0)
    recs = explain(bundle, [user_id], k, exclude_seen=exclude_seen, unknown="fallback")
    if C.DESCRIPTION in catalogue.columns:
        recs = recs.join(catalogue.select(C.ITEM_ID, C.DESCRIPTION), on=C.ITEM_ID, how="left", maintain_order="left")
    else:
        recs = recs.with_columns(pl.lit(None, pl.String).alias(C.DESCRIPTION))
    return Inspection(str(user_id), known, recent.select(HISTORY_COLUMNS), mine.height, recs, model=model,
                      data=str(data_dir))


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1d2733; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 2px solid #3b6ea8; padding-bottom: 0.2em; }
.meta { color: #5a6675; font-size: 0.9em; }
.note { padding: 0.6em 1em; border-radius: 6px; background: #eef4fb; border-left: 5px solid #3b6ea8; }
.note.unknown { background: #fdf1e6; border-left-color: #d9822b; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { text-align: left; vertical-align: top; padding: 0.45em 0.6em; border-bottom: 1px solid #dde3ea; }
th { background: #f3f6f9; }
tr:nth-child(even) td { background: #fafbfc; }
.title { font-weight: 600; }
.desc { color: #5a6675; font-size: 0.9em; }
.when { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.item { min-width: 14em; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.tag { display: inline-block; padding: 0 0.45em; margin: 0 0.2em 0.2em 0; border-radius: 4px; background: #e3ecf6;
       font-size: 0.85em; }
.pos { color: #1d7a3a; } .neg { color: #b23b3b; }
ul.contrib { margin: 0.3em 0 0 1.1em; padding: 0; font-size: 0.85em; color: #3d4753; }
"""


def _e(value) -> str:
    """Escaped text of a cell ('' for null)."""
    return "" if value is None else html.escape(str(value), quote=True)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else _e(value)


def render_page(inspection: Inspection) -> str:
    """The inspection as one self-contained HTML page (all text escaped)."""
    rows_history = "".join(
        f"<tr><td class=when>{_when(r[C.TS])}</td><td>{_e(r[C.EVENT])}</td><td>{_e(r[C.ITEM_ID])}</td>"
        f"<td><div class=title>{_e(r[C.TITLE])}</div><div class=desc>{_e(r[C.DESCRIPTION])}</div></td>"
        f"<td>{_e(r[C.CATEGORY])}</td></tr>" for r in inspection.history.iter_rows(named=True))
    if not rows_history:
        rows_history = "<tr><td colspan=5>no clicks or purchases in the data</td></tr>"
    rows_recs = []
    for r in inspection.recommendations.iter_rows(named=True):
        sources = "".join(f"<span class=tag>{_e(s.strip())}</span>" for s in (r["sources"] or "").split(",")
                          if s.strip()) or ("<span class=tag>popularity fallback</span>" if r["fallback"] else "")
        contrib = "".join(
            f"<li>{_e(c['phrase'])} <code>{_e(c['feature'])}</code> "
            f"<span class={'pos' if c['value'] >= 0 else 'neg'}>{c['value']:+.3f}</span></li>"
            for c in (r["contributions"] or []))
        score = "" if r["score"] is None else f"{r['score']:.4f}"
        rows_recs.append(
            f"<tr><td class=num>{_e(r['rank'])}</td>"
            f"<td class=item><div class=title>{_e(r[C.TITLE])}</div><div class=desc>{_e(r[C.DESCRIPTION])}</div>"
            f"<div class=meta>{_e(r[C.ITEM_ID])}</div></td>"
            f"<td class=num>{score}</td><td>{sources}</td>"
            f"<td>{_e(r['reason'])}{f'<ul class=contrib>{contrib}</ul>' if contrib else ''}</td></tr>")
    note_class = "note" if inspection.known else "note unknown"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recsys inspect: {_e(inspection.user_id)}</title>
<style>{_CSS}</style></head>
<body>
<h1>User {_e(inspection.user_id)}</h1>
<div class=meta>model {_e(inspection.model) or "-"} &middot; data {_e(inspection.data) or "-"}</div>
<p class="{note_class}">{_e(inspection.note)}</p>
<h2>Recent history ({inspection.history.height} latest clicks and purchases)</h2>
<table><thead><tr><th>when</th><th>event</th><th>item</th><th>title</th><th>category</th></tr></thead>
<tbody>{rows_history}</tbody></table>
<h2>Top {inspection.recommendations.height} recommendations</h2>
<table><thead><tr><th>rank</th><th>item</th><th>score</th><th>sources</th><th>why</th></tr></thead>
<tbody>{"".join(rows_recs)}</tbody></table>
</body></html>
"""


def check_page_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a ``Path`` when a page can be written there; a ``RecsysError`` saying why not otherwise.

    Call it before the work, too: found when writing, a folder (``--html reports/``) or a path
    under a file ended in ``IsADirectoryError`` with the inspection already done.
    """
    path = Path(path)
    if path.is_dir():
        raise RecsysError(f"HTML page {path} is a folder; give a file name, e.g. {path / 'inspect.html'}")
    if (blocker := file_in_the_way(path)) is not None:
        raise RecsysError(f"HTML page {path}: {blocker} is a file, so nothing can be written under it")
    return path


def write_page(inspection: Inspection, path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_page` to ``path`` atomically (a temporary file in its folder, then renamed).

    Raises:
        RecsysError: ``path`` is a folder, or lies under a file (checked with :func:`check_page_path`).
    """
    path = check_page_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_page(inspection))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report page is for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
