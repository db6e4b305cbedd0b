"""The HTML report opens in headless Chromium and its plots render (skipped where Chromium is absent)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from features.split import SplitConfig
from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.evaluation.report import write_report
from recsys.io import Dataset
from recsys.synthetic import SyntheticConfig, generate_synthetic
from training.baseline_specs import baseline_specs
from training.fit_models import evaluate_specs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                    reason="needs Chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    items, inter = generate_synthetic(SyntheticConfig(n_users=40, n_items=40, sessions_per_user=5, seed=2))
    data = build_eval_data(Dataset(items, inter), EvalConfig(split=SplitConfig("per-user", 0.1, 0.2), n_bootstrap=50))
    files = write_report(evaluate_specs(data, baseline_specs(["random", "popularity", "itemknn"])), tmp_path,
                         dataset="synth", command="test")
    out = tmp_path / "render.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_report.py"), str(files.html), "--out",
                           str(out), "--screenshot", str(tmp_path / "shot.png")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["ok"] is True
    plots = {r["model"] for r in result["rows"] if r["model"].startswith("plot:")}
    assert plots == {"plot:metric_at_k", "plot:slices_ndcg10", "plot:coverage_vs_popularity"}
    assert (tmp_path / "shot.png").stat().st_size > 20_000
