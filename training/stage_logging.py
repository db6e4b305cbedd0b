"""MLflow child runs of ``recsys train``'s stages and the test-window candidate recall.

One child run per stage (split, lightfm, candidates, features, ranker; the text tower logs
its own through Lightning), each with its metrics, timing and plots, under the parent run
that holds the config, the fingerprint and the evaluation report.
"""

from __future__ import annotations

import re
from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import polars.selectors as cs  # noqa: E402

from recsys import contract as C
from recsys.candidates import candidate_recall  # noqa: E402
from recsys.evaluation.metrics import hit_matrix  # noqa: E402
from recsys.evaluation.plots import REGISTERED_COLOUR, LabelSpec, label_right, model_styles, place_near  # noqa: E402
from recsys.evaluation.runner import EvalResult, cold_only_rows  # noqa: E402
from training.fit_pipeline import PipelineRecommender, StageOne  # noqa: E402
from training.ranker_plots import plot_importance, plot_learning_curves  # noqa: E402

__all__ = ["window_candidate_recall", "log_stages", "metric_dict", "cold_tradeoff", "merit_evidence",
           "plot_cold_tradeoff"]


def window_candidate_recall(main: PipelineRecommender, result: EvalResult) -> dict[str, float]:
    """Recall of the candidate stage on the test window: the ceiling of the ranked pipeline.

    Only the pairs and their source flags are kept (at 10,000 test users the feature tables were
    3M rows of ~35 columns, built and held only to be counted)."""
    window = result.data.test
    users = window.users
    blocks = []
    size = main.stage_one.config.block_size
    for lo in range(0, len(users), size):
        block = users[lo:lo + size]
        found = main.pipeline_.candidates(block, window.history[block])
        blocks.append(found.select(C.USER_IDX, C.ITEM_IDX, cs.starts_with("src_")))
    truth = window.truth[users].tocoo()
    pairs = pl.DataFrame({C.USER_IDX: users[truth.row].astype(np.int64), C.ITEM_IDX: truth.col.astype(np.int64)})
    return candidate_recall(pl.concat(blocks), pairs)


def _child(mlflow, parent, name: str, metrics: dict[str, float], figures: dict[str, plt.Figure] | None = None,
           texts: dict[str, str] | None = None, params: dict[str, object] | None = None) -> None:
    with mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=name, nested=True,
                          parent_run_id=parent.info.run_id):
        mlflow.log_params({k: str(v) for k, v in (params or {}).items()})
        mlflow.log_metrics(metric_dict(metrics))
        for file, figure in (figures or {}).items():
            mlflow.log_figure(figure, file)
            plt.close(figure)
        for file, text in (texts or {}).items():
            mlflow.log_text(text, file)


def metric_dict(metrics: dict[str, float]) -> dict[str, float]:
    """Finite metrics under MLflow-safe keys (``ndcg@10`` -> ``ndcg_at_10``)."""
    return {re.sub(r"[^A-Za-z0-9_\-. :/]", "_", k.replace("@", "_at_")): float(v) for k, v in metrics.items()
            if v is not None and np.isfinite(float(v))}


SETTINGS = {"pipeline": "merit", "pipeline_no_text": "no text", "pipeline_no_new": "no new items"}
"""The pipelines of the trade-off besides the quota views: new items on merit (the ranker's own order),
the pipeline without text, and the one without new-item candidates (what merit is compared with)."""
_QUOTA = r"^pipeline_cold(\d+)of\d+_(spread|end)$"
PAGE = 20
"""The first page: overall and new-item Recall@20, new items per list in the first 20."""


