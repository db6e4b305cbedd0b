"""Figures of a ranker fit: learning curves per fold and feature importance.

Rendered with the Agg backend so they work on servers and in CI; log them to MLflow with
``mlflow.log_figure(fig, "ranker_curves.png")`` or save with ``fig.savefig``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from recsys.evaluation.plots import LabelSpec, place_near  # noqa: E402
from recsys.ranker import RankerEnsemble  # noqa: E402
from training.fit_ranker import RankerReport  # noqa: E402

__all__ = ["plot_learning_curves", "plot_importance"]


def plot_learning_curves(report: RankerReport, *, show_train: bool = True) -> Figure:
    """Validation (solid) and training (dashed) NDCG per boosting round, one colour per fold.

    Each fold's best iteration is marked with a dot on its validation curve.

    Args:
        report: the report returned by ``fit_ranker``.
        show_train: also draw the training curves.

    Returns:
        The figure (close it with ``plt.close(fig)`` when done).
    """
    fig, ax = plt.subplots(figsize=(8, 4.5))
    best, curves = [], []
    for fold in report.folds:
        rounds = range(1, len(fold.valid_ndcg) + 1)
        (line,) = ax.plot(rounds, fold.valid_ndcg, label=f"fold {fold.fold} valid")
        curves.append(line)
        if show_train and fold.train_ndcg:
            curves += ax.plot(range(1, len(fold.train_ndcg) + 1), fold.train_ndcg, linestyle="--",
                              color=line.get_color(), alpha=0.6, label=f"fold {fold.fold} train")
        ax.plot([fold.best_iteration], [fold.best_ndcg], marker="o", color=line.get_color())
        best.append(LabelSpec(f"{fold.best_iteration}", fold.best_ndcg, fold.best_iteration, line.get_color()))
    ax.set_xlabel("boosting round")
    ax.set_ylabel(report.metric)
    ax.set_title(f"Ranker learning curves (best = dot; mean best {report.metric} {report.mean_best_ndcg:.4f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the curves fill the axes
    fig.tight_layout()
    place_near(ax, best, [3.0] * len(best), lines=curves)  # folds stopping alike get names that do not overlap
    return fig


def plot_importance(ensemble: RankerEnsemble, top: int = 25) -> Figure:
    """Horizontal bars of each feature's share of the total gain, largest at the top.

    Args:
        ensemble: a fitted ranker.
        top: number of features shown (the ``top`` largest by gain); >= 1.

    Returns:
        The figure (close it with ``plt.close(fig)`` when done).

    Raises:
        ValueError: ``top`` < 1.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1; got {top}")
    table = ensemble.importance().head(top)
    names = table.get_column("feature").to_list()[::-1]
    shares = table.get_column("gain_share").to_list()[::-1]
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.3 * len(names)))
    ax.barh(names, shares)
    ax.set_xlabel("share of total gain")
    ax.set_title(f"Ranker feature importance (top {len(names)} of {len(ensemble.features)})")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
