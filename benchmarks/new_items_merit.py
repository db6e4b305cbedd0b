"""New items in the whole catalogue: on merit (no quota), by quota, and left out, on real data.

Where the new-item protocol (``benchmarks/new_items.py``) ranks only the new items, this ranks
everything, as a list a user sees does. For each dataset one child process runs the default
command with the views the recipe drops on large logs turned back on:

    recsys train --data DIR --set pipeline.ablations=true --set pipeline.cold_curve_slots=[2,4,6,10]
        --set pipeline.cold_curve_places=[end] --set register=null

and from its report (``results.json``, ``cold_tradeoff.csv``) and MLflow run this reads, per
setting: overall Recall@20 (every test positive, new ones included) and new-item Recall@20
(whole catalogue ranked), with CIs, and new items per list. The settings: ``merit`` (the
registered pipeline: the ranker's own order, no quota), ``quota`` (2-10 of the first 20 slots
kept for new items; where in the page does not change Recall@20), ``no text`` and
``no new items`` (no source proposes a new item: what merit's overall recall is compared with,
paired over the same users). ``merit_evidence`` says why the ranker did what it did: how often
each user's best new item (the ranker's own order among new items) was chosen, against the
items at positions 16-20. Prints a table,
draws ``benchmarks/results/new_items_merit.png`` (one panel a dataset) and writes JSON in the
shape of ``../shared/BENCHMARKS.md``.

    python benchmarks/new_items_merit.py --shared ../shared/data [--only movielens,ml-1m,microlens-50k]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite import benchmark_args, train_each, write_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "new_items_merit.json"
DATASETS = ("movielens", "ml-1m", "microlens-50k")
VIEWS = ("pipeline.ablations=true", "pipeline.cold_curve_slots=[2,4,6,10]", "pipeline.cold_curve_places=[end]",
         "register=null")
"""The default command's settings changed here: the views it skips on large logs, no registration."""
EVIDENCE = ("page_end_hit_rate", "best_new_hit_rate", "first_new_position", "users_with_new", "new_per_list")


def _row(results: dict, model: str, metric: str) -> dict | None:
    return next((r for r in results["rows"] if r["model"] == model and r["metric"] == metric), None)


def dataset_rows(name: str, folder: Path, store: Path, wall: float) -> list[dict]:
    """One dataset's rows: each setting's overall and new-item Recall@20, merit against no new items, the evidence."""
    import polars as pl
    from mlflow.tracking import MlflowClient

    report = folder / "reports" / "train"
    results = json.loads((report / "results.json").read_text())
    curve = pl.read_csv(report / "cold_tradeoff.csv")
    rows: list[dict] = []
    for entry in curve.iter_rows(named=True):
        model = entry["model"]
        base = {"dataset": name, "model": model, "setting": entry["setting"], "slots": entry["slots"]}
        for metric in ("recall@20", "cold_recall@20", "ndcg@10"):
            found = _row(results, model, metric)
            value = found or {"value": 0.0}  # no test user with a new item positive: nothing to find
            rows.append(base | {"metric": metric, "value": round(value["value"], 5)}
                        | ({"ci_low": round(found["ci_low"], 5), "ci_high": round(found["ci_high"], 5)}
                           if found and found.get("ci_low") is not None else {}))
        rows.append(base | {"metric": "new_per_list@20", "value": round(entry["new_per_list"], 4)})
    cold_users = _row(results, "pipeline", "cold_recall@20")
    rows.append({"dataset": name, "model": "pipeline", "metric": "cold_users",
                 "value": cold_users["n_users"] if cold_users else 0})
    paired = next((p for p in results["paired"] if p["model"] == "pipeline_no_new" and p["metric"] == "recall@20"),
                  None)  # no_new - pipeline
    if paired is not None:
        rows.append({"dataset": name, "model": "pipeline", "metric": "paired_diff_recall@20_vs_no_new",
                     "value": round(-paired["mean_diff"], 5) + 0.0, "ci_low": round(-paired["ci_high"], 5) + 0.0,
                     "ci_high": round(-paired["ci_low"], 5) + 0.0})
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("recsys-train").experiment_id
    metrics = client.search_runs([experiment], "tags.stage = 'all'")[0].data.metrics
    rows += [{"dataset": name, "model": "pipeline", "metric": f"merit_{k}",
              "value": round(metrics[f"new_items/{k}"], 5)} for k in EVIDENCE if f"new_items/{k}" in metrics]
    rows.append({"dataset": name, "model": "train", "metric": "wall_s", "value": round(wall, 1)})
    return rows


