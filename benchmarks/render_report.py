"""Open an evaluation report in headless Chromium, screenshot it, and check the plots render.

Checks: Chromium renders the page to a screenshot that is not blank (share of non-white
pixels), and every embedded plot decodes to a non-trivial image (size, colour variety).
Prints a table and writes JSON (BENCHMARKS.md shape); exits 1 if a check fails.

    python benchmarks/render_report.py reports/movielens/report.html --screenshot shot.png
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.evaluation.run import portable_command  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(html: Path, png: Path, *, width: int = 1300, height: int = 3000) -> None:
    """Render ``html`` with headless Chromium into ``png`` (a fresh profile, no network)."""
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png}", html.resolve().as_uri()], check=True, capture_output=True, timeout=120)


def image_stats(png: bytes) -> dict[str, float]:
    """Width, height, share of non-white pixels and number of distinct colours of a PNG."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    non_white = (pixels < 245).any(axis=2).mean()
    colours = len(np.unique(pixels.reshape(-1, 3)[:: max(1, pixels.size // 300_000)], axis=0))
    return {"width": pixels.shape[1], "height": pixels.shape[0], "non_white_share": float(non_white),
            "colours": colours}


def check(html: Path, shot: Path) -> tuple[list[dict], bool]:
    screenshot(html, shot)
    rows, ok = [], True
    page = image_stats(shot.read_bytes())
    rows += [{"model": "screenshot", "metric": k, "value": v} for k, v in page.items()]
    ok &= page["non_white_share"] > 0.05 and page["colours"] > 50
    plots = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html.read_text())
    ok &= len(plots) >= 3
    for name, data in plots:
        stats = image_stats(base64.b64decode(data))
        rows += [{"model": f"plot:{name}", "metric": k, "value": v} for k, v in stats.items()]
        ok &= stats["width"] > 300 and stats["non_white_share"] > 0.02 and stats["colours"] > 20
    return rows, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None, help="Where to keep the screenshot PNG.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "render_report.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shot = args.screenshot or Path(tmp) / "shot.png"
        rows, ok = check(args.report, shot)
    for r in rows:
        print(f"{r['model']:<32} {r['metric']:<16} {r['value']:.4g}")
    print("plots render: " + ("yes" if ok else "NO"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "render_report", "dataset": str(args.report.parent.name),
                                    "command": portable_command("benchmarks/render_report.py", sys.argv[1:], ROOT),
                                    "ok": bool(ok), "rows": rows}, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
