"""Evaluation output: the terminal table, the JSON (BENCHMARKS.md shape) and an HTML report.

The HTML report is one self-contained file (plots embedded as PNG data URIs) so it can be
mailed, attached to an MLflow run, or opened from a CI artifact with no server.
"""

from __future__ import annotations

import base64
import html
import json
import os
import platform
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from recsys import contract as C  # noqa: E402
from recsys.errors import RecsysError  # noqa: E402
from recsys.evaluation.bootstrap import paired_bootstrap  # noqa: E402
from recsys.evaluation.plots import report_images  # noqa: E402
from recsys.evaluation.runner import EvalResult  # noqa: E402
from recsys.io import file_in_the_way  # noqa: E402

__all__ = ["HEADLINE", "ReportFiles", "metric_name", "results_rows", "results_json", "render_table", "verdict",
           "write_report"]

HEADLINE: tuple[tuple[str, str], ...] = (
    ("all", "ndcg@10"), ("all", "recall@20"), ("all", "hitrate@10"), ("all", "mrr"),
    ("cold_items", "recall@20"), ("cold_only", "recall@20"), ("warm_items", "ndcg@10"), ("all", "coverage@10"),
)
"""(slice, metric) pairs shown on the terminal; everything else is in the JSON and report."""
STRICT_SLICE = f"event_{C.PURCHASE}"
"""Each model's lists judged on purchases alone: the strict relevance, shown where the run's is wider."""

_SLICE_PREFIX = {"all": "", "cold_items": "cold_", "cold_only": "cold_only_", "warm_items": "warm_",
                 "impressions": "imp_"}


def metric_name(slice_name: str, metric: str) -> str:
    """``cold_items`` + ``recall@20`` -> ``cold_recall@20`` (the BENCHMARKS.md naming)."""
    prefix = _SLICE_PREFIX.get(slice_name, f"{slice_name}_")
    return f"{prefix}{metric}"


def results_rows(result: EvalResult) -> list[dict[str, object]]:
    """Tidy rows (model, metric, value, ci_low, ci_high) of every figure in the run."""
    rows = []
    for r in result.table.iter_rows(named=True):
        row = {"model": r["model"], "metric": metric_name(r["slice"], r["metric"]), "value": r["value"]}
        if r["ci_low"] is not None:
            row |= {"ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_users": r["n_users"]}
        rows.append(row)
    for m in result.models:
        rows += [{"model": m.name, "metric": k, "value": v} for k, v in m.seconds.items()]
    return rows


def results_json(result: EvalResult, *, dataset: str, command: str, git_commit: str = "unknown") -> dict:
    """The run in the one benchmark shape of ``../shared/BENCHMARKS.md`` (plus the paired tests)."""
    cfg = result.data.config
    return {
        "benchmark": "evaluate",
        "dataset": dataset,
        "split": cfg.split.describe(),
        "history": cfg.history,
        "positives": list(cfg.positives),
        "relevant": list(cfg.relevance),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": command,
        "git_commit": git_commit,
        "settings": {m.name: str(m.setting) for m in result.models},
        "rows": results_rows(result),
        "paired": result.paired.to_dicts(),
    }


def verdict(result: EvalResult, model: str, baselines: Sequence[str], metric: str = "ndcg@10",
            serves: str | None = None) -> str:
    """One line: ``model`` against the best of ``baselines`` on ``metric``, with the paired 95% CI.

    The best baseline is the one with the highest test value; the difference is paired over the
    same test users (bootstrap), so its interval says whether the gap is more than noise.
    ``serves``: the baseline ``model`` serves alone (its gate found no ranking better), said first.
    """
    by_name = {r.name: r for r in result.models}
    if model not in by_name:
        return f"{model}: not evaluated"
    values = {r.name: float(np.nanmean(r.per_user[metric])) for r in result.models if r.name in baselines}
    if not values:
        return f"{model}: {metric} {np.nanmean(by_name[model].per_user[metric]):.4f} (no baseline evaluated)"
    best = max(values, key=values.get)
    cfg = result.data.config
    paired = paired_bootstrap(by_name[model].per_user[metric], by_name[best].per_user[metric],
                              n_resamples=cfg.n_bootstrap, seed=cfg.seed)
    own = float(np.nanmean(by_name[model].per_user[metric]))
    if paired.low > 0:
        outcome = f"{model} beats the best baseline"
    elif paired.high < 0:
        outcome = f"the best baseline ({best}) beats {model}"
    else:
        outcome = f"{model} and the best baseline are level (the interval holds 0)"
    if serves:
        outcome = f"a simpler model won on held-out users, so {model} serves the {serves} baseline alone"
    return (f"{outcome}: {metric} {own:.4f} vs {best} {values[best]:.4f}, difference {paired.mean_diff:+.4f} "
            f"[{paired.low:+.4f}, {paired.high:+.4f}] (paired 95% CI over {len(result.data.test.users):,} test users)")


MIN_SLICE_USERS = 30
"""A slice's metric is shown on the terminal only with at least this many test users behind it: fewer
make an interval like [0.000, 0.375] that says nothing (every figure stays in the JSON)."""


