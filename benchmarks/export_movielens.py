"""Batch export speed on MovieLens: ``recsys recommend`` of a registered model, against two reference points.

One run, one machine, side by side:

- ``export`` at two block sizes: users/s of the whole streaming export (candidates -> features ->
  ranker -> Parquet row groups, temp file + rename), and the peak RSS of the process doing it
  (each export runs in a fresh child process, so the peaks do not mix);
- ``lightfm_predict_loop``: LightFM's own ``predict`` called once per user on the same users
  (what a naive export would do; target: the export >= 20x faster);
- ``matmul_floor``: the bare matrix products of all users against all items that the candidate
  stage needs (LightFM and text-tower embeddings, EASE's history x B), and ``candidate_stage``:
  our stage-one scoring plus candidate generation for the same users (target: within 3x of the floor).

The model is the one ``recsys train --config training/configs/movielens.yaml`` registered::

    python benchmarks/export_movielens.py --tracking-uri sqlite:///mlflow/mlflow.db --data data/movielens
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.candidates import generate_candidates  # noqa: E402
from recsys.evaluation.run import git_commit, portable_command  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "export_movielens.json"


def child(model: str, tracking_uri: str, data: Path, block_size: int, k: int) -> dict:
    """One export in this process: load time, export time, users/s, peak RSS."""
    from recsys.export import ExportConfig, recommend_to_file

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = recommend_to_file(model, data, Path(tmp) / "recs.parquet", ExportConfig(k=k, block_size=block_size),
                                    tracking_uri=tracking_uri, show_progress=False)
    total = time.perf_counter() - start
    return {"block_size": block_size, "users": summary.users, "rows": summary.rows, "export_s": summary.seconds,
            "users_per_s": summary.users_per_s, "load_s": total - summary.seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(args, block_size: int, before: bool = False) -> dict:
    """One export in a fresh process; ``before``: the code at ``--before-code`` and its own store."""
    uri = args.before_tracking_uri if before else args.tracking_uri
    command = [sys.executable, __file__, "--child", str(block_size), "--model", args.model, "--tracking-uri",
               uri, "--data", str(args.data), "--k", str(args.k)]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    if before:  # the older checkout's recsys shadows the installed one in that child
        env["PYTHONPATH"] = str(args.before_code)
        command[1] = str(Path(args.before_code) / "benchmarks" / "export_movielens.py")
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise SystemExit(f"export child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict]) -> dict:
    """Per-metric medians of repeated child runs (same block size)."""
    return {key: float(np.median([r[key] for r in runs])) if isinstance(runs[0][key], float) else runs[0][key]
            for key in runs[0]}


def timed(fn, repeat: int = 3) -> float:
    """Best of ``repeat`` wall times (the least disturbed by the shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def lightfm_model(scorer):
    """A ``lightfm.LightFM`` that predicts exactly what the registered LightFM scorer scores.

    The item representations (features @ embeddings) become identity-feature embeddings, so
    ``LightFM.predict`` without item features gives the same scores, at its own per-user speed.
    """
    from lightfm import LightFM

    model = LightFM(no_components=scorer.user_factors.shape[1])
    model._initialize(model.no_components, scorer.item_factors.shape[0], scorer.user_factors.shape[0])
    model.user_embeddings[:], model.user_biases[:] = scorer.user_factors, scorer.user_bias
    model.item_embeddings[:], model.item_biases[:] = scorer.item_factors, scorer.item_bias
    return model


def reference_rows(args) -> list[dict]:
    """LightFM's per-user predict loop, the bare matmul floor and our candidate stage, in this process."""
    from recsys.export import prepare_bundle
    from recsys.pyfunc_model import load_registered

    bundle, users = prepare_bundle(load_registered(args.model, args.tracking_uri), args.data)
    index = bundle.user_index(users)
    index = index[index >= 0]
    state, pipeline = bundle.state, bundle.pipeline
    lightfm = state.models["lightfm"]
    sample = index[: args.loop_users]
    reference = lightfm_model(lightfm)
    items = np.arange(lightfm.item_factors.shape[0], dtype=np.int32)
    loop_s = timed(lambda: [reference.predict(np.full(len(items), u, np.int32), items) for u in sample], repeat=1)
    history = bundle.history[index]

    user_emb, item_emb = lightfm.user_factors, lightfm.item_factors
    text = state.models.get("text")
    with torch.inference_mode():
        window = torch.from_numpy(text.user_history_[index])
        text_users = text.head.users(text.item_vectors_[window.clamp(min=0)], window >= 0).numpy()
    text_items = text.item_vectors_.numpy()
    ease = state.models.get("ease")

    def floor() -> None:
        for lo in range(0, len(index), args.block):
            rows = index[lo:lo + args.block]
            _ = user_emb[rows] @ item_emb.T
            _ = text_users[lo:lo + args.block] @ text_items.T
            if ease is not None:
                _ = sp.csr_matrix(history[lo:lo + args.block]) @ ease.weights

    def candidate_stage() -> None:
        for lo in range(0, len(index), args.block):
            rows = index[lo:lo + args.block]
            block = history[lo:lo + args.block]
            scores = pipeline.stage_scores(rows, block)
            generate_candidates(scores, rows, block, sources=state.sources, config=state.candidates, cold=state.cold)

    def lightfm_blocked() -> None:
        for lo in range(0, len(index), args.block):
            lightfm.score(index[lo:lo + args.block], history[lo:lo + args.block])

    phases = {"stage_one": 0.0, "candidates_and_features": 0.0, "ranker": 0.0}
    for lo in range(0, len(index), args.block):  # where the export's time goes, block by block
        rows, block = index[lo:lo + args.block], history[lo:lo + args.block]
        start = time.perf_counter()
        scores = pipeline.stage_scores(rows, block)
        mid = time.perf_counter()
        table = pipeline.candidate_table(rows, block, scores=scores)
        end = time.perf_counter()
        state.ranker.predict(table)
        phases["stage_one"] += mid - start
        phases["candidates_and_features"] += end - mid
        phases["ranker"] += time.perf_counter() - end
    floor_s, stage_s, blocked_s = timed(floor), timed(candidate_stage), timed(lightfm_blocked)
    n = len(index)
    loop_rate, blocked_rate = len(sample) / loop_s, n / blocked_s
    return [
        {"model": "lightfm_predict_loop", "metric": "users_per_s", "value": round(loop_rate, 1),
         "users": len(sample)},
        {"model": "lightfm_blocked", "metric": "users_per_s", "value": round(blocked_rate, 1), "users": n},
        {"model": "lightfm_blocked", "metric": "speedup_vs_lightfm_predict_loop",
         "value": round(blocked_rate / loop_rate, 1)},
        *({"model": f"export_phase_{name}", "metric": "wall_s", "value": round(seconds, 3), "users": n}
          for name, seconds in phases.items()),
        {"model": "matmul_floor", "metric": "wall_s", "value": round(floor_s, 4), "users": n},
        {"model": "candidate_stage", "metric": "wall_s", "value": round(stage_s, 4), "users": n},
        {"model": "candidate_stage", "metric": "ratio_to_matmul_floor", "value": round(stage_s / floor_s, 2)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/recsys@champion")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "movielens",
                        help="Imported dataset folder (recsys data import movielens ...).")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--block-sizes", default="64,512", help="Two (or more) export block sizes.")
    parser.add_argument("--block", type=int, default=512, help="Block size of the floor and candidate-stage timing.")
    parser.add_argument("--loop-users", type=int, default=100, help="Users timed in the LightFM predict loop.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--before-code", type=Path, help="An older checkout: also export with its code (same run).")
    parser.add_argument("--before-tracking-uri", help="The store holding the model the older code registered.")
    parser.add_argument("--repeat", type=int, default=1, help="Exports per block size and side (medians).")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.tracking_uri:
        raise SystemExit("give --tracking-uri (or set MLFLOW_TRACKING_URI): the store holding the registered model")
    if args.child is not None:
        print(json.dumps(child(args.model, args.tracking_uri, args.data, args.child, args.k)))
        return
    sizes = [int(b) for b in args.block_sizes.split(",")]
    exports, befores = [], []
    for b in sizes:  # interleaved in alternating order, medians of --repeat: the shared machine is noisy
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.repeat):
            order = (False, True) if r % 2 == 0 else (True, False)
            for before in order if args.before_code else (False,):
                runs[before].append(run_child(args, b, before=before))
        exports.append(median_run(runs[False]))
        if args.before_code:
            befores.append(median_run(runs[True]))
    rows = []
    for name, runs in (("export", exports), ("export_before", befores)):
        for e in runs:
            for metric in ("users_per_s", "peak_rss_mb", "export_s", "load_s"):
                rows.append({"model": name, "metric": metric, "value": round(e[metric], 2),
                             "block_size": e["block_size"], "users": e["users"], "k": args.k})
    for e, b in zip(exports, befores, strict=False):
        rows.append({"model": "export", "metric": "users_per_s_ratio_to_before",
                     "value": round(e["users_per_s"] / b["users_per_s"], 3), "block_size": e["block_size"]})
    rows += reference_rows(args)
    loop = next(r["value"] for r in rows if r["model"] == "lightfm_predict_loop")
    for e in exports:
        rows.append({"model": "export", "metric": "speedup_vs_lightfm_predict_loop",
                     "value": round(e["users_per_s"] / loop, 1), "block_size": e["block_size"]})
    payload = {"benchmark": "export_movielens", "dataset": "movielens-latest-small+tmdb",
               "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
               "command": portable_command("benchmarks/export_movielens.py", sys.argv[1:], ROOT),
               "git_commit": git_commit(ROOT), "model": args.model, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"{'model':<22} {'metric':<32} {'block':>6} {'value':>12}")
    for r in rows:
        print(f"{r['model']:<22} {r['metric']:<32} {r.get('block_size', ''):>6} {r['value']:>12}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
