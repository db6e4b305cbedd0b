"""Import, validate and split the real datasets: wall time and peak memory of each step.

Each step runs in its own fresh Python process (the real ``recsys`` CLI), so its peak RSS
is its own; ``startup`` (the CLI's ``--help``) is the floor that every step pays. Prints a
table and writes ``benchmarks/results/import_speed.json`` in the shape of BENCHMARKS.md.

    python benchmarks/import_speed.py --data ../shared/data/movielens
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "import_speed.json"


def _child(argv: list[str]) -> None:
    """Run the CLI in this process and print its wall time and peak RSS as JSON (last line)."""
    from recsys.cli import cli

    start = time.perf_counter()
    try:
        cli.main(args=argv, prog_name="recsys", standalone_mode=False)
    except SystemExit as exc:  # --help exits 0
        if exc.code:
            raise
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mb": rss_mb}))


def measure(argv: list[str]) -> dict[str, float]:
    """Run one CLI step in a fresh process; returns its wall time (process included) and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"recsys {' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": inner["wall_s"], "process_wall_s": time.perf_counter() - start,
            "peak_rss_mb": inner["peak_rss_mb"]}


def _git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or "unknown"


def run(data: Path, work: Path) -> list[dict[str, object]]:
    out = work / "movielens"
    steps = {
        "startup": ["--help"],
        "import": ["data", "import", "movielens", str(data), "--out", str(out)],
        "validate": ["data", "validate", "--data", str(out)],
        "split_global": ["data", "split", "--data", str(out), "--mode", "global", "--valid", "0.1", "--test", "0.1",
                         "--out", str(work / "global.parquet")],
        "split_per_user": ["data", "split", "--data", str(out), "--mode", "per-user", "--valid", "0.1",
                           "--test", "0.2", "--out", str(work / "per_user.parquet")],
    }
    rows: list[dict[str, object]] = []
    for name, argv in steps.items():
        result = measure(argv)
        rows += [{"model": name, "metric": m, "value": round(v, 3)} for m, v in result.items()]
    n_rows = pl.scan_parquet(out / "interactions.parquet").select(pl.len()).collect().item()
    import_s = next(r["value"] for r in rows if r["model"] == "import" and r["metric"] == "wall_s")
    rows.append({"model": "import", "metric": "rows_per_s", "value": round(n_rows / import_s, 1)})
    for mode in ("global", "per_user"):
        split = pl.read_parquet(work / f"{mode}.parquet")
        warm_test = split.filter((pl.col("split") == "test") & ~pl.col("is_cold_user"))["user_id"].n_unique()
        rows.append({"model": f"split_{mode}", "metric": "test_users_with_train_history", "value": warm_test})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "movielens")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = run(args.data, Path(work))
    result = {
        "benchmark": "import_speed",
        "dataset": "movielens-latest-small+tmdb",
        "split": {"mode": "global|per-user", "global": {"valid": 0.1, "test": 0.1},
                  "per-user": {"valid": 0.1, "test": 0.2}},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "polars": pl.__version__},
        "command": "python benchmarks/import_speed.py --data ../shared/data/movielens",
        "git_commit": _git_commit(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    with pl.Config(tbl_rows=100, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(pl.DataFrame(rows).pivot(on="metric", index="model", values="value"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
    else:
        main()
