"""The registered pipeline as a peer of the new-item protocol: trained without the new items, given them later.

What a user of the product does when items arrive: the model registered before they existed gets
them through ``recsys recommend --new-items``, which encodes their text with the stored tower, and
the cold-exposure slots (``--cold-slots 20`` of a 20-item list) show the best of them in the
ranker's order. So the same users and new items as the text stage's ``cold_only`` slice are scored:

1. the text stage's evaluation is rebuilt from its logged config (split, history, relevant events,
   user sample), giving the test window's new items, its users and their relevant new items;
2. a "before" folder holds every event and item but the new ones, and the default ``recsys train``
   (the whole pipeline, registered) runs on it;
3. ``recsys recommend --model models:/recsys@challenger --new-items NEW --cold-slots 20 --k 20`` lists
   20 items for each evaluated user, and ``recsys.evaluation.metrics.ranking_metrics`` scores the
   lists against the same truth as the other peers (Recall@20 and NDCG@10 with bootstrap CIs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from suite import run_logged

from features.split import SplitConfig
from recsys import contract as C
from recsys.evaluation.bootstrap import bootstrap_ci
from recsys.evaluation.eval_data import EvalConfig, EvalData, build_eval_data
from recsys.evaluation.metrics import ranking_metrics
from recsys.io import DatasetPaths, load_dataset

__all__ = ["registered_rows"]

SLOTS = 20
"""List length and cold slots of the registered peer's lists: all of the first page goes to new items."""
METRICS = ("recall@20", "ndcg@10")


def evaluation_of(folder: Path, config_yaml: str) -> EvalData:
    """The text stage's evaluation data, rebuilt from the ``config.yaml`` its MLflow run logged."""
    config = yaml.safe_load(config_yaml)
    relevant = tuple(config["relevant"]) if config.get("relevant") else None
    eval_config = EvalConfig(split=SplitConfig(**config["split"]), history=config["history"], relevant=relevant,
                             max_users=config.get("max_eval_users"),
                             event_weights=tuple((str(e), float(w)) for e, w in config["event_weights"]))
    return build_eval_data(load_dataset(DatasetPaths.from_dir(folder)), eval_config)


def write_before(folder: Path, new_ids: np.ndarray, out: Path) -> Path:
    """``out/before`` (the dataset without the new items and their events) and ``out/new_items.parquet``."""
    before = out / "before"
    before.mkdir(parents=True, exist_ok=True)
    new = pl.Series(C.ITEM_ID, new_ids.astype(str)).implode()
    items = pl.read_parquet(folder / "items.parquet")
    items.filter(pl.col(C.ITEM_ID).is_in(new)).write_parquet(out / "new_items.parquet")
    items.filter(~pl.col(C.ITEM_ID).is_in(new)).write_parquet(before / "items.parquet")
    events = pl.read_parquet(folder / "interactions.parquet")
    events.filter(~pl.col(C.ITEM_ID).is_in(new)).write_parquet(before / "interactions.parquet")
    for other in folder.glob("*.parquet"):  # user features and the like travel as they are
        if other.name not in ("items.parquet", "interactions.parquet"):
            shutil.copy(other, before / other.name)
    return before


def registered_rows(name: str, folder: Path, config_yaml: str, work: Path, recsys: list[str],
                    budget: float, reuse: bool = False) -> list[dict]:
    """The registered pipeline's new-item Recall@20 and NDCG@10 (with CIs) on the text stage's users and items.

    Users whose every event is on a new item are unknown to the model and absent from the "before"
    folder: they get no list (every figure 0 for them), as the other peers rank for them from an empty
    history. ``reuse``: keep the lists (and timings) of an earlier run in ``work``.
    """
    data = evaluation_of(folder, config_yaml)
    window = data.test
    new_ids = data.item_ids[window.cold_items]
    truth = window.truth[window.users].multiply(window.cold_items[None, :].astype(np.float32)).tocsr()
    users = window.users[np.diff(truth.indptr) > 0]
    truth = truth[np.diff(truth.indptr) > 0]
    lists_path, timing = work / "lists.parquet", work / "timing.json"
    if reuse and lists_path.is_file() and timing.is_file():
        walls = json.loads(timing.read_text())
    else:
        walls = _train_and_export(data, folder, new_ids, users, work, recsys, budget)
        timing.write_text(json.dumps(walls))
    topk = _topk(pl.read_parquet(lists_path), data, users)
    per_user = ranking_metrics(topk, truth, ks=(10, 20))
    rows = []
    for metric in METRICS:
        value, low, high = bootstrap_ci(per_user[metric])
        rows.append({"dataset": name, "model": "registered", "metric": f"cold_only_{metric}", "value": round(value, 5),
                     "ci_low": round(low, 5), "ci_high": round(high, 5), "n_users": len(users)})
    figures = {"new_share_of_lists": float(np.isin(topk, np.flatnonzero(window.cold_items)).mean()),
               "users_without_list": float((topk < 0).all(axis=1).sum())} | walls
    return rows + [{"dataset": name, "model": "registered", "metric": metric, "value": round(value, 4)}
                   for metric, value in figures.items()]


def _train_and_export(data: EvalData, folder: Path, new_ids: np.ndarray, users: np.ndarray, work: Path,
                      recsys: list[str], budget: float) -> dict[str, float]:
    """``recsys train`` on the data without the new items, then its lists for the users it knows; wall seconds."""
    before = write_before(folder, new_ids, work)
    store = f"sqlite:///{work / 'mlflow.db'}"
    train_s = run_logged([*recsys, "train", "--data", str(before), "--tracking-uri", store, "--budget-minutes",
                          str(budget), "--set", f"report_dir={work / 'report'}"], work / "train.log",
                         f"recsys train on {before}")[0]
    ids = pl.Series(C.USER_ID, data.user_ids[users].astype(str))
    known = pl.read_parquet(before / "interactions.parquet", columns=[C.USER_ID])[C.USER_ID].cast(pl.String)
    pl.DataFrame(ids.filter(ids.is_in(known.implode()))).write_parquet(work / "users.parquet")
    export_s = run_logged([*recsys, "recommend", "--model", "models:/recsys@challenger", "--data", str(before),
                           "--users", str(work / "users.parquet"), "--new-items", str(work / "new_items.parquet"),
                           "--cold-slots", str(SLOTS), "--k", str(SLOTS), "--out", str(work / "lists.parquet"),
                           "--tracking-uri", store], work / "recommend.log", f"recsys recommend on {before}")[0]
    return {"train_wall_s": train_s, "export_wall_s": export_s}


def _topk(lists: pl.DataFrame, data: EvalData, users: np.ndarray) -> np.ndarray:
    """int64 [len(users), SLOTS] catalogue indices of each user's list in rank order (-1 past its end)."""
    item_index = {item: i for i, item in enumerate(data.item_ids.astype(str))}
    row_of = {user: r for r, user in enumerate(data.user_ids[users].astype(str))}
    topk = np.full((len(users), SLOTS), -1, dtype=np.int64)
    ranked = lists.sort(C.USER_ID, "rank")
    for user, item, rank in zip(ranked[C.USER_ID].cast(pl.String), ranked[C.ITEM_ID].cast(pl.String),
                                ranked["rank"].to_numpy(), strict=True):
        if rank <= SLOTS and user in row_of:
            topk[row_of[user], rank - 1] = item_index.get(item, -1)
    return topk