def cold_tradeoff(result: EvalResult) -> pl.DataFrame:
    """Overall and new-item Recall@20 (whole catalogue ranked) of new items on merit, by quota, and without them.

    One row per model: ``setting`` (``merit``, ``quota``, ``no text``, ``no new items``), ``slots``
    and ``place`` of a quota view (``pipeline_cold<slots>of<page>_<place>``; 0 and ``-`` otherwise),
    ``recall@20`` (every test positive, new ones included), ``cold_recall@20`` (new items only),
    ``ndcg@10`` and ``new_per_list`` (new items among each user's first 20, mean over test users).
    """
    wide = pl.DataFrame({"model": [m.name for m in result.models]})
    for slice_name, metric, column in (("all", "recall@20", "recall@20"), ("cold_items", "recall@20", "cold_recall@20"),
                                       ("all", "ndcg@10", "ndcg@10")):
        values = result.table.filter((pl.col("slice") == slice_name) & (pl.col("metric") == metric))
        # no test user with a new item: nothing to find, new-item recall 0
        wide = wide.join(values.select("model", pl.col("value").alias(column)), on="model", how="left").with_columns(
            pl.col(column).fill_null(0.0))
    cold = result.data.test.cold_items
    curve = wide.filter(pl.col("model").is_in(list(SETTINGS)) | pl.col("model").str.contains(_QUOTA))
    per_list = {m.name: float(_new_in(m.topk, cold)[:, :PAGE].sum(axis=1).mean()) for m in result.models
                if m.name in set(curve["model"])}
    curve = curve.with_columns(
        pl.col("model").replace_strict(SETTINGS, default="quota").alias("setting"),
        pl.col("model").str.extract(_QUOTA, 1).cast(pl.Int64).fill_null(0).alias("slots"),
        pl.col("model").str.extract(_QUOTA, 2).fill_null("-").alias("place"),
        pl.col("model").replace_strict(per_list, default=None, return_dtype=pl.Float64).alias("new_per_list"))
    order = {name: i for i, name in enumerate(["merit", "quota", "no text", "no new items"])}
    return (curve.with_columns(pl.col("setting").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
            .sort("_o", "place", "slots").drop("_o")
            .select("setting", "slots", "place", "model", "recall@20", "cold_recall@20", "ndcg@10", "new_per_list"))


def _new_in(topk: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """bool, the shape of ``topk``: which list entries are new items (-1 padding is not)."""
    return cold[np.maximum(topk, 0)] & (topk >= 0)


def merit_evidence(result: EvalResult, model: str = "pipeline") -> dict[str, float]:
    """Why the ranker did or did not let new items in: how often what it placed, or would place, was chosen.

    From ``model``'s test lists: ``page_end_hit_rate``, the share of the items at positions 16-20
    that the user chose; ``best_new_hit_rate``, the share of test users who chose the new item the
    model ranks first among new items (its own order, wherever that item stands in the full list);
    ``users_with_new`` and ``new_per_list``, the share of lists with a new item in the first 20 and
    how many; ``first_new_position``, where the first new item of a list stands, over the lists
    that hold one in their first ``max_k``. A best new item chosen far less often than the items at
    the end of the first page is one the ranker is right to leave below it: promoting it would
    cost overall recall.
    """
    found = next((m for m in result.models if m.name == model), None)
    window = result.data.test
    if found is None or not window.cold_items.any():
        return {}
    truth = window.truth[window.users].tocsr()
    top = found.topk
    new = _new_in(top, window.cold_items)
    out = {"page_end_hit_rate": float(hit_matrix(top[:, PAGE - 5:PAGE], truth).mean()),
           "users_with_new": float(new[:, :PAGE].any(axis=1).mean()),
           "new_per_list": float(new[:, :PAGE].sum(axis=1).mean())}
    if found.cold_only_topk is not None:  # the rows of the users with a new-item positive, in test-user order
        best = hit_matrix(found.cold_only_topk[:, :1], truth[cold_only_rows(window)])
        out["best_new_hit_rate"] = float(best.sum() / len(window.users))
    holding = new.any(axis=1)
    if holding.any():
        out["first_new_position"] = float(new.argmax(axis=1)[holding].mean() + 1)
    return out


SETTING_STYLE = {"quota": ("#e6550d", "^", "merit + new-item slots in the first page"),
                 "no text": ("#756bb1", "D", "no text tower"),
                 "no new items": ("#636363", "X", "no new-item candidates")}
"""Colour, marker and legend entry of the quota line and of each ablation on the trade-off plot."""


def plot_cold_tradeoff(curve: pl.DataFrame, reference: dict[str, float] | None = None) -> plt.Figure:
    """Overall Recall@20 against new-item Recall@20: merit, merit + each quota, no text, no new items.

    The quota is one line over its slot counts: where in the first page the slots sit changes NDCG@10
    (the table has both places) but not which items are in it, so not Recall@20. Each quota point is
    labelled by its number of slots (points that coincide share one label, ``0, 2, 4``); the
    ablations are hollow markers, so one that sits on the merit point still shows; the reference
    models (towers alone, the best baseline) are dotted lines named in the right margin, moved apart
    where their values are close. The layout is fixed, not tight, so that the labels outside the
    axes are inside the saved PNG.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    fig.subplots_adjust(left=0.11, right=0.76, top=0.9, bottom=0.27)
    origin = curve.filter(pl.col("setting") == "merit")
    quota = curve.filter(pl.col("setting") == "quota").unique("slots", keep="first").sort("slots")
    handles = []
    points: list[tuple[float, float, int, str]] = []  # new-item recall, recall, slots, setting
    if quota.height:
        colour, marker, label = SETTING_STYLE["quota"]
        line = pl.concat([origin, quota])
        (drawn,) = ax.plot(line["cold_recall@20"], line["recall@20"], marker=marker, color=colour, linewidth=1.6,
                           markersize=6, label=label, zorder=3)
        handles.append(drawn)
        points += [(r["cold_recall@20"], r["recall@20"], r["slots"], "quota") for r in quota.iter_rows(named=True)]
    for row in origin.iter_rows(named=True):
        handles.append(ax.plot([row["cold_recall@20"]], [row["recall@20"]], marker="o", markersize=10, linestyle="",
                               color=REGISTERED_COLOUR, zorder=4, label="pipeline: new items on merit (no slots)")[0])
        points.append((row["cold_recall@20"], row["recall@20"], 0, "merit"))
    for row in curve.filter(pl.col("setting").is_in(["no text", "no new items"])).iter_rows(named=True):
        colour, marker, label = SETTING_STYLE[row["setting"]]
        handles.append(ax.plot([row["cold_recall@20"]], [row["recall@20"]], marker=marker, markersize=12,
                               linestyle="", markerfacecolor="none", markeredgewidth=1.6, color=colour, zorder=5,
                               label=label)[0])
    styles = model_styles(list(reference or {}), "pipeline")
    for name, value in (reference or {}).items():
        ax.axhline(value, linestyle=":", linewidth=1.2, color=styles[name].colour, zorder=1)
    high = max(curve["cold_recall@20"].to_list() + [0.0])
    high = high if high > 0 else 0.1  # no new item reached a top 20: still a readable axis from 0
    ax.set_xlim(-0.05 * high, 1.1 * high)
    ax.set(xlabel="new-item Recall@20 (whole catalogue ranked)", ylabel="Recall@20 (every test positive)")
    ax.set_title("New items on merit, by quota, and left out\n(quota points labelled by the number of slots)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(y=0.1)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.45, 0.0), ncol=2, fontsize=8, frameon=False)
    label_right(ax, [LabelSpec(name, value, None, styles[name].text_colour)
                     for name, value in (reference or {}).items()])
    place_near(ax, *_slot_labels(ax, points), lines=handles)
    return fig


def _slot_labels(ax: plt.Axes, points: list[tuple[float, float, int, str]]) -> tuple[list[LabelSpec], list[float]]:
    """One label per group of points within a marker of each other: their slot counts, ``0, 2, 4``."""
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    near = 6.0 * ax.figure.dpi / 72.0  # pixels: about a marker
    groups: list[list[tuple[float, float, int, str]]] = []
    for point in points:
        xy = ax.transData.transform(point[:2])
        group = next((g for g in groups if np.hypot(*(ax.transData.transform(g[0][:2]) - xy)) < near), None)
        if group is None:
            groups.append([point])
        else:
            group.append(point)
    labels = []
    for group in groups:
        slots = sorted({p[2] for p in group})
        colour = REGISTERED_COLOUR if 0 in slots else SETTING_STYLE["quota"][0]
        labels.append(LabelSpec(", ".join(map(str, slots)), group[0][1], group[0][0], colour,
                                "bold" if 0 in slots else "normal"))
    return labels, [5.0] * len(labels)


def _lightfm_figure(curve: dict[int, float]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = sorted(curve)
    ax.plot(epochs, [curve[e] for e in epochs], marker="o")
    ax.set(xlabel="epochs", ylabel="NDCG@10 (label window)", title="LightFM: epochs chosen on the label window")
    fig.tight_layout()
    return fig


def log_stages(mlflow, parent, stage_one: StageOne, main: PipelineRecommender, recall: dict[str, float],
               split_s: float) -> None:
    """Log a child run per stage under ``parent`` (``recall``: the test window's candidate recall)."""
    stats = stage_one.stats
    _child(mlflow, parent, "split", {"seconds": split_s, **stats["split"]})
    lightfm = stats["lightfm"] | {f"label_ndcg@10_epochs_{e}": v for e, v in stage_one.lightfm_curve.items()}
    _child(mlflow, parent, "lightfm", lightfm, {"lightfm_epochs.png": _lightfm_figure(stage_one.lightfm_curve)},
           params={f"lightfm.{k}": v for k, v in asdict(stage_one.config.lightfm).items()}
           | {"epochs_tried": list(stage_one.config.lightfm_epochs)})
    label = {k.removeprefix("label_candidate_"): v for k, v in main.stats_.items() if k.startswith("label_candidate_")}
    _child(mlflow, parent, "candidates", {f"label_{k}": v for k, v in label.items()}
           | {f"test_{k}": v for k, v in recall.items()},
           params={"sources": ",".join(main.pipeline_.state.sources)} | asdict(main.pipeline_.state.candidates))
    _child(mlflow, parent, "features", {"seconds": main.stats_["features_s"], "rows": main.stats_["train_rows"],
                                        "n_features": main.stats_["n_features"]},
           texts={"features.txt": "\n".join(main.ranker_.features), "feature_summary.txt": main.feature_summary_})
    report = main.report_
    ranker_metrics = {"seconds": main.stats_["ranker_s"], "mean_best_ndcg": report.mean_best_ndcg,
                      "groups_used": report.n_groups_used, "groups_dropped": report.n_groups_dropped}
    ranker_metrics |= {f"fold{f.fold}_best_iteration": f.best_iteration for f in report.folds}
    importance = main.ranker_.importance()
    _child(mlflow, parent, "ranker", ranker_metrics,
           {"ranker_learning_curves.png": plot_learning_curves(report), "ranker_importance.png":
            plot_importance(main.ranker_)},
           {"ranker_importance.csv": importance.write_csv()},
           {"base": main.base_, "features": len(main.ranker_.features), "kept": main.kept_}
           | {f"ranker.{k}": v for k, v in asdict(stage_one.config.ranker).items()})