def _slice_shown(result: EvalResult, slice_name: str, metric: str) -> tuple[int, str | None]:
    """Users behind ``slice_name`` and why its ``metric`` cannot vary (None: it can, so it is shown).

    A slice needs :data:`MIN_SLICE_USERS` users; ``cold_only`` ranks only the new items, so with no
    more of them than the cut-off every list holds them all and its recall is 1 for any model.
    """
    rows = result.table.filter((pl.col("slice") == slice_name) & (pl.col("metric") == metric))
    n_users = int(rows["n_users"].max() or 0) if rows.height else 0
    if slice_name == "all":
        return n_users, None
    if slice_name == "cold_only" and "@" in metric:
        n_new, k = int(result.data.test.cold_items.sum()), int(metric.split("@")[1])
        if n_new <= k:
            return n_users, f"only {n_new} new item(s), so every list of {k} holds them all"
    if n_users < MIN_SLICE_USERS:
        return n_users, f"{n_users} user(s), fewer than {MIN_SLICE_USERS}"
    return n_users, None


def render_table(result: EvalResult, skip: Collection[str] = ()) -> str:
    """Models x headline metrics, each as ``value [low, high]``, best first by NDCG@10.

    Slice columns carry their user count (``cold_recall@20 (n=57)``); a slice metric that cannot
    vary (:func:`_slice_shown`) is left out with a line saying why. ``skip``: models not shown
    (views printed in a table of their own, such as the cold-exposure settings).
    """
    t = result.table
    cfg = result.data.config
    headline = HEADLINE
    if cfg.relevance != (C.PURCHASE,) and (t["slice"] == STRICT_SLICE).any():  # where relevance is wider: the strict
        headline = (*HEADLINE[:1], (STRICT_SLICE, "ndcg@10"), *HEADLINE[1:])   # view (purchases only) beside it
    columns, hidden = {}, []
    for slice_name, metric in headline:
        n_users, why = _slice_shown(result, slice_name, metric)
        name = metric_name(slice_name, metric)
        if why is not None:
            hidden.append(f"{name} ({why})")
        elif (t["slice"] == slice_name).any():
            columns[(slice_name, metric)] = name if slice_name == "all" else f"{name} (n={n_users:,})"
    out = []
    for model in t["model"].unique(maintain_order=True):
        if model in skip:
            continue
        row: dict[str, object] = {"model": model}
        for (slice_name, metric), column in columns.items():
            hit = t.filter((pl.col("model") == model) & (pl.col("slice") == slice_name) & (pl.col("metric") == metric))
            if hit.height:
                v, lo, hi = hit.row(0)[3:6]
                row[column] = f"{v:.4f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")
        out.append(row)
    frame = pl.DataFrame(out).sort(pl.col("ndcg@10").str.slice(0, 6).cast(pl.Float64), descending=True)
    head = (f"split {cfg.split.describe()}, history at test time: {cfg.history}, positives: "
            f"{', '.join(cfg.positives)}, relevant: {', '.join(cfg.relevance)}, "
            f"{len(result.data.test.users):,} test users, "
            f"{len(result.data.item_ids):,} items ranked, 95% bootstrap CIs over users ({cfg.n_bootstrap})")
    foot = f"\nnot shown (too few to say anything; results.json has them): {'; '.join(hidden)}" if hidden else ""
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=250, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, fmt_str_lengths=40):
        return f"{head}\n{frame}{foot}"


@dataclass(frozen=True)
class ReportFiles:
    """Paths of everything ``write_report`` wrote."""

    json: Path
    html: Path
    plots: tuple[Path, ...]


def _table_html(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in frame.iter_rows())
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape("" if value is None else str(value))


def _html(result: EvalResult, payload: dict, images: dict[str, bytes], skip: Collection[str] = ()) -> str:
    table = html.escape(render_table(result, skip=skip))
    paired = result.paired
    figs = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{name}</figcaption></figure>" for name, png in images.items())
    rows = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in ("model", "metric", "value", "ci_low",
                                                                     "ci_high")) + "</tr>"
                   for r in payload["rows"])
    paired_html = "" if paired.is_empty() else (
        "<h2>Paired bootstrap: model minus reference (95% CI over users)</h2>" + _table_html(paired))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>recsys evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}pre{{background:#f6f6f6;padding:1em;
overflow:auto}}img{{max-width:100%}}table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ddd;
padding:2px 6px}}</style></head><body><h1>recsys evaluation: {html.escape(payload['dataset'])}</h1>
<pre>{table}</pre>{paired_html}<h2>Plots</h2>{figs}<h2>All figures</h2><table><tr><td>model</td><td>metric</td>
<td>value</td><td>ci_low</td><td>ci_high</td></tr>{rows}</table></body></html>"""


def write_report(result: EvalResult, out_dir: str | Path, *, dataset: str, command: str,
                 git_commit: str = "unknown", skip: Collection[str] = ()) -> ReportFiles:
    """Write ``results.json``, ``report.html`` and the plots (PNG) into ``out_dir`` atomically.

    ``skip``: models left out of the report's table (views with a table of their own); the JSON keeps them.

    Raises:
        RecsysError: ``out_dir`` is a file or lies under one (``mkdir`` would raise after the whole evaluation).
    """
    out = Path(out_dir)
    if (blocker := file_in_the_way(out / "results.json")) is not None:  # out itself, or a folder above it
        raise RecsysError(f"report folder {out}: {blocker} is a file; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    payload = results_json(result, dataset=dataset, command=command, git_commit=git_commit)
    images = report_images(result)
    plots = tuple(_write(out / f"{name}.png", png) for name, png in images.items())
    json_path = _write(out / "results.json", (json.dumps(payload, indent=2, default=float) + "\n").encode())
    html_path = _write(out / "report.html", _html(result, payload, images, skip).encode())
    return ReportFiles(json_path, html_path, plots)


def _write(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