def _value(rows: list[dict], dataset: str, model: str, metric: str) -> float:
    found = next((r for r in rows if r["dataset"] == dataset and r["model"] == model and r["metric"] == metric), None)
    return float("nan") if found is None else found["value"]


def render(rows: list[dict]) -> str:
    """Per dataset and setting: overall and new-item Recall@20, new items per list; then merit's evidence."""
    lines = [f"{'dataset':15} {'setting':13} {'slots':>5} {'Recall@20':>10} {'new-item R@20':>14} {'new/list':>9}"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        models = dict.fromkeys(r["model"] for r in rows if r["dataset"] == dataset and "setting" in r)
        for model in models:
            first = next(r for r in rows if r["dataset"] == dataset and r["model"] == model and "setting" in r)
            lines.append(f"{dataset:15} {first['setting']:13} {first['slots']:>5} "
                         f"{_value(rows, dataset, model, 'recall@20'):10.4f} "
                         f"{_value(rows, dataset, model, 'cold_recall@20'):14.4f} "
                         f"{_value(rows, dataset, model, 'new_per_list@20'):9.2f}")
        diff = next((r for r in rows if r["dataset"] == dataset and r["metric"] == "paired_diff_recall@20_vs_no_new"),
                    None)
        if diff is not None:
            lines.append(f"{dataset:15} merit - no new items, Recall@20: {diff['value']:+.4f} "
                         f"[{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]")
        best = _value(rows, dataset, "pipeline", "merit_best_new_hit_rate")
        lines.append(f"{dataset:15} each user's best new item (the ranker's order) chosen by "
                     + (f"{best:.2%} of users" if best == best else "- (not measured)")
                     + f"; the items at positions 16-20 "
                     f"{_value(rows, dataset, 'pipeline', 'merit_page_end_hit_rate'):.2%} of the time")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """One trade-off panel a dataset (``training.stage_logging.plot_cold_tradeoff``), side by side in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl
    from PIL import Image

    from training.stage_logging import plot_cold_tradeoff

    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in dict.fromkeys(r["dataset"] for r in rows):
            picked = [r for r in rows if r["dataset"] == dataset and "setting" in r]
            models = dict.fromkeys(r["model"] for r in picked)
            curve = pl.DataFrame([{"setting": next(r["setting"] for r in picked if r["model"] == m),
                                   "slots": next(r["slots"] for r in picked if r["model"] == m), "model": m,
                                   "recall@20": _value(rows, dataset, m, "recall@20"),
                                   "cold_recall@20": _value(rows, dataset, m, "cold_recall@20")} for m in models])
            figure = plot_cold_tradeoff(curve)
            figure.axes[0].set_title(f"{dataset}: new items on merit, by quota, and left out\n(quota points "
                                     "labelled by the number of slots)", fontsize=10)
            panel = Path(tmp) / f"{dataset}.png"
            figure.savefig(panel, dpi=100)
            plt.close(figure)
            panels.append(Image.open(panel).convert("RGB"))
        if not panels:
            return
        width = sum(p.width for p in panels)
        sheet = Image.new("RGB", (width, max(p.height for p in panels)), "white")
        x = 0
        for panel in panels:
            sheet.paste(panel, (x, 0))
            x += panel.width
        tmp_path = path.with_name(f".{path.name}.tmp")
        sheet.save(tmp_path, format="PNG")
        tmp_path.replace(path)
    print(f"wrote {path}")


def main() -> None:
    args = benchmark_args(__doc__, DATASETS, RESULTS)
    rows = [row for name, folder, store, wall, _ in train_each(args, VIEWS)
            for row in dataset_rows(name, folder, store, wall)]
    print(render(rows))
    plot(rows, args.out.with_suffix(".png"))
    write_result(rows, args.out, sys.argv[1:], args.budget_minutes, benchmark="new_items_merit")


if __name__ == "__main__":
    main()
