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
users and items. The registered pipeline joins them as a product user meets it
(``benchmarks/new_items_registered.py``): the default ``recsys train`` on the data without the new
items, then ``recsys recommend --new-items NEW --cold-slots 20 --k 20`` for the same users
(``--skip-registered`` leaves it out: the towers' comparison alone takes a third of the time).
The text stage pairs every model against the fine-tuned tower over the same users, so the tower
minus each peer on the new items comes with a paired CI (``cold_only_recall@20_minus_<peer>``).
The fine-tuned tower's own figures (its held-out-item AUC before and after fine-tuning, whether it
kept the pretrained weights, the weights of its text-read appeal, lexical and neighbour terms) are
read back from the run's MLflow metrics. Prints a table and writes JSON in the shape of
``../shared/BENCHMARKS.md``.

    python benchmarks/new_items.py --shared ../shared/data [--only movielens,ml-1m,microlens-50k]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from new_items_registered import SLOTS, registered_rows  # noqa: E402
from suite import RECSYS, benchmark_args, prepare, run_logged, write_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "new_items.json"
DATASETS = ("movielens", "ml-1m", "microlens-50k")
PEERS = ("random", "popularity", "tfidf", "lightfm_text")
"""Peers evaluated in the text stage's run; ``registered`` (the pipeline given the new items later) is scored apart."""
METRICS = ("recall@20", "recall@50", "ndcg@10")
TOWER_STATS = ("pretrained_valid_auc", "best_valid_auc", "kept_pretrained", "appeal_weight", "lexical_weight",
               "neighbour_weight", "terms_score_match", "terms_score_appeal", "terms_score_lexical",
               "terms_score_neighbours", "terms_score_chosen", "item_terms_wall_s", "train_examples",
               "epochs", "stopped_by_clock")
"""The fine-tuned tower's figures kept in the results (MLflow metrics ``<tower>/<stat>`` of the run)."""
SPLIT = {"mode": "items", "valid": 0.1, "test": 0.2}


def run_text_stage(folder: Path, report: Path, budget: float) -> float:
    """The text stage under the new-item split in a child process; its wall seconds (the log lies beside the report)."""
    command = [*RECSYS, "train", "--stage", "text", "--data", str(folder), "--tracking-uri", _store(report),
               "--budget-minutes", str(budget), "--set", f"split.mode={SPLIT['mode']}",
               "--set", f"split.test={SPLIT['test']}", "--set", f"split.valid={SPLIT['valid']}",
               "--set", f"baselines=[{','.join(PEERS)}]", "--set", f"report_dir={report}"]
    report.mkdir(parents=True, exist_ok=True)  # the run's MLflow store lies in it
    return run_logged(command, report / "train.log", f"recsys train --stage text on {folder}")[0]


def _store(report: Path) -> str:
    return f"sqlite:///{report / 'mlflow.db'}"


def _text_run(report: Path):
    """The text stage's MLflow client and parent run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_store(report))
    experiment = client.get_experiment_by_name("recsys-train").experiment_id
    return client, client.search_runs([experiment], "tags.stage = 'text'")[0]


def tower_stats(report: Path, tower: str) -> dict[str, float]:
    """The fine-tuned tower's :data:`TOWER_STATS` from the run's MLflow metrics."""
    metrics = _text_run(report)[1].data.metrics
    return {stat: metrics[f"{tower}/{stat}"] for stat in TOWER_STATS if f"{tower}/{stat}" in metrics}


def run_config(report: Path) -> str:
    """The text stage's resolved config (``config.yaml`` of its MLflow run): the split, history and relevant events."""
    client, run = _text_run(report)
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run.info.run_id, "config.yaml", folder)).read_text()


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
    rows += paired_rows(name, results, towers)
    for tower in towers:
        rows += [{"dataset": name, "model": "text_finetuned", "metric": f"tower_{stat}", "value": round(value, 4),
                  "mode": tower} for stat, value in tower_stats(report, tower).items()]
    rows.append({"dataset": name, "model": "train", "metric": "wall_s", "value": round(wall, 1)})
    return rows


