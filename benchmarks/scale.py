"""How time and memory grow with the log: the default ``recsys train`` and a full export at three sizes.

For each point a seeded log is generated (``recsys data synth --events``: text-driven taste,
skewed popularity, new items arriving), then, each in its own child process so the peaks do
not mix:

* ``recsys train --data DIR`` with no config (the default recipe at ``--budget-minutes``): wall
  time, peak RSS, each stage's seconds and the peak after it (the MLflow run's metrics) and the
  registered bundle's size on disk;
* ``recsys recommend --model models:/recsys@challenger --k 100`` for every user (or, with
  ``--export-users N``, a seeded sample of N users where a point has more: a full export of a
  million users is hours at today's rate): wall time, users/s, the rate after the first block (which
  also builds the indexes every block reads), peak RSS and the time the whole user base takes
  (``export/full_s``: the first block once, then every other user at the later rate; what the slopes
  compare);
* quality on the synthetic test window, from the run's report: NDCG@10 of the registered model
  against the best baseline the run fitted, with the paired bootstrap CI of the difference.

Then the log-log slope of time against events between consecutive points (1.0 = linear), a
table, ``benchmarks/results/scale.png`` (time and peak memory against events, log-log) and JSON in
the shape of ``../shared/BENCHMARKS.md``.

    python benchmarks/scale.py [--points 10k,100k,1m] [--budget-minutes 15] [--work DIR] [--export-users N]
                               [--with RESULT.json]

``--with`` joins the points of an earlier result (the 1M point alone is 45 minutes) to this run's
for the slopes, the table and the plot; each joined row keeps the commit it was measured at
(``git_commit``), so a reader sees which points ran on which code.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from suite import RECSYS, dataset_rows, run_logged, run_train, write_result  # noqa: E402

from recsys.export import ExportConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
PLOT = RESULTS.with_suffix(".png")


@dataclass(frozen=True)
class Point:
    """One size of log."""

    name: str
    users: int
    items: int
    events: int

    @property
    def dataset(self) -> str:
        return f"synth-{self.name}"


POINTS = {p.name: p for p in (Point("10k", 10_000, 10_000, 200_000), Point("100k", 100_000, 50_000, 2_000_000),
                              Point("1m", 1_000_000, 100_000, 20_000_000))}
RATE = re.compile(r"\(([\d,.]+) users/s")
BLOCK = ExportConfig().block_size
"""Users in the first block of an export (``recsys recommend``'s default)."""
STEADY = re.compile(r"([\d,.]+) users/s after a first block of ([\d.]+)s")


def timed(command: list[str], log: Path, what: str) -> tuple[float, float, str]:
    """``command`` under ``/usr/bin/time``: wall seconds, the child's peak RSS (MB), its output."""
    rss = log.with_suffix(".rss")
    wall, output = run_logged(["/usr/bin/time", "-f", "%M", "-o", str(rss), *command], log, what)
    return wall, float(rss.read_text().split()[-1]) / 1024, output


STAGES = {"text_tower": ("text_tower/seconds", "text_tower/peak_rss_mb"), "lightfm": ("lightfm/seconds", None),
          "item_models": ("cf_other/seconds", "cf_other/peak_rss_mb"), "features": ("ranker/features_s", None),
          "ranker": ("ranker/ranker_s", "ranker/peak_rss_mb"), "ship": ("ship/seconds", "ship/peak_rss_mb"),
          "package": ("package/seconds", "package/peak_rss_mb")}
"""Stage -> the parent run's metrics of its seconds and of the run's peak RSS after it (``training.pipeline``)."""
BASELINES = ("popularity", "itemknn", "lightfm", "als", "ease")


def stage_costs(store: Path) -> dict[str, tuple[float, float | None]]:
    """Each training stage's seconds and the run's peak RSS after it (MB; None where not logged), from MLflow.

    ``baselines`` is the baselines' tuning and fitting, ``evaluate`` every evaluated model's scoring of
    the test users (the pipeline included).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("recsys-train").experiment_id
    metrics = client.search_runs([experiment], "tags.stage = 'all'")[0].data.metrics
    costs = {stage: (metrics[seconds], metrics.get(peak) if peak else None)
             for stage, (seconds, peak) in STAGES.items() if seconds in metrics}
    costs["baselines"] = (sum(metrics.get(f"{b}/{part}", 0.0) for b in BASELINES for part in ("tune_s", "fit_s")),
                          None)
    costs["evaluate"] = (sum(v for k, v in metrics.items() if k.endswith("/score_s")), None)
    return costs


def bundle_mb(store: Path) -> float:
    """Size on disk of the newest registered version's model folder (what a loader reads), in MB."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    version = max(client.search_model_versions("name = 'recsys'"), key=lambda v: int(v.version))
    local = Path(client.get_model_version_download_uri("recsys", version.version).removeprefix("file://"))
    return sum(f.stat().st_size for f in local.rglob("*") if f.is_file()) / 2**20


def export_sample(folder: Path, n: int, path: Path) -> int:
    """A seeded sample of ``n`` of the dataset's users, one id per line at ``path``; how many."""
    import numpy as np
    import polars as pl

    users = pl.scan_parquet(folder / "interactions.parquet").select(pl.col("user_id").unique().sort()).collect()
    chosen = users["user_id"].gather(np.sort(np.random.default_rng(0).choice(users.height, n, replace=False)))
    path.write_text("\n".join(map(str, chosen.to_list())) + "\n")
    return len(chosen)


def run_point(point: Point, work: Path, budget: float, export_users: int | None = None) -> list[dict]:
    """Generate, train, export one point (all its users, or a sample of ``export_users``); its rows."""
    folder, store = work / "data" / point.name, work / "stores" / point.name
    store.mkdir(parents=True, exist_ok=True)
    synth_s, synth_mb, _ = timed([*RECSYS, "data", "synth", "--out", str(folder), "--users", str(point.users),
                                  "--items", str(point.items), "--events", str(point.events)],
                                 store / "synth.log", f"recsys data synth for {point.name}")
    wall, peak, _ = run_train(folder, store, budget)
    print(f"{point.dataset}: train {wall:.0f} s, peak {peak:.0f} MB", flush=True)
    recs = store / "recs.parquet"
    sample: list[str] = []
    exported = point.users
    if export_users and point.users > export_users:
        exported = export_sample(folder, export_users, store / "export_users.txt")
        sample = ["--users", str(store / "export_users.txt")]
    export_s, export_mb, said = timed([*RECSYS, "recommend", "--model", "models:/recsys@challenger", "--data",
                                       str(folder), "--k", "100", "--out", str(recs), "--tracking-uri",
                                       f"sqlite:///{store}/mlflow.db", *sample], store / "export.log",
                                      f"recsys recommend for {point.name}")
    rate, steady = RATE.search(said), STEADY.search(said)
    users_per_s = float(rate.group(1).replace(",", "")) if rate else exported / export_s
    steady_per_s, first_s, full_s = users_per_s, 0.0, point.users / users_per_s
    if steady:  # a full export: the first block (it builds the indexes) once, then every other user at the later rate
        steady_per_s, first_s = float(steady.group(1).replace(",", "")), float(steady.group(2))
        full_s = first_s + (point.users - min(point.users, BLOCK)) / steady_per_s
    print(f"{point.dataset}: export {export_s:.0f} s ({users_per_s:.0f} users/s, {steady_per_s:.0f} after the first "
          f"block), peak {export_mb:.0f} MB", flush=True)
    rows = dataset_rows(point.dataset, folder, store, wall, peak)
    shape = {"users": point.users, "items": point.items, "events": point.events}
    for row in rows:
        row.update(shape)

    def add(model: str, metric: str, value: float) -> None:
        rows.append({"dataset": point.dataset, "model": model, "metric": metric, "value": round(value, 3)} | shape)

    add("synth", "wall_s", synth_s)
    add("synth", "peak_rss_mb", synth_mb)
    for stage, (seconds, peak_mb) in stage_costs(store).items():
        add(f"train/{stage}", "wall_s", seconds)
        if peak_mb is not None:
            add(f"train/{stage}", "peak_rss_mb", peak_mb)
    add("bundle", "size_mb", bundle_mb(store))
    add("export", "wall_s", export_s)
    add("export", "users", exported)
    add("export", "users_per_s", users_per_s)
    add("export", "steady_users_per_s", steady_per_s)
    add("export", "first_block_s", first_s)
    add("export", "full_s", full_s)
    add("export", "peak_rss_mb", export_mb)
    return rows


def slopes(rows: list[dict]) -> list[dict]:
    """Log-log slope of time and memory against events between consecutive points (1.0 = linear)."""
    out = []
    for model, metric in (("train", "wall_s"), ("train", "peak_rss_mb"), ("export", "full_s"),
                          ("export", "peak_rss_mb")):
        points = sorted((r["events"], r["value"], r["dataset"]) for r in rows
                        if r["model"] == model and r["metric"] == metric)
        for (e0, v0, d0), (e1, v1, d1) in zip(points, points[1:], strict=False):
            out.append({"dataset": f"{d0}..{d1}", "model": model, "metric": f"loglog_slope_{metric}",
                        "value": round(math.log(v1 / v0) / math.log(e1 / e0), 3)})
    return out


def render(rows: list[dict]) -> str:
    """One line per point: sizes, train and export cost, quality against the best baseline."""
    lines = [f"{'point':<12} {'users':>9} {'items':>7} {'events':>11} {'train s':>8} {'train MB':>8} "
             f"{'export s':>8} {'users/s':>8} {'export MB':>9} {'bundle MB':>9} {'registered':>10} "
             f"{'best baseline':>20} {'diff [95% CI]':>26}"]
    for name in dict.fromkeys(r["dataset"] for r in rows if "events" in r):
        got = {(r["model"], r["metric"]): r for r in rows if r["dataset"] == name}

        def v(model: str, metric: str, got: dict = got) -> float:
            return got.get((model, metric), {}).get("value", float("nan"))
        base = got.get(("best_baseline", "ndcg@10"), {})
        diff = got.get(("registered", "paired_diff_ndcg@10"), {})
        first = next(iter(got.values()))
        lines.append(f"{name:<12} {first['users']:>9,} {first['items']:>7,} {first['events']:>11,} "
                     f"{v('train', 'wall_s'):>8.0f} {v('train', 'peak_rss_mb'):>8.0f} {v('export', 'full_s'):>8.0f} "
                     f"{v('export', 'users_per_s'):>8.0f} {v('export', 'peak_rss_mb'):>9.0f} "
                     f"{v('bundle', 'size_mb'):>9.0f} {v('registered', 'ndcg@10'):>10.4f} "
                     f"{base.get('baseline', '?') + ' ' + format(base.get('value', float('nan')), '.4f'):>20} "
                     f"{diff.get('value', float('nan')):+.4f} [{diff.get('ci_low', float('nan')):+.4f}, "
                     f"{diff.get('ci_high', float('nan')):+.4f}]")
        stages = sorted(((r["model"].removeprefix("train/"), r["value"]) for r in rows if r["dataset"] == name
                         and r["model"].startswith("train/") and r["metric"] == "wall_s"), key=lambda s: -s[1])
        lines.append("    stages: " + ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in stages))
    lines += [f"slope {r['metric'].removeprefix('loglog_slope_')} of {r['model']} {r['dataset']}: {r['value']:.2f}"
              for r in rows if r["metric"].startswith("loglog_slope_")]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """Time and peak memory of training and export against events, log-log, one marker per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, label in ((axes[0], "wall_s", "wall time (s)"), (axes[1], "peak_rss_mb", "peak RSS (MB)")):
        for model, style, name in (("train", "o-", "recsys train"), ("export", "s--", "recsys recommend")):
            wanted = "full_s" if (model, metric) == ("export", "wall_s") else metric  # every user, at the measured rate
            points = sorted((r["events"], r["value"]) for r in rows if r["model"] == model and r["metric"] == wanted)
            if points:
                ax.plot(*zip(*points, strict=True), style, label=name)
        ax.set(xscale="log", yscale="log", xlabel="events in the log", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_title("time against events (slope 1 = linear)")
    axes[1].set_title("peak memory against events")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def joined_points(paths: list[Path], measured: set[str]) -> list[dict]:
    """The point rows of earlier results (not their slopes), each tagged with the commit it was measured at."""
    rows: list[dict] = []
    for path in paths:
        earlier = json.loads(path.read_text())
        points = [{**r, "git_commit": earlier["git_commit"]} for r in earlier["rows"] if "events" in r]
        again = measured.intersection(r["dataset"] for r in points)
        if again:
            raise SystemExit(f"{path}: {', '.join(sorted(again))} measured in this run too; join other points")
        measured |= {r["dataset"] for r in points}
        rows += points
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default=",".join(POINTS), help=f"comma-separated subset of {', '.join(POINTS)}")
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, help="keep the data, stores and exports here (default: a temp folder)")
    parser.add_argument("--export-users", type=int, help="export a seeded sample of this many users where a point "
                        "has more (users/s and memory measured on it; export/full_s: every user at that rate)")
    parser.add_argument("--with", dest="joined", type=Path, action="append", default=[],
                        help="an earlier result of this benchmark whose points join this run's (slopes, table, plot)")
    args = parser.parse_args()
    chosen = [POINTS[name.strip()] for name in args.points.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for point in chosen:
            rows += run_point(point, args.work or Path(tmp), args.budget_minutes, args.export_users)
    rows += joined_points(args.joined, {p.dataset for p in chosen})
    rows.sort(key=lambda r: r.get("events", 0))
    rows += slopes(rows)
    print(render(rows))
    write_result(rows, args.out, sys.argv[1:], args.budget_minutes, benchmark="scale")
    print(f"wrote {plot(rows, args.out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
