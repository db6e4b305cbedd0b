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

from recsys import contract as C
from recsys.candidates import candidate_recall  # noqa: E402
from recsys.evaluation.plots import REGISTERED_COLOUR, LabelSpec, label_right, model_styles, place_near  # noqa: E402
from recsys.evaluation.runner import EvalResult  # noqa: E402
from training.fit_pipeline import PipelineRecommender, StageOne  # noqa: E402
from training.ranker_plots import plot_importance, plot_learning_curves  # noqa: E402

__all__ = ["window_candidate_recall", "log_stages", "metric_dict", "cold_tradeoff",
           "plot_cold_tradeoff"]


def window_candidate_recall(main: PipelineRecommender, result: EvalResult) -> dict[str, float]:
    """Recall of the candidate stage on the test window: the ceiling of the ranked pipeline."""
    window = result.data.test
    users = window.users
    blocks = []
    size = main.stage_one.config.block_size
    for lo in range(0, len(users), size):
        block = users[lo:lo + size]
        blocks.append(main.pipeline_.candidate_table(block, window.history[block]))
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


def cold_tradeoff(result: EvalResult) -> pl.DataFrame:
    """The cold-exposure curve: NDCG@10 and new-item Recall@20 (whole catalogue ranked) per setting.

    One row per ``pipeline`` model: ``slots`` (0 = the ranker's own order) and ``place`` of its
    new-item quota (``pipeline_cold<slots>of<page>_<place>``).
    """
    table = result.table.filter(((pl.col("slice") == "all") & (pl.col("metric") == "ndcg@10"))
                                | ((pl.col("slice") == "cold_items") & (pl.col("metric") == "recall@20")))
    wide = table.with_columns(pl.when(pl.col("slice") == "all").then(pl.lit("ndcg@10"))
                              .otherwise(pl.lit("cold_recall@20")).alias("what")).pivot(
        "what", index="model", values="value", aggregate_function="first")
    for column in ("ndcg@10", "cold_recall@20"):
        if column not in wide.columns:
            wide = wide.with_columns(pl.lit(0.0).alias(column))
    pattern = r"^pipeline_cold(\d+)of\d+_(spread|end)$"
    curve = wide.filter((pl.col("model") == "pipeline") | pl.col("model").str.contains(pattern)).with_columns(
        pl.col("model").str.extract(pattern, 1).cast(pl.Int64).fill_null(0).alias("slots"),
        pl.col("model").str.extract(pattern, 2).fill_null("-").alias("place"))
    return curve.select("slots", "place", "model", "ndcg@10", "cold_recall@20").sort("place", "slots")


PLACE_STYLE = {"spread": ("#2171b5", "s", "new-item slots spread through the first page"),
               "end": ("#e6550d", "^", "new-item slots at the end of the first page")}
"""Colour, marker and legend entry of each place of the new-item quota (others: grey)."""


def plot_cold_tradeoff(curve: pl.DataFrame, reference: dict[str, float] | None = None) -> plt.Figure:
    """NDCG@10 against new-item Recall@20 over the cold-exposure settings (reference models as lines).

    Each point is labelled by its number of new-item slots (points that coincide share one
    label, ``0, 2, 4``); the reference models (towers alone, baselines) are dotted lines named
    in the right margin, moved apart where their values are close. The layout is fixed, not
    tight, so that the labels outside the axes are inside the saved PNG.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    fig.subplots_adjust(left=0.11, right=0.76, top=0.9, bottom=0.25)
    origin = curve.filter(pl.col("slots") == 0)
    places = sorted(set(curve["place"].to_list()) - {"-"})
    handles = []
    points: list[tuple[float, float, int, str]] = []  # recall, ndcg, slots, place
    for place in places:
        colour, marker, label = PLACE_STYLE.get(place, ("0.4", "o", f"new-item slots, {place}"))
        line = pl.concat([origin, curve.filter(pl.col("place") == place)]).sort("slots")
        (drawn,) = ax.plot(line["cold_recall@20"], line["ndcg@10"], marker=marker, color=colour, linewidth=1.6,
                           markersize=6, label=label, zorder=3)
        handles.append(drawn)
        points += [(r["cold_recall@20"], r["ndcg@10"], r["slots"], place) for r in line.iter_rows(named=True)
                   if r["slots"] > 0]
    for row in origin.iter_rows(named=True):
        handles.append(ax.plot([row["cold_recall@20"]], [row["ndcg@10"]], marker="o", markersize=10, linestyle="",
                               color=REGISTERED_COLOUR, zorder=4, label="pipeline (no new-item slots)")[0])
        points.append((row["cold_recall@20"], row["ndcg@10"], 0, "-"))
    styles = model_styles(list(reference or {}), "pipeline")
    for name, value in (reference or {}).items():
        ax.axhline(value, linestyle=":", linewidth=1.2, color=styles[name].colour, zorder=1)
    high = max([p[0] for p in points] + [0.0])
    high = high if high > 0 else 0.1  # no new item reached the top 20: still a readable axis from 0
    ax.set_xlim(-0.05 * high, 1.1 * high)
    ax.set(xlabel="new-item Recall@20 (whole catalogue ranked)", ylabel="NDCG@10")
    ax.set_title("Cold exposure: new-item slots in the first page\n(points labelled by the number of slots)",
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
        colour = REGISTERED_COLOUR if 0 in slots else PLACE_STYLE.get(group[0][3], ("0.4",))[0]
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
    table = main.train_table_
    _child(mlflow, parent, "features", {"seconds": main.stats_["features_s"], "rows": table.height,
                                        "n_features": main.stats_["n_features"]},
           texts={"features.txt": "\n".join(main.ranker_.features),
                  "feature_summary.txt": str(table.describe())})
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
