"""What the text tower's neighbour term costs a ranked block, beside the block without it and the dense block.

The ranked pipeline reads each model's block three ways: each user's top items (a candidate source),
the row moments (the z-score features) and the scores at the candidate pairs. The text tower's
block is a product of user and item vectors, read without the dense ``[b, n_items]`` scores
(``FactorScores``). The neighbour term (``recsys.scorers.text_neighbours``: every item's 50
nearest chosen items) adds a sparse non-negative boost on the items near each user's history
(``BoostedFactorScores``). Here, on a synthetic catalogue of unit 384-d vectors (the tower's
shape), one block of users is read the three ways (moments, top 100, 300 pairs a user), at
several history lengths (the boost grows with the history):

- ``text_product@<h>``: the product alone (the term off), timed beside each setting;
- ``text_boosted@<h>``: the product plus the term, users with ``h`` history items;
- ``text_dense@<h>``: the same scores made dense first (what a dense term would cost), read the same way.

Also timed: fitting every item's neighbours (``neighbours_fit``), as ``recsys train`` does once.
Prints a table and writes JSON in the shape of ``../shared/BENCHMARKS.md``.

    python benchmarks/text_block.py [--items 100000] [--block 512] [--history 10,50,200]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.candidates import row_moments  # noqa: E402
from recsys.scorers.factor_scores import BoostedFactorScores, FactorScores, ItemSide  # noqa: E402
from recsys.scorers.text_neighbours import NeighbourIndex  # noqa: E402
from recsys.topk import top_k  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "text_block.json"
DIM, HISTORY, TOP, PAIRS, REPEATS = 384, 50, 100, 300, 5


def _read(scores, pairs: tuple[np.ndarray, np.ndarray]) -> None:
    """What the pipeline asks of a block: row moments, each row's top items and the candidate pairs' scores."""
    if isinstance(scores, np.ndarray):
        row_moments(scores)
        top_k(scores, TOP)
        scores[pairs]
        return
    _ = scores.moments
    scores.top_k(TOP)
    scores.at(*pairs)


def _best_of(run, repeats: int = REPEATS) -> float:
    run()  # the first read builds what the item side keeps (the screen)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(n_items: int, block: int, histories: list[int], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_items, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    side = ItemSide(vectors)
    user = rng.normal(size=(block, DIM)).astype(np.float32)
    pairs = (np.repeat(np.arange(block), PAIRS), rng.integers(n_items, size=block * PAIRS))
    start = time.perf_counter()
    index = NeighbourIndex.fit(vectors, np.arange(n_items)).with_weight(3.0)
    rows = [{"model": "neighbours_fit", "metric": "wall_s", "value": time.perf_counter() - start}]
    for h in histories:
        history = sp.csr_matrix((np.ones(block * h, np.float32),
                                 (np.repeat(np.arange(block), h), rng.integers(n_items, size=block * h))),
                                shape=(block, n_items))
        boost = index.terms(history) * np.float32(index.weight)
        reads = {f"text_product@{h}": lambda: FactorScores(user, side),
                 f"text_boosted@{h}": lambda boost=boost: BoostedFactorScores(user, side, boost),
                 f"text_dense@{h}": lambda boost=boost: BoostedFactorScores(user, side, boost).dense()}
        for model, scores in reads.items():  # side by side: the product is timed again beside each setting
            rows.append({"model": model, "metric": "block_s",
                         "value": _best_of(lambda scores=scores: _read(scores(), pairs))})
        rows.append({"model": f"text_boosted@{h}", "metric": "boosted_per_user", "value": boost.nnz / block})
    return rows


def render(rows: list[dict]) -> str:
    out = [f"{'model':<24} {'metric':<18} {'value':>10} {'vs product':>11}"]
    for r in rows:
        at = r["model"].rsplit("@", 1)[-1]
        product = next((p["value"] for p in rows if p["model"] == f"text_product@{at}"), None)
        ratio = f"{r['value'] / product:.2f}x" if r["metric"] == "block_s" and product else ""
        out.append(f"{r['model']:<24} {r['metric']:<18} {r['value']:>10.3f} {ratio:>11}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--history", default="10,50,200")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = measure(args.items, args.block, [int(n) for n in args.history.split(",")])
    print(render(rows))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {"benchmark": "text_block", "dataset": f"synthetic-{args.items}-items", "split": None,
              "machine": {"cpus": torch.get_num_threads(), "torch_threads": torch.get_num_threads(),
                          "processor": platform.processor() or platform.machine()},
              "command": f"python benchmarks/text_block.py --items {args.items} --block {args.block} "
                         f"--history {args.history}",
              "git_commit": commit.stdout.strip(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
