"""Rolling updates on MovieLens: stale model, full retrain and warm starts, slice after slice.

The interactions are cut by time (global) into consecutive slices at event-time quantiles
(default 0.5 / 0.65 / 0.8: slice 0 is the first half of the log, then three 15-20% slices).
The initial model is ``recsys train`` on slice 0 (registered as ``rolling``). Then, for each
step t = 1 .. S-2, every strategy makes a new version from its own previous one and is scored
on slice t+1 without refitting (``recsys.evaluation.window.score_window``):

- ``stale``: the initial model, never updated;
- ``full_retrain``: trained from scratch on slices 0..t;
- ``warm_start``: ``from_model=<its previous version>`` on slice t only;
- ``warm_start_replay``: the same with ``update.replay=0.5``;
- ``warm_start_l2sp``: the same with ``update.l2sp=1.0``.

Gain: NDCG@10 and new-item Recall@20 on slice t+1, reading every event before it. Forgetting:
NDCG@10 on slice 0's own test window (the last 20% of its global 70/10/20 split) for a seeded
sample of its users, reading slice 0's earlier events; those users' test events are taken out
of every training input, so no version (full retrains included) and no replay sample sees them.
Cost: the wall time of the update's ``train()``. Every run uses the same affordable
settings (``DEFAULT_SETS``; extend or override them with ``--set``).

    python benchmarks/rolling_movielens.py --data ../shared/data/movielens [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.split import temporal_split  # noqa: E402
from recsys import contract as C  # noqa: E402
from recsys.config import load_config  # noqa: E402
from recsys.evaluation.run import git_commit, portable_command  # noqa: E402
from recsys.evaluation.window import score_window  # noqa: E402
from recsys.importers import import_dataset  # noqa: E402
from recsys.pyfunc_model import load_registered  # noqa: E402
from training.pipeline import TrainConfig, train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "rolling_movielens.json"
EXPERIMENT = "recsys-rolling"
MODEL_NAME = "rolling"
DEFAULT_SETS = ("split.mode=global", "split.valid=0.1", "split.test=0.2", "pipeline.ablations=false",
                "compare_zero_shot=false", "baselines=[]", "pipeline.cold_curve_slots=[]", "n_bootstrap=200",
                "text.max_epochs=1", "text.max_train_examples=null")
STRATEGIES: dict[str, tuple[str, ...] | None] = {
    "stale": None,
    "full_retrain": (),
    "warm_start": (),
    "warm_start_replay": ("update.replay=0.5",),
    "warm_start_l2sp": ("update.l2sp=1.0",),
}
WARM = ("warm_start", "warm_start_replay", "warm_start_l2sp")
TARGETS = {"wall_ratio_vs_full_retrain": ("<=", 0.30), "ndcg_ratio_vs_full_retrain": (">=", 0.95)}


def cut_slices(interactions: pl.DataFrame, quantiles: list[float]) -> tuple[list[pl.DataFrame], list]:
    """Consecutive slices at the event-time quantiles (an event at a cut opens the next slice)."""
    cuts = [interactions[C.TS].quantile(q, interpolation="higher") for q in quantiles]
    bounds = [None, *cuts, None]
    slices = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        keep = pl.lit(True)
        if lo is not None:
            keep = keep & (pl.col(C.TS) >= lo)
        if hi is not None:
            keep = keep & (pl.col(C.TS) < hi)
        slices.append(interactions.filter(keep))
    return slices, cuts


def write_input(folder: Path, items_file: Path, interactions: pl.DataFrame) -> Path:
    """A dataset folder: the whole catalogue and the events of one training input."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(items_file, folder / C.ITEMS_FILE)
    interactions.sort(C.TS, C.USER_ID, C.ITEM_ID).write_parquet(folder / C.INTERACTIONS_FILE)
    return folder


