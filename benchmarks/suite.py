"""The default command on four datasets in one run: does ``recsys train --data DIR`` win without a config?

For each dataset the data is imported (or generated), then the very command a user types runs
in a fresh process, under ``/usr/bin/time``-style accounting (wall time and the peak RSS of it
and its children):

    recsys train --data DIR --tracking-uri sqlite:///...   (no config, no --set)

and the figures are read back from its report (``results.json``) and its MLflow run:
the registered model's NDCG@10 and Recall@20 with CIs (the evaluated ``pipeline`` row: after the
gates it is what gets registered), the best baseline's, the paired difference of the two, both
towers and the one kept, which stages were kept, wall time and peak RSS. Each dataset names its
relevance (what its run judged: the recipe's ``relevant``, purchases alone on rated data); where
that is wider than the strongest event, the strict view (purchases only) of the registered model
and the best baseline is added.

    python benchmarks/suite.py --shared ../shared/data [--only demo,movielens] [--budget-minutes 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.evaluation.run import git_commit, portable_command  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "suite.json"
SMALL, SMALL_EVENTS = "movielens-10k", 10_000
"""The small-log check (2 minutes up to 10k events): a slice of MovieLens, not a fifth dataset."""
DATASETS = ("demo", "movielens", "ml-1m", "microlens-50k", SMALL)
BASELINES = ("popularity", "itemknn", "lightfm", "ease", "als")
RECSYS = [sys.executable, "-c", "from recsys.cli import main; main()"]


def prepare(name: str, shared: Path, out: Path) -> Path:
    """The dataset as a contract folder under ``out``: imported from ``shared`` (or the demo, generated)."""
    folder = out / name
    if name == SMALL:  # a small shop's log: MovieLens' first users up to 10k events, and the films they rated
        import polars as pl

        whole = prepare("movielens", shared, out / "whole")
        events = pl.read_parquet(whole / "interactions.parquet")
        per_user = events.group_by("user_id").len().sort("user_id")
        users = per_user.filter(pl.col("len").cum_sum() <= SMALL_EVENTS)["user_id"]
        events = events.filter(pl.col("user_id").is_in(users.implode()))
        items = pl.read_parquet(whole / "items.parquet").filter(pl.col("item_id").is_in(events["item_id"].implode()))
        folder.mkdir(parents=True, exist_ok=True)
        events.write_parquet(folder / "interactions.parquet")
        items.write_parquet(folder / "items.parquet")
        return folder
    if name == "demo":
        from recsys.datasets import write_synthetic
        from recsys.synthetic import DEMO_CONFIG

        write_synthetic(folder, DEMO_CONFIG)
        return folder
    source = {"movielens": shared / "movielens", "ml-1m": shared / "ml-1m",
              "microlens-50k": shared / "microlens-50k"}[name]
    importer = "microlens" if name == "microlens-50k" else "movielens"
    subprocess.run([*RECSYS, "data", "import", importer, str(source), "--out", str(folder)], check=True,
                   capture_output=True, text=True)
    return folder


def run_logged(command: list[str], log: Path, what: str) -> tuple[float, str]:
    """A command in a child process, offline (no model downloads): its wall seconds and output.

    Everything it printed goes to ``log`` (what the user saw, for a look afterwards); a failure stops the
    benchmark with the end of that output.
    """
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    log.write_text(done.stdout + "\n" + done.stderr)
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return wall, done.stdout


def run_train(folder: Path, store: Path, budget: float, sets: Sequence[str] = ()) -> tuple[float, float, str]:
    """The default ``recsys train`` (plus any ``--set`` of ``sets``) in a child process: wall seconds, peak RSS
    (MB) of the child tree, output."""
    rss = store / "max_rss_kb.txt"
    command = ["/usr/bin/time", "-f", "%M", "-o", str(rss), *RECSYS, "train", "--data", str(folder),
               "--tracking-uri", f"sqlite:///{store}/mlflow.db", "--budget-minutes", str(budget),
               *(arg for setting in sets for arg in ("--set", setting))]
    wall, output = run_logged(command, store / "train.log", f"recsys train on {folder}")
    peak = float(rss.read_text().split()[-1]) / 1024 if rss.is_file() else float("nan")  # this run's peak, MB
    return wall, peak, output


def _metric(results: dict, model: str, metric: str) -> dict | None:
    return next((r for r in results["rows"] if r["model"] == model and r["metric"] == metric), None)


def dataset_rows(name: str, folder: Path, store: Path, wall: float, peak: float) -> list[dict]:
    """The suite's rows of one dataset, read back from the run's report and its MLflow run."""
    from mlflow.tracking import MlflowClient

    results = json.loads((folder / "reports" / "train" / "results.json").read_text())
    rows: list[dict] = []

    def add(model: str, metric: str, found: dict | None, **extra) -> None:
        if found is not None:
            row = {"dataset": name, "model": model, "metric": metric, "value": round(found["value"], 5)}
            if found.get("ci_low") is not None:
                row |= {"ci_low": round(found["ci_low"], 5), "ci_high": round(found["ci_high"], 5)}
            rows.append(row | extra)

    present = [b for b in BASELINES if _metric(results, b, "ndcg@10") is not None]
    best = max(present, key=lambda b: _metric(results, b, "ndcg@10")["value"])
    towers = sorted({r["model"] for r in results["rows"] if r["model"].startswith("text_")
                     and r["model"] not in ("text_alone",) and not r["model"].endswith("_int8")})
    relevant = results.get("relevant", results.get("positives", []))  # what the run judged: the recipe's choice
    for metric in ("ndcg@10", "recall@20"):
        add("registered", metric, _metric(results, "pipeline", metric), relevant=",".join(relevant))
        add("best_baseline", metric, _metric(results, best, metric), baseline=best)
        add("zero_shot", metric, _metric(results, "zero_shot", metric))
        for tower in towers:
            add("text_finetuned", metric, _metric(results, tower, metric), mode=tower)
        add("text_kept", metric, _metric(results, "text_alone", metric))
    paired = next(p for p in results["paired"] if p["model"] == best and p["metric"] == "ndcg@10")  # best - pipeline
    rows.append({"dataset": name, "model": "registered", "metric": "paired_diff_ndcg@10",
                 "value": round(-paired["mean_diff"], 5) + 0.0, "ci_low": round(-paired["ci_high"], 5) + 0.0,
                 "ci_high": round(-paired["ci_low"], 5) + 0.0, "baseline": best})  # + 0.0: no "-0.0" for identity
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("recsys-train").experiment_id
    parent = client.search_runs([experiment], "tags.stage = 'all'")[0]
    metrics = parent.data.metrics
    if "text_gate/kept_fine" in metrics:  # no gate ran when the recipe chose zero-shot: no row, not a NaN
        rows.append({"dataset": name, "model": "text_kept", "metric": "kept_fine_tuned",
                     "value": metrics["text_gate/kept_fine"]})
    ranker_run = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                    "and attributes.run_name = 'ranker'")
    serves = ranker_run[0].data.params.get("kept", "ranker") if ranker_run else "ranker"
    rows.append({"dataset": name, "model": "registered", "metric": "kept_ranker",
                 "value": metrics.get("ranker/gate_kept_ranker", 1.0), "serves": serves})
    # the strict view where the run judged more than the strongest event and the data has it: each
    # model's lists scored on the strongest event only (the report's event_purchase slice)
    if relevant != ["purchase"]:
        for model, source in (("registered", "pipeline"), ("best_baseline", best)):
            add(model, "strict_ndcg@10", _metric(results, source, "event_purchase_ndcg@10"), relevant="purchase",
                **({"baseline": best} if model == "best_baseline" else {}))
    rows.append({"dataset": name, "model": "train", "metric": "wall_s", "value": round(wall, 1)})
    rows.append({"dataset": name, "model": "train", "metric": "peak_rss_mb", "value": round(peak, 1)})
    return rows


def render(rows: list[dict]) -> str:
    """One line per dataset: registered vs best baseline, towers, stages kept, cost."""
    out = [f"{'dataset':<14} {'relevant':>15} {'registered':>10} {'best baseline':>22} {'diff [95% CI]':>26} "
           f"{'zero-shot':>9} {'fine-tuned':>10} {'kept fine':>9} {'serves':>8} {'wall s':>7} {'peak MB':>8} "
           f"{'strict reg/base':>15}"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        got = {(r["model"], r["metric"]): r for r in rows if r["dataset"] == name}

        def v(model: str, metric: str = "ndcg@10", got: dict = got) -> float:
            return got.get((model, metric), {}).get("value", float("nan"))
        diff = got[("registered", "paired_diff_ndcg@10")]
        base = got[("best_baseline", "ndcg@10")]
        relevant = got[("registered", "ndcg@10")].get("relevant", "")
        strict = (f"{v('registered', 'strict_ndcg@10'):.4f}/{v('best_baseline', 'strict_ndcg@10'):.4f}"
                  if ("registered", "strict_ndcg@10") in got else "-")
        out.append(f"{name:<14} {relevant:>15} {v('registered'):>10.4f} "
                   f"{base['baseline'] + ' ' + format(base['value'], '.4f'):>22} "
                   f"{diff['value']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]".ljust(76)
                   + f" {v('zero_shot'):>9.4f} {v('text_finetuned'):>10.4f} {v('text_kept', 'kept_fine_tuned'):>9.0f}"
                   f" {got.get(('registered', 'kept_ranker'), {}).get('serves', '?'):>8} {v('train', 'wall_s'):>7.0f} "
                   f"{v('train', 'peak_rss_mb'):>8.0f} {strict:>15}")
    return "\n".join(out)


def benchmark_args(description: str, datasets: tuple[str, ...], out: Path,
                   flags: dict[str, str] | None = None) -> argparse.Namespace:
    """The command line every dataset benchmark shares: shared data, a subset, budget, output and work folders
    (and a benchmark's own on/off ``flags``: name -> help)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, text in (flags or {}).items():
        parser.add_argument(f"--{flag}", action="store_true", help=text)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(datasets)}")
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--work", type=Path, help="keep the imported data, stores and reports here (default: a temp "
                        "folder)")
    args = parser.parse_args()
    args.names = [n.strip() for n in args.only.split(",")] if args.only else list(datasets)
    return args


