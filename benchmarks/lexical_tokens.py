"""Which tokens should the text tower's lexical term read: the encoder's WordPiece, or words?

The lexical term (``recsys/scorers/text_lexical.py``) is the TF-IDF cosine of a user's history with
an item, over the encoder's own WordPiece tokens, so a new item's words need no refit and serving
stores no vocabulary. Its peer in the new-item protocol, ``tfidf``, reads words (scikit-learn's
tokens, English stop words out, sublinear counts), and on MicroLens-50k it stood level with the
whole fine-tuned tower. This asks whether words would serve the term better: each reading of the
item text alone (no events learned) ranks only the new items for each user with an event on one,
under the split of ``benchmarks/new_items.py`` (a seeded 20% of the items new):

- ``tfidf_words``: the peer (words, stop words out, sublinear counts);
- ``words_with_stop_words``: the same words, stop words kept;
- ``wordpiece``: the tower's lexical term as it is (raw counts, 64 tokens);
- ``wordpiece_sublinear``: WordPiece with 1 + log counts;
- ``wordpiece_no_stop_words``: WordPiece, sublinear, English stop words weighted 0;
- ``wordpiece_and_words``: WordPiece and the peer's words side by side in one vector.

Prints a table and writes JSON in the shape of ``../shared/BENCHMARKS.md``.

    python benchmarks/lexical_tokens.py --shared ../shared/data [--only movielens,ml-1m,microlens-50k]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from suite import benchmark_args, prepare, write_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "lexical_tokens.json"
DATASETS = ("movielens", "ml-1m", "microlens-50k")
SPLIT = {"mode": "items", "valid": 0.1, "test": 0.2, "history": "train+valid"}
MAX_LENGTH = 64
"""The tower's token cap (the recipe's ceiling)."""
METRICS = ("cold_only_recall@20", "cold_only_recall@50", "cold_only_ndcg@10")


def readings(items, tokenizer) -> dict[str, sp.csr_matrix]:
    """Each reading's unit-length rows of the catalogue [n_items, vocabulary]."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    from recsys.scorers.text_lexical import LexicalIndex, _counts, _unit
    from recsys.text_encoder import DEFAULT_TEMPLATE, render_item_texts
    from training.fit_tfidf import item_tfidf

    texts = render_item_texts(items, DEFAULT_TEMPLATE)
    ids = [np.asarray(i) for i in tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=False)["input_ids"]]
    lexical = LexicalIndex.fit(ids, len(tokenizer), tokenizer.all_special_ids)
    sublinear = _counts(ids, len(tokenizer))
    sublinear.data = 1.0 + np.log(sublinear.data)
    no_stop = lexical.idf.copy()
    no_stop[tokenizer.convert_tokens_to_ids([w for w in ENGLISH_STOP_WORDS if w in tokenizer.vocab])] = 0.0
    words = item_tfidf(items, template=None)
    return {"tfidf_words": words,
            "words_with_stop_words": TfidfVectorizer(sublinear_tf=True, dtype=np.float32).fit_transform(texts),
            "wordpiece": lexical.items,
            "wordpiece_sublinear": _unit((sublinear @ sp.diags(lexical.idf)).tocsr()),
            "wordpiece_no_stop_words": _unit((sublinear @ sp.diags(no_stop)).tocsr()),
            "wordpiece_and_words": _unit(sp.hstack([lexical.items, words]).tocsr())}


def dataset_rows(name: str, folder: Path) -> list[dict]:
    """Every reading's new-item protocol figures on one dataset."""
    from transformers import AutoTokenizer

    from features.split import SplitConfig
    from recsys.datasets import DatasetPaths, load_dataset
    from recsys.evaluation.bootstrap import bootstrap_many
    from recsys.evaluation.eval_data import EvalConfig, build_eval_data
    from recsys.evaluation.runner import score_model
    from recsys.text_encoder import resolve_model_path
    from training.fit_tfidf import TfidfScorer

    relevant = None if name == "microlens-50k" else ("purchase",)  # rated sets: judged on liked films, as the recipe
    config = EvalConfig(split=SplitConfig(mode="items", valid=SPLIT["valid"], test=SPLIT["test"]),
                        history="train+valid", relevant=relevant, max_users=10_000)
    data = build_eval_data(load_dataset(DatasetPaths.from_dir(folder)), config)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(None), local_files_only=True)
    rows = []
    for model, matrix in readings(data.test.fit.items, tokenizer).items():
        result = score_model(data, model, TfidfScorer(model, sp.csr_matrix(matrix, dtype=np.float32)))
        for metric, (value, low, high) in bootstrap_many(result.cold_only, n_resamples=config.n_bootstrap,
                                                         seed=config.seed).items():
            if f"cold_only_{metric}" in METRICS:
                rows.append({"dataset": name, "model": model, "metric": f"cold_only_{metric}", "value": round(value, 5),
                             "ci_low": round(low, 5), "ci_high": round(high, 5),
                             "n_users": len(next(iter(result.cold_only.values())))})
        print(f"{name}: {model} done", flush=True)
    return rows


def render(rows: list[dict]) -> str:
    lines = [f"{'dataset':15s} {'reading':25s} " + " ".join(f"{m:>22s}" for m in METRICS)]
    keys = dict.fromkeys((r["dataset"], r["model"]) for r in rows)
    for dataset, model in keys:
        cells = {r["metric"]: r for r in rows if r["dataset"] == dataset and r["model"] == model}
        lines.append(f"{dataset:15s} {model:25s} " + " ".join(
            f"{cells[m]['value']:.4f} [{cells[m]['ci_low']:.3f},{cells[m]['ci_high']:.3f}]" for m in METRICS))
    return "\n".join(lines)


def main() -> None:
    args = benchmark_args(__doc__, DATASETS, RESULTS)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for name in args.names:
            rows += dataset_rows(name, prepare(name, args.shared, work / "data"))
    print(render(rows))
    write_result(rows, args.out, sys.argv[1:], args.budget_minutes, benchmark="lexical_tokens", split=SPLIT)


if __name__ == "__main__":
    main()