def forgetting_window(slice0: pl.DataFrame, config: TrainConfig, n_users: int, seed: int
                      ) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray]:
    """Slice 0's split exactly as the initial run made it: history = train + valid, targets = test, sampled users."""
    labelled = temporal_split(slice0, config.split).collect()
    history = labelled.filter(pl.col(C.SPLIT) != C.TEST).select(slice0.columns)
    targets = labelled.filter(pl.col(C.SPLIT) == C.TEST).select(slice0.columns)
    positives = targets.filter(pl.col(C.EVENT).is_in(list(config.text.positives)))
    users = np.asarray(sorted(positives[C.USER_ID].unique().to_list()), dtype=object)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(users, size=min(n_users, len(users)), replace=False)) if len(users) else users
    return history, targets, sample


class Rolling:
    """Trains the versions, scores them, and collects the rows."""

    def __init__(self, args: argparse.Namespace, tmp: Path, items_file: Path, slices: list[pl.DataFrame]) -> None:
        self.args, self.tmp, self.items_file, self.slices = args, tmp, items_file, slices
        self.uri = args.tracking_uri or f"sqlite:///{tmp / 'mlflow.db'}"
        self.rows: list[dict] = []
        self.details: list[dict] = []
        self.forget: tuple[pl.DataFrame, pl.DataFrame, np.ndarray] | None = None

    def config(self, data: Path, report: str, extra: tuple[str, ...] = ()) -> TrainConfig:
        sets = (*DEFAULT_SETS, *self.args.overrides, f"data={data}", f"report_dir={self.tmp / 'reports' / report}",
                f"register={MODEL_NAME}", *extra)
        return load_config(TrainConfig, str(self.args.config), sets)

    def fit(self, model: str, step: int, data: pl.DataFrame, extra: tuple[str, ...] = ()) -> tuple[str, float]:
        """One ``train()``: returns the new version's URI and its wall time."""
        folder = write_input(self.tmp / "inputs" / f"{model}_{step}", self.items_file, data)
        config = self.config(folder, f"{model}_{step}", extra)
        print(f"[step {step}] {model}: train on {data.height} events"
              + (f" from {config.from_model}" if config.from_model else ""), flush=True)
        start = time.perf_counter()
        run = train(config, tracking_uri=self.uri, show_progress=False, force_promote=False)
        wall = time.perf_counter() - start
        version = run.registration.version
        uri = f"models:/{run.registration.name}/{version}"
        stages = {name: round(float(values["seconds"]), 2) for name, values in run.stats.items()
                  if isinstance(values, dict) and "seconds" in values}
        self.details.append({"model": model, "step": step, "version": str(version), "from_model": config.from_model,
                             "train_events": data.height, "wall_s": round(wall, 2), "stage_seconds": stages,
                             "ranker_s": round(float(run.stats.get("ranker", {}).get("ranker_s", float("nan"))), 2)})
        print(f"[step {step}] {model}: {uri} in {wall:.1f}s (stages {stages})", flush=True)
        return uri, wall

    def score(self, model: str, step: int, uri: str, wall: float) -> None:
        """Gain on slice step+1, forgetting on slice 0's test window, the update's wall time."""
        bundle = load_registered(uri, self.uri)
        history = pl.concat(self.slices[:step + 1])
        gain = score_window(bundle, history, self.slices[step + 1]).mean()
        old_history, old_targets, users = self.forget
        forget = score_window(bundle, old_history, old_targets, users=users).mean()
        found = {"ndcg@10": gain["ndcg@10"], "cold_recall@20": gain["cold_recall@20"],
                 "forgetting_ndcg@10": forget["ndcg@10"], "update_wall_s": wall}
        users_of = {"ndcg@10": gain["users"], "cold_recall@20": gain["users"], "forgetting_ndcg@10": forget["users"]}
        for metric, value in found.items():
            row = {"model": model, "metric": metric, "step": step, "value": _round(value)}
            if metric in users_of:
                row["users"] = int(users_of[metric])
            self.rows.append(row)
        print(f"[step {step}] {model}: ndcg@10={gain['ndcg@10']:.4f} cold_recall@20={gain['cold_recall@20']:.4f} "
              f"({int(gain['users'])} users) forgetting_ndcg@10={forget['ndcg@10']:.4f} "
              f"({int(forget['users'])} users) wall={wall:.1f}s", flush=True)

    def held_out(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` without the forgetting window's sampled targets: no model, and no replay, ever sees them."""
        _, targets, users = self.forget
        held = targets.filter(pl.col(C.USER_ID).is_in(users.tolist())).select(C.USER_ID, C.ITEM_ID, C.TS, C.EVENT)
        return frame.join(held, on=[C.USER_ID, C.ITEM_ID, C.TS, C.EVENT], how="anti")

    def run(self, strategies: list[str]) -> dict[str, str]:
        self.forget = forgetting_window(self.slices[0], self.config(self.tmp, "probe"), self.args.forget_users,
                                        self.args.seed)
        initial, wall0 = self.fit("initial", 0, self.held_out(self.slices[0]))
        self.score("stale", 0, initial, wall0)  # step 0: the model every chain starts from
        latest = {name: initial for name in strategies}
        for step in range(1, len(self.slices) - 1):
            for name in strategies:
                extra = STRATEGIES[name]
                if extra is None:
                    self.score(name, step, initial, 0.0)
                    continue
                if name == "full_retrain":
                    latest[name], wall = self.fit(name, step, self.held_out(pl.concat(self.slices[:step + 1])))
                else:
                    latest[name], wall = self.fit(name, step, self.slices[step],
                                                  (f"from_model={latest[name]}", *extra))
                self.score(name, step, latest[name], wall)
        return latest


def _round(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 5)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per warm strategy and step: wall time and NDCG@10 as shares of full retrain's, against the targets."""
    value = {(r["model"], r["metric"], r["step"]): r["value"] for r in rows}
    out = []
    for (model, metric, step), v in sorted(value.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        if model not in WARM or metric not in ("update_wall_s", "ndcg@10"):
            continue
        full = value.get(("full_retrain", metric, step))
        if v is None or not full:
            continue
        name = "wall_ratio_vs_full_retrain" if metric == "update_wall_s" else "ndcg_ratio_vs_full_retrain"
        op, bound = TARGETS[name]
        ratio = v / full
        out.append({"model": model, "metric": name, "step": step, "value": round(ratio, 4),
                    "target": f"{op} {bound}", "met": bool(ratio <= bound if op == "<=" else ratio >= bound)})
    return out


def table(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame([{k: r[k] for k in ("model", "step", "metric", "value")} for r in rows])
    wide = frame.pivot(on="metric", index=["step", "model"], values="value")
    order = {m: i for i, m in enumerate(STRATEGIES)}
    rank = pl.col("model").replace_strict(order, default=99).alias("_o")
    return wide.with_columns(rank).sort("step", "_o").drop("_o")


def plot(rows: list[dict], strategies: list[str], path: Path) -> Path:
    """Two panels: gain NDCG@10 and forgetting NDCG@10 per step, a line per strategy (all start at step 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in ((axes[0], "ndcg@10", "Gain: NDCG@10 on the next slice"),
                              (axes[1], "forgetting_ndcg@10", "Forgetting: NDCG@10 on slice 0's test window")):
        start = next((r["value"] for r in rows if r["model"] == "stale" and r["step"] == 0 and r["metric"] == metric),
                     None)
        for name in strategies:
            points = sorted((r["step"], r["value"]) for r in rows if r["model"] == name and r["metric"] == metric
                            and r["step"] > 0 and r["value"] is not None)
            if start is not None:
                points = [(0, start), *points]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step t (updated with slice t; step 0 = initial model)")
        ax.set_ylabel("NDCG@10")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def log_mlflow(uri: str, rows: list[dict], png: Path, json_path: Path, params: dict) -> str:
    import mlflow

    from recsys.evaluation.tracking import experiment_id
    from training.stage_logging import metric_dict

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id(mlflow, EXPERIMENT, uri), run_name="rolling-movielens") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        for r in rows:
            if r.get("value") is not None:
                for key, value in metric_dict({f"{r['model']}/{r['metric']}": r["value"]}).items():
                    mlflow.log_metric(key, value, step=int(r["step"]))
        mlflow.log_artifact(str(png))
        mlflow.log_artifact(str(json_path))
        return run.info.run_id


def sample_users(interactions: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    users = np.asarray(sorted(interactions[C.USER_ID].unique().to_list()), dtype=object)
    chosen = np.random.default_rng(seed).choice(users, size=min(n, len(users)), replace=False)
    return interactions.filter(pl.col(C.USER_ID).is_in(list(chosen)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "movielens")
    parser.add_argument("--config", type=Path, default=ROOT / "training" / "configs" / "movielens.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help=f"Config override key=value, after the defaults {' '.join(DEFAULT_SETS)}.")
    parser.add_argument("--quantiles", default="0.5,0.65,0.8", help="Event-time quantiles cutting the slices.")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="Comma-separated subset.")
    parser.add_argument("--forget-users", type=int, default=150, help="Sampled users of the forgetting window.")
    parser.add_argument("--sample-users", type=int, help="Keep only N random users (a quick trial).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracking-uri", help="MLflow store; default: a temporary SQLite file.")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON path; the PNG goes beside it.")
    args = parser.parse_args()
    quantiles = [float(q) for q in args.quantiles.split(",")]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if unknown := [s for s in strategies if s not in STRATEGIES]:
        parser.error(f"unknown strategies {unknown}; choose among {', '.join(STRATEGIES)}")
    if quantiles != sorted(quantiles) or len(quantiles) < 2 or not all(0 < q < 1 for q in quantiles):
        parser.error("--quantiles: at least two increasing values in (0, 1)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rolling_") as name:
        tmp = Path(name)
        source = tmp / "source"
        import_dataset("movielens", args.data, source)
        interactions = pl.read_parquet(source / C.INTERACTIONS_FILE)
        if args.sample_users:
            interactions = sample_users(interactions, args.sample_users, args.seed)
        slices, cuts = cut_slices(interactions, quantiles)
        print("slices (events, users):", [(s.height, s[C.USER_ID].n_unique()) for s in slices], flush=True)
        rolling = Rolling(args, tmp, source / C.ITEMS_FILE, slices)
        latest = rolling.run(strategies)
        rows = rolling.rows + summary_rows(rolling.rows)
        probe = rolling.config(tmp, "probe")
        payload = {
            "benchmark": "rolling_movielens",
            "dataset": "movielens-latest-small+tmdb" + (f" ({args.sample_users} sampled users)"
                                                        if args.sample_users else ""),
            "split": {"slices": {"quantiles": quantiles, "cuts": [c.isoformat() for c in cuts],
                                 "events": [s.height for s in slices],
                                 "users": [s[C.USER_ID].n_unique() for s in slices]},
                      "per_training_input": probe.split.describe(), "history": probe.history,
                      "gain": "score_window: history = every event before slice t+1, targets = slice t+1 "
                              "(users the model knows)",
                      "forgetting": f"score_window on slice 0's test window (history = its train + valid), "
                                    f"{len(rolling.forget[2])} sampled users (seed {args.seed})"},
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
            "command": portable_command("benchmarks/rolling_movielens.py", sys.argv[1:], ROOT),
            "git_commit": git_commit(ROOT),
            "settings": [*DEFAULT_SETS, *args.overrides],
            "strategies": {k: list(v) if v is not None else "initial model, never updated"
                           for k, v in STRATEGIES.items() if k in strategies},
            "targets": {k: f"{op} {b}" for k, (op, b) in TARGETS.items()},
            "versions": {**{d["model"] + f"@{d['step']}": f"models:/{MODEL_NAME}/{d['version']}"
                            for d in rolling.details}, **{f"{k}@final": v for k, v in latest.items()}},
            "updates": rolling.details,
            "total_wall_s": round(time.perf_counter() - start, 1),
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_name(f".{args.out.name}.tmp")
        tmp_out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        tmp_out.replace(args.out)
        png = plot(rolling.rows, strategies, args.out.with_suffix(".png"))
        run_id = log_mlflow(rolling.uri, rows, png, args.out,
                            {"quantiles": quantiles, "settings": " ".join(payload["settings"]),
                             "sample_users": args.sample_users, "git_commit": payload["git_commit"]})
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=200, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        print(table(rolling.rows))
        summary = summary_rows(rolling.rows)
        if summary:
            print(pl.DataFrame(summary))
    print(f"wrote {args.out} and {png} (MLflow run {run_id} in {EXPERIMENT})")


if __name__ == "__main__":
    main()
