"""The new-item protocol on real data: how well does each model place items it has never seen an event on?

For each dataset a seeded 20% of the items with events becomes new (``--split-mode items``:
every event on them leaves the fit data, their text stays; a further 10% is the valid window's),
and for each user with an event on a new item only the new items are ranked: the cold-start
protocol of CTR, CDL and DropoutNet, read from the report's ``cold_only`` slice. One child
process per dataset runs the text stage of the default command with that split and the
new-item peers beside the towers:

    recsys train --stage text --data DIR --tracking-uri sqlite:///REPORT/mlflow.db --set split.mode=items
        --set split.test=0.2 --set split.valid=0.1 --set baselines=[random,popularity,tfidf,lightfm_text]

so the fine-tuned tower (the recipe's mode and budget), the zero-shot encoder (the mean of each
user's history vectors), TF-IDF of the same text and LightFM on its words are judged on the same
users and items. The fine-tuned tower's own figures (its held-out-item AUC before and after
fine-tuning, whether it kept the pretrained weights, the weight of its text-read appeal) are read
back from the run's MLflow metrics. Prints a table and writes JSON in the shape of
``../shared/BENCHMARKS.md``.

    python benchmarks/new_items.py --shared ../shared/data [--only movielens,ml-1m,microlens-50k]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite import RECSYS, benchmark_args, prepare, write_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "new_items.json"
DATASETS = ("movielens", "ml-1m", "microlens-50k")
PEERS = ("random", "popularity", "tfidf", "lightfm_text")
METRICS = ("recall@20", "recall@50", "ndcg@10")
TOWER_STATS = ("pretrained_valid_auc", "best_valid_auc", "kept_pretrained", "appeal_weight", "holdout_auc_match",
               "holdout_auc_appeal", "train_examples", "epochs")
"""The fine-tuned tower's figures kept in the results (MLflow metrics ``<tower>/<stat>`` of the run)."""
SPLIT = {"mode": "items", "valid": 0.1, "test": 0.2}


def run_text_stage(folder: Path, report: Path, budget: float) -> float:
    """The text stage under the new-item split in a child process; its wall seconds (the log lies beside the report)."""
    command = [*RECSYS, "train", "--stage", "text", "--data", str(folder), "--tracking-uri", _store(report),
               "--budget-minutes", str(budget), "--set", f"split.mode={SPLIT['mode']}",
               "--set", f"split.test={SPLIT['test']}", "--set", f"split.valid={SPLIT['valid']}",
               "--set", f"baselines=[{','.join(PEERS)}]", "--set", f"report_dir={report}"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    report.mkdir(parents=True, exist_ok=True)  # the run's MLflow store lies in it
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    (report / "train.log").write_text(done.stdout + "\n" + done.stderr)
    if done.returncode:
        raise SystemExit(f"recsys train --stage text failed on {folder}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall


def _store(report: Path) -> str:
    return f"sqlite:///{report / 'mlflow.db'}"


def tower_stats(report: Path, tower: str) -> dict[str, float]:
    """The fine-tuned tower's :data:`TOWER_STATS` from the run's MLflow metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_store(report))
    experiment = client.get_experiment_by_name("recsys-train").experiment_id
    metrics = client.search_runs([experiment], "tags.stage = 'text'")[0].data.metrics
    return {stat: metrics[f"{tower}/{stat}"] for stat in TOWER_STATS if f"{tower}/{stat}" in metrics}


def dataset_rows(name: str, report: Path, wall: float) -> list[dict]:
    """The cold_only figures of every model of the run (the towers under their roles), and the tower ratio."""
    results = json.loads((report / "results.json").read_text())
    found = {(r["model"], r["metric"]): r for r in results["rows"]}
    towers = sorted({m for m, _ in found if m.startswith("text_") and not m.endswith("_int8")})
    roles = {m: m for m in PEERS} | {"zero_shot": "zero_shot"} | {t: "text_finetuned" for t in towers}
    rows: list[dict] = []
    for model, role in roles.items():
        for metric in METRICS:
            hit = found.get((model, f"cold_only_{metric}"))
            if hit is None:
                continue
            rows.append({"dataset": name, "model": role, "metric": f"cold_only_{metric}",
                         "value": round(hit["value"], 5), "ci_low": round(hit["ci_low"], 5),
                         "ci_high": round(hit["ci_high"], 5), "n_users": hit.get("n_users")}
                        | ({"mode": model} if role == "text_finetuned" else {}))
    fine = next((r for r in rows if r["model"] == "text_finetuned" and r["metric"] == "cold_only_recall@20"), None)
    zero = next((r for r in rows if r["model"] == "zero_shot" and r["metric"] == "cold_only_recall@20"), None)
    if fine and zero and zero["value"] > 0:
        rows.append({"dataset": name, "model": "text_finetuned", "metric": "recall@20_vs_zero_shot",
                     "value": round(fine["value"] / zero["value"], 3)})
    for tower in towers:
        rows += [{"dataset": name, "model": "text_finetuned", "metric": f"tower_{stat}", "value": round(value, 4),
                  "mode": tower} for stat, value in tower_stats(report, tower).items()]
    rows.append({"dataset": name, "model": "train", "metric": "wall_s", "value": round(wall, 1)})
    return rows


def render(rows: list[dict]) -> str:
    """One line per dataset and model: the new-item Recall@20, Recall@50 and NDCG@10 with CIs."""
    out = [f"{'dataset':<14} {'model':<15} " + " ".join(f"{m:>24}" for m in METRICS)]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        got = {(r["model"], r["metric"]): r for r in rows if r["dataset"] == name}
        for model in (*PEERS, "zero_shot", "text_finetuned"):
            cells = [got.get((model, f"cold_only_{m}")) for m in METRICS]
            if not any(cells):
                continue
            text = [f"{c['value']:.4f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]" if c else "-" for c in cells]
            out.append(f"{name:<14} {model:<15} " + " ".join(f"{t:>24}" for t in text))
        ratio = got.get(("text_finetuned", "recall@20_vs_zero_shot"))
        if ratio:
            out.append(f"{name:<14} fine-tuned / zero-shot recall@20: {ratio['value']:.2f}x")
        tower = {m.removeprefix("tower_"): r["value"] for (_, m), r in got.items() if m.startswith("tower_")}
        if tower:
            nan = float("nan")
            kept = " (kept pretrained)" if tower.get("kept_pretrained") else ""
            out.append(f"{name:<14} tower on held-out items: AUC {tower.get('pretrained_valid_auc', nan):.3f} "
                       f"pretrained -> {tower.get('best_valid_auc', nan):.3f} fine-tuned{kept}; text-read appeal "
                       f"weight {tower.get('appeal_weight', 0):.1f} (AUC {tower.get('holdout_auc_match', nan):.3f} "
                       f"-> {tower.get('holdout_auc_appeal', nan):.3f})")
    return "\n".join(out)


def main() -> None:
    args = benchmark_args(__doc__, DATASETS, RESULTS)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for name in args.names:
            folder = prepare(name, args.shared, work / "data")
            report = work / "reports" / name
            wall = run_text_stage(folder, report, args.budget_minutes)
            rows += dataset_rows(name, report, wall)
            print(f"{name}: {wall:.0f} s", flush=True)
    print(render(rows))
    write_result(rows, args.out, sys.argv[1:], args.budget_minutes, benchmark="new_items",
                 split=SPLIT | {"history": "train+valid"})


if __name__ == "__main__":
    main()
