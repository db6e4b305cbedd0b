"""The whole ``recsys train`` on MovieLens: the ranked pipeline against its ablations and the baselines.

One run of ``training/configs/movielens.yaml`` (per-user 70/10/20 split, history at test time =
train + valid, exactly those items excluded, for every model): NDCG@10, Recall@20, new-item
Recall@20 with 95% bootstrap CIs; paired bootstrap differences against the pipeline; the
cold-exposure trade-off curve (``pipeline@cold=<slots>_<place>``: new-item slots in the first 20);
the candidate stage's recall; and the wall time of every stage.

    python benchmarks/pipeline_movielens.py --data ../shared/data/movielens [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.config import load_config  # noqa: E402
from recsys.evaluation.report import metric_name  # noqa: E402
from recsys.evaluation.run import git_commit, portable_command  # noqa: E402
from recsys.importers import import_dataset  # noqa: E402
from training.pipeline import TrainConfig, TrainResult, train  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pipeline_movielens.json"
REPORTED = (("all", "ndcg@10"), ("all", "recall@20"), ("cold_items", "recall@20"), ("cold_only", "recall@20"),
            ("warm_items", "ndcg@10"), ("all", "mrr"), ("all", "coverage@10"))
STAGE_SECONDS = (("split", "split", "seconds"), ("text_tower", "text_tower", "seconds"),
                 ("lightfm", "lightfm", "seconds"), ("ease_popularity", "cf_other", "seconds"),
                 ("candidates_and_features", "ranker", "features_s"), ("ranker", "ranker", "ranker_s"))


def quality_rows(run: TrainResult) -> list[dict]:
    rows = []
    for slice_name, metric in REPORTED:
        hits = run.result.table.filter((pl.col("slice") == slice_name) & (pl.col("metric") == metric))
        for r in hits.iter_rows(named=True):
            row = {"model": r["model"], "metric": metric_name(slice_name, metric), "value": round(r["value"], 5)}
            if r["ci_low"] is not None:
                row |= {"ci_low": round(r["ci_low"], 5), "ci_high": round(r["ci_high"], 5)}
            rows.append(row)
    for r in run.result.paired.iter_rows(named=True):
        rows.append({"model": r["model"], "metric": f"{r['metric']}_minus_pipeline", "value": round(r["mean_diff"], 5),
                     "ci_low": round(r["ci_low"], 5), "ci_high": round(r["ci_high"], 5)})
    for r in run.cold_curve.iter_rows(named=True):
        setting = "off" if r["slots"] == 0 else f"{r['slots']}_{r['place']}"
        for metric in ("ndcg@10", "cold_recall@20"):
            rows.append({"model": f"pipeline@cold={setting}", "metric": metric, "value": round(r[metric], 5)})
    return rows


def speed_rows(run: TrainResult, wall_s: float) -> list[dict]:
    rows = [{"model": f"stage_{name}", "metric": "wall_s", "value": round(run.stats[group][key], 2)}
            for name, group, key in STAGE_SECONDS if key in run.stats.get(group, {})]
    rows += [{"model": m.name, "metric": "evaluate_wall_s", "value": round(sum(m.seconds[k] for k in
             ("tune_s", "fit_s", "score_s")), 2)} for m in run.result.models]
    rows += [{"model": "candidates", "metric": f"test_{k}", "value": round(v, 5)} for k, v in
             run.stats["candidates"].items()]
    rows += [{"model": "candidates", "metric": k.replace("label_candidate_", "label_"), "value": round(v, 5)}
             for k, v in run.stats["ranker"].items() if k.startswith("label_candidate_")]
    rows.append({"model": "recsys_train", "metric": "wall_s", "value": round(wall_s, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "movielens")
    parser.add_argument("--config", type=Path, default=ROOT / "training" / "configs" / "movielens.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Config override key=value.")
    parser.add_argument("--tracking-uri", help="MLflow store; default: a temporary SQLite file.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "movielens"
        import_dataset("movielens", args.data, data)
        config = load_config(TrainConfig, str(args.config), (*args.overrides, f"data={data}",
                                                             f"report_dir={Path(tmp) / 'report'}"))
        uri = args.tracking_uri or f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        start = time.perf_counter()
        run = train(config, tracking_uri=uri, show_progress=False, config_file=str(args.config))
        wall_s = time.perf_counter() - start
    rows = quality_rows(run) + speed_rows(run, wall_s)
    payload = {
        "benchmark": "pipeline_movielens", "dataset": "movielens-latest-small+tmdb",
        "split": config.split.describe(), "history": config.history,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "command": portable_command("benchmarks/pipeline_movielens.py", sys.argv[1:], ROOT),
        "git_commit": git_commit(ROOT),
        "settings_chosen_on_valid": {m.name: str(m.setting) for m in run.result.models},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp_out.replace(args.out)
    print(run.table)
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=200, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        print(run.cold_curve)
        print(pl.DataFrame(speed_rows(run, wall_s)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