def paired_rows(name: str, results: dict, towers: list[str]) -> list[dict]:
    """The fine-tuned tower minus each other model on the new items alone, paired over the same users (the text
    stage pairs every model against its tower: ``<peer> - <tower>`` rows, turned round here)."""
    rows = []
    for pair in results.get("paired", []):
        if pair["reference"] in towers and pair["metric"] == "cold_only_recall@20" and pair["model"] not in towers:
            peer = pair["model"]
            rows.append({"dataset": name, "model": "text_finetuned", "metric": f"cold_only_recall@20_minus_{peer}",
                         "value": round(-pair["mean_diff"], 5), "ci_low": round(-pair["ci_high"], 5),
                         "ci_high": round(-pair["ci_low"], 5), "mode": pair["reference"]})
    return rows


def render(rows: list[dict]) -> str:
    """One line per dataset and model: the new-item Recall@20, Recall@50 and NDCG@10 with CIs."""
    out = [f"{'dataset':<14} {'model':<15} " + " ".join(f"{m:>24}" for m in METRICS)]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        got = {(r["model"], r["metric"]): r for r in rows if r["dataset"] == name}
        for model in (*PEERS, "zero_shot", "text_finetuned", "registered"):
            cells = [got.get((model, f"cold_only_{m}")) for m in METRICS]
            if not any(cells):
                continue
            text = [f"{c['value']:.4f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]" if c else "-" for c in cells]
            out.append(f"{name:<14} {model:<15} " + " ".join(f"{t:>24}" for t in text))
        share = got.get(("registered", "new_share_of_lists"))
        if share:
            out.append(f"{name:<14} registered pipeline: --new-items, --cold-slots {SLOTS} --k {SLOTS}; "
                       f"{share['value']:.0%} of its list slots held new items")
        ratio = got.get(("text_finetuned", "recall@20_vs_zero_shot"))
        if ratio:
            out.append(f"{name:<14} fine-tuned / zero-shot recall@20: {ratio['value']:.2f}x")
        for (model, metric), r in got.items():
            if model == "text_finetuned" and metric.startswith("cold_only_recall@20_minus_"):
                out.append(f"{name:<14} fine-tuned minus {metric.removeprefix('cold_only_recall@20_minus_')}: "
                           f"{r['value']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] (paired, same users)")
        tower = {m.removeprefix("tower_"): r["value"] for (_, m), r in got.items() if m.startswith("tower_")}
        if tower:
            nan = float("nan")
            kept = " (kept pretrained)" if tower.get("kept_pretrained") else ""
            out.append(f"{name:<14} tower on held-out items: AUC {tower.get('pretrained_valid_auc', nan):.3f} "
                       f"pretrained -> {tower.get('best_valid_auc', nan):.3f} fine-tuned{kept}; ranking them: match "
                       f"{tower.get('terms_score_match', nan):.3f}, + appeal {tower.get('terms_score_appeal', nan):.3f}"
                       f", + words {tower.get('terms_score_lexical', nan):.3f}"
                       f", + neighbours {tower.get('terms_score_neighbours', nan):.3f}; chosen: appeal weight "
                       f"{tower.get('appeal_weight', 0):.1f}, lexical weight {tower.get('lexical_weight', 0):.2f}, "
                       f"neighbour weight {tower.get('neighbour_weight', 0):.2f} "
                       f"({tower.get('terms_score_chosen', nan):.3f}: Recall@20 of held-out items for their users)")
    return "\n".join(out)


def main() -> None:
    args = benchmark_args(__doc__, DATASETS, RESULTS,
                          flags={"skip-registered": "leave out the registered pipeline (its recsys train and export)",
                                 "reuse-text-stage": "keep the text stage's reports (and the registered pipeline's "
                                                     "lists) already under --work"})
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for name in args.names:
            folder = prepare(name, args.shared, work / "data")
            report = work / "reports" / name
            timing = report / "text_stage_wall_s.txt"
            if args.reuse_text_stage and (report / "results.json").is_file() and timing.is_file():
                wall = float(timing.read_text())
            else:
                wall = run_text_stage(folder, report, args.budget_minutes)
                timing.write_text(f"{wall:.1f}")
            rows += dataset_rows(name, report, wall)
            print(f"{name}: text stage {wall:.0f} s", flush=True)
            if not args.skip_registered:
                rows += registered_rows(name, folder, run_config(report), work / "registered" / name, RECSYS,
                                        args.budget_minutes, reuse=args.reuse_text_stage)
                print(f"{name}: registered pipeline done", flush=True)
    print(render(rows))
    write_result(rows, args.out, sys.argv[1:], args.budget_minutes, benchmark="new_items",
                 split=SPLIT | {"history": "train+valid"})


if __name__ == "__main__":
    main()