def train_each(args: argparse.Namespace, sets: Sequence[str] = ()) -> Iterator[tuple[str, Path, Path, float, float]]:
    """Each dataset of ``args.names`` imported and trained by ``recsys train`` (plus ``sets``) in a child process:
    its name, data folder, MLflow store, wall seconds and peak RSS (MB), under ``args.work`` (else a temp folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for name in args.names:
            folder = prepare(name, args.shared, work / "data")
            store = work / "stores" / name
            store.mkdir(parents=True, exist_ok=True)
            wall, peak, _ = run_train(folder, store, args.budget_minutes, sets)
            print(f"{name}: {wall:.0f} s, peak {peak:.0f} MB", flush=True)
            yield name, folder, store, wall, peak


def main() -> None:
    args = benchmark_args(__doc__, DATASETS, RESULTS)
    rows = [row for name, folder, store, wall, peak in train_each(args)
            for row in dataset_rows(name, folder, store, wall, peak)]
    print(render(rows))
    write_result(rows, args.out, sys.argv[1:], args.budget_minutes)


SUITE_SPLIT = {"mode": "per-user", "valid": 0.1, "test": 0.2, "history": "train+valid"}


def write_result(rows: list[dict], out: Path, argv: list[str], budget_minutes: float, *, benchmark: str = "suite",
                 split: dict = SUITE_SPLIT) -> None:
    """A dataset benchmark's JSON in the shape of ``../shared/BENCHMARKS.md`` (one row per figure, dataset in each)."""
    result = {"benchmark": benchmark, "dataset": "several", "split": split,
              "machine": {"cpus": os.cpu_count()},
              "command": portable_command(f"benchmarks/{benchmark}.py", argv, ROOT), "git_commit": git_commit(),
              "budget_minutes": budget_minutes, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
