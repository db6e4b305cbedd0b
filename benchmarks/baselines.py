"""Baselines on MovieLens with the full-ranking protocol, and the speed of the blocked scorer.

Quality: every baseline (random, popularity, item-kNN, LightFM, EASE, ALS) on the per-user
70/10/20 split, once with train as the history at test time and once with train + valid
(refit, and exactly that history excluded): NDCG@10, Recall@20, cold-item Recall@20 and more,
with 95% bootstrap CIs over users.

Speed, side by side in one run on one fitted LightFM: our evaluation scorer (a block of users
x the whole catalogue, seen items excluded, top-100 by argpartition) against a per-user loop
calling ``LightFM.predict`` and sorting, which is how evaluation is often written.

    python benchmarks/baselines.py --data ../shared/data/movielens
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.split import SplitConfig  # noqa: E402
from recsys.evaluation.eval_data import EvalConfig, EvalData, build_eval_data  # noqa: E402
from recsys.evaluation.report import metric_name  # noqa: E402
from recsys.evaluation.run import git_commit, portable_command  # noqa: E402
from recsys.importers import import_dataset  # noqa: E402
from recsys.io import DatasetPaths, load_dataset  # noqa: E402
from recsys.scoring import rank_users  # noqa: E402
from training.baseline_specs import BASELINES, baseline_specs  # noqa: E402
from training.fit_lightfm import LightFMConfig, LightFMRecommender  # noqa: E402
from training.fit_models import evaluate_specs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "baselines.json"
SPLIT = SplitConfig(mode="per-user", valid=0.1, test=0.2)
REPORTED = (("all", "ndcg@10"), ("all", "recall@20"), ("cold_items", "recall@20"), ("all", "hitrate@10"),
            ("all", "mrr"), ("warm_items", "ndcg@10"), ("all", "coverage@10"))


def quality_rows(data: EvalData, history: str) -> tuple[list[dict], dict[str, object]]:
    result = evaluate_specs(data, baseline_specs(BASELINES), show_progress=False)
    rows = []
    for slice_name, metric in REPORTED:
        hits = result.table.filter((pl.col("slice") == slice_name) & (pl.col("metric") == metric))
        for r in hits.iter_rows(named=True):
            row = {"model": r["model"], "metric": metric_name(slice_name, metric), "value": round(r["value"], 5),
                   "history": history}
            if r["ci_low"] is not None:
                row |= {"ci_low": round(r["ci_low"], 5), "ci_high": round(r["ci_high"], 5)}
            rows.append(row)
    for m in result.models:
        wall = m.seconds["tune_s"] + m.seconds["fit_s"] + m.seconds["score_s"]
        rows.append({"model": m.name, "metric": "wall_s", "value": round(wall, 2), "history": history})
    return rows, {m.name: m.setting for m in result.models}


def _loop_top_k(model: LightFMRecommender, data: EvalData, users: np.ndarray, k: int) -> np.ndarray:
    """The per-user reference: predict one user at a time, mask seen items, sort."""
    history = data.test.history
    out = np.empty((len(users), k), dtype=np.int64)
    for row, user in enumerate(users):
        scores = model.predict_loop(np.array([user]))[0]
        scores[history.indices[history.indptr[user]:history.indptr[user + 1]]] = -np.inf
        out[row] = np.argsort(-scores, kind="stable")[:k]
    return out


def _median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls: the machines are shared and noisy."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def speed_rows(data: EvalData, epochs: int) -> list[dict]:
    model = LightFMRecommender(LightFMConfig(epochs=epochs, num_threads=1)).fit(data.test.fit)
    users = data.test.users
    k = data.config.max_k
    def fast_top_k() -> np.ndarray:
        return rank_users(model, users, data.test.history, k, block_size=data.config.block_size)[0]

    fast_s = _median_seconds(fast_top_k, 7)
    slow_s = _median_seconds(lambda: _loop_top_k(model, data, users, k), 3)
    fast = fast_top_k()
    slow = _loop_top_k(model, data, users, k)
    agree = float((fast[:, :10] == slow[:, :10]).mean())
    return [
        {"model": "evaluate", "metric": "users_per_s", "value": round(len(users) / fast_s, 1)},
        {"model": "lightfm_predict_loop", "metric": "users_per_s", "value": round(len(users) / slow_s, 1)},
        {"model": "evaluate", "metric": "speedup_vs_lightfm_predict_loop", "value": round(slow_s / fast_s, 1)},
        {"model": "evaluate", "metric": "top10_agreement_with_loop", "value": round(agree, 4)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "movielens")
    parser.add_argument("--history", default="train,train+valid", help="Histories to run, comma-separated.")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        import_dataset("movielens", args.data, tmp)
        dataset = load_dataset(DatasetPaths.from_dir(tmp))
    rows: list[dict] = []
    settings: dict[str, dict] = {}
    for history in args.history.split(","):
        data = build_eval_data(dataset, EvalConfig(split=SPLIT, history=history, n_bootstrap=args.bootstrap))
        print(f"history={history}: {len(data.test.users)} test users x {len(data.item_ids)} items", flush=True)
        found, settings[history] = quality_rows(data, history)
        rows += found
    first = build_eval_data(dataset, EvalConfig(split=SPLIT, history="train"))
    rows += speed_rows(first, int(settings.get("train", {}).get("lightfm") or 30))
    payload = {
        "benchmark": "baselines", "dataset": "movielens-latest-small+tmdb", "split": SPLIT.describe(),
        "machine": {"cpus": os.cpu_count(), "torch_threads": None, "lightfm_als_threads": 1},
        "command": portable_command("benchmarks/baselines.py", sys.argv[1:], ROOT), "git_commit": git_commit(ROOT),
        "settings_chosen_on_valid": settings, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    table = pl.DataFrame([r for r in rows if "history" in r]).with_columns(
        pl.when(pl.col("ci_low").is_not_null()).then(pl.format("{} [{}, {}]", "value", "ci_low", "ci_high"))
        .otherwise(pl.col("value").cast(pl.String)).alias("cell"))
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=250, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, fmt_str_lengths=40):
        print(table.pivot(on="metric", index=["history", "model"], values="cell"))
        print(pl.DataFrame([r for r in rows if "history" not in r]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
