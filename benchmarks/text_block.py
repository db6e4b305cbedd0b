"""What the text tower's neighbour term costs a ranked block, beside the block without it and the dense block.

The ranked pipeline reads each model's block three ways: each user's top items (a candidate source),
the row moments (the z-score features) and the scores at the candidate pairs. The text tower's
block is a product of user and item vectors, read without the dense ``[b, n_items]`` scores
(``FactorScores``). The neighbour term (``recsys.scorers.text_neighbours``) adds a sparse
non-negative boost on the unseen items (``BoostedFactorScores``). Here, on a synthetic catalogue
of unit 384-d vectors (the tower's shape), one block of users with 50 history items each is read
the three ways (moments, top 100, 300 pairs a user):

- ``text_product@<n>``: the product alone (no unseen item, or the term off), timed beside each setting;
- ``text_boosted@<n>``: the product plus the term, ``n`` unseen items with 50 neighbours each;
- ``text_dense@<n>``: the same scores made dense first (what a dense term would cost), read the same way.

Also timed: fitting the neighbours of ``n`` unseen items among the rest (``neighbours_fit@<n>``),
as ``recsys train`` does once and ``recsys recommend --new-items`` does for the new items.
Prints a table and writes JSON in the shape of ``../shared/BENCHMARKS.md``.

    python benchmarks/text_block.py [--items 100000] [--block 512] [--unseen 1000,5000,20000]
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


def measure(n_items: int, block: int, unseen_counts: list[int], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_items, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    side = ItemSide(vectors)
    user = rng.normal(size=(block, DIM)).astype(np.float32)
    pairs = (np.repeat(np.arange(block), PAIRS), rng.integers(n_items, size=block * PAIRS))
    rows = []
    for n in unseen_counts:
        unseen = rng.choice(n_items, size=n, replace=False)
        anchors = np.setdiff1d(np.arange(n_items), unseen)
        start = time.perf_counter()
        index = NeighbourIndex.fit(vectors, anchors, unseen).with_weight(3.0)
        rows.append({"model": f"neighbours_fit@{n}", "metric": "wall_s", "value": time.perf_counter() - start})
        history = sp.csr_matrix((np.ones(block * HISTORY, np.float32),
                                 (np.repeat(np.arange(block), HISTORY), rng.choice(anchors, block * HISTORY))),
                                shape=(block, n_items))
        boost = index.terms(history) * np.float32(index.weight)
        reads = {f"text_product@{n}": lambda: FactorScores(user, side),
                 f"text_boosted@{n}": lambda boost=boost: BoostedFactorScores(user, side, boost),
                 f"text_dense@{n}": lambda boost=boost: BoostedFactorScores(user, side, boost).dense()}
        for model, scores in reads.items():  # side by side: the product is timed again beside each setting
            rows.append({"model": model, "metric": "block_s",
                         "value": _best_of(lambda scores=scores: _read(scores(), pairs))})
        rows.append({"model": f"text_boosted@{n}", "metric": "boosted_per_user", "value": boost.nnz / block})
    return rows


def render(rows: list[dict]) -> str:
    out = [f"{'model':<24} {'metric':<18} {'value':>10} {'vs product':>11}"]
    for r in rows:
        at = r["model"].rsplit("@", 1)[-1]
        product = next(p["value"] for p in rows if p["model"] == f"text_product@{at}" and p["metric"] == "block_s")
        ratio = f"{r['value'] / product:.2f}x" if r["metric"] == "block_s" else ""
        out.append(f"{r['model']:<24} {r['metric']:<18} {r['value']:>10.3f} {ratio:>11}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--unseen", default="1000,5000,20000")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = measure(args.items, args.block, [int(n) for n in args.unseen.split(",")])
    print(render(rows))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {"benchmark": "text_block", "dataset": f"synthetic-{args.items}-items", "split": None,
              "machine": {"cpus": torch.get_num_threads(), "torch_threads": torch.get_num_threads(),
                          "processor": platform.processor() or platform.machine()},
              "command": f"python benchmarks/text_block.py --items {args.items} --block {args.block} "
                         f"--unseen {args.unseen}",
              "git_commit": commit.stdout.strip(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
