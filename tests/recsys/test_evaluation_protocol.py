"""The evaluation protocol end to end: windows, exclusion of history, oracles, slices, report, MLflow, CLI.

Models are fitted by ``training.fit_models`` and scored by ``recsys.evaluation.runner``, which never fits."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from features.split import SplitConfig
from recsys import contract as C
from recsys.cli import cli
from recsys.datasets import write_synthetic
from recsys.errors import DataContractError
from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.evaluation.report import write_report
from recsys.evaluation.runner import score_model, summarise
from recsys.evaluation.tracking import SLICE_METRICS, log_evaluation, mlflow_metric_key
from recsys.indexing import FitInput
from recsys.io import Dataset, DatasetPaths, load_dataset
from recsys.scoring import rank_users
from recsys.synthetic import SyntheticConfig
from training.fit_models import ModelSpec, evaluate_specs

T0 = datetime(2024, 1, 1)


def _dataset() -> Dataset:
    """3 users x 6 items; per-user 50/0/50-ish windows are worked out in the tests."""
    rows = [  # user, item, hour, event
        ("u1", "a", 0, "click"), ("u1", "b", 1, "click"), ("u1", "c", 2, "purchase"), ("u1", "d", 3, "click"),
        ("u2", "a", 0, "click"), ("u2", "c", 1, "click"), ("u2", "e", 2, "click"), ("u2", "a", 3, "click"),
        ("u3", "b", 0, "click"), ("u3", "f", 5, "click"),
    ]
    inter = pl.DataFrame(rows, schema=[C.USER_ID, C.ITEM_ID, "h", C.EVENT], orient="row").select(
        C.USER_ID, C.ITEM_ID, (pl.lit(T0) + pl.duration(hours=pl.col("h"))).cast(C.DATETIME).alias(C.TS), C.EVENT,
        pl.lit(None, pl.String).alias(C.IMPRESSION_ID), pl.lit(None, pl.Float64).alias(C.RATING),
        pl.lit(False).alias(C.FROM_HISTORY))
    items = pl.DataFrame({C.ITEM_ID: list("abcdef"), C.TITLE: list("ABCDEF")}).with_columns(
        pl.lit(None, pl.String).alias(C.DESCRIPTION), pl.Series(C.CATEGORY, ["x", "x", "y", "y", "y", None]),
        pl.lit([], pl.List(pl.String)).alias(C.TAGS), pl.lit(None, C.DATETIME).alias(C.PUBLISHED_AT))
    return Dataset(items, inter)


CFG = EvalConfig(split=SplitConfig(mode="per-user", valid=0.25, test=0.25), n_bootstrap=50, ks=(1, 2, 5))


class Oracle:
    """Scores the test truth highest: a perfect ranker. ``seen_first`` instead loves the history."""

    def __init__(self, truth: sp.csr_matrix, seen_first: bool = False) -> None:
        self.name, self.truth, self.seen_first = ("seen" if seen_first else "oracle"), truth, seen_first

    def fit(self, data: FitInput) -> Oracle:
        return self

    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        base = (history if self.seen_first else self.truth[users]).toarray().astype(np.float32)
        return base * 10 + np.linspace(0, 1, base.shape[1], dtype=np.float32)  # deterministic tie-break


def test_windows_split_per_user_and_truth_excludes_history():
    data = build_eval_data(_dataset(), CFG)
    items = list(data.item_ids)
    # u1: 4 units -> 1 test (d), 1 valid (c), train a, b. u2: test a (seen in train -> not relevant), valid e,
    # train a, c. u3: 2 units -> floor(0.5) = 0 test and valid: all train (b, f). Train items: a, b, c, f.
    train = data.test.history.toarray()
    assert train[0].nonzero()[0].tolist() == [items.index("a"), items.index("b")]
    assert data.test.truth.toarray()[0].nonzero()[0].tolist() == [items.index("d")]
    assert data.test.truth.toarray()[1].sum() == 0  # u2 re-clicked a: already in history
    assert data.valid.truth.toarray()[0].nonzero()[0].tolist() == [items.index("c")]
    assert data.test.users.tolist() == [0]  # only u1 has a relevant unseen test item
    assert data.test.cold_items.tolist() == [False, False, False, True, True, False]
    # purchases weigh 2, clicks 1 in the fit matrices
    full = build_eval_data(_dataset(), EvalConfig(split=CFG.split, history="train+valid"))
    assert full.test.fit.interactions.toarray()[0, items.index("c")] == 2.0
    assert full.test.cold_items.tolist() == [False, False, False, True, False, False]


def test_relevance_judges_the_strong_events_while_every_positive_is_history():
    """relevant=purchase: targets are purchases only; clicks still fill the fit matrices and are excluded."""
    items = list(_dataset().items[C.ITEM_ID])
    rows = [("u1", "a", 0, "click"), ("u1", "b", 1, "purchase"), ("u1", "c", 2, "click"), ("u1", "d", 3, "purchase"),
            ("u2", "a", 0, "purchase"), ("u2", "e", 1, "click"), ("u2", "c", 2, "click"), ("u2", "f", 3, "click")]
    base = _dataset()
    inter = pl.DataFrame(rows, schema=[C.USER_ID, C.ITEM_ID, "h", C.EVENT], orient="row").select(
        C.USER_ID, C.ITEM_ID, (pl.lit(T0) + pl.duration(hours=pl.col("h"))).cast(C.DATETIME).alias(C.TS), C.EVENT,
        pl.lit(None, pl.String).alias(C.IMPRESSION_ID), pl.lit(None, pl.Float64).alias(C.RATING),
        pl.lit(False).alias(C.FROM_HISTORY))
    data = Dataset(base.items, inter)
    strict = build_eval_data(data, EvalConfig(split=CFG.split, relevant=("purchase",)))
    every = build_eval_data(data, EvalConfig(split=CFG.split))
    # u1's test event d is a purchase: relevant either way; u2's test event f is a click: relevant only by default
    assert strict.test.users.tolist() == [0] and every.test.users.tolist() == [0, 1]
    assert strict.test.truth.toarray()[0].nonzero()[0].tolist() == [items.index("d")]
    # the clicks are history in both: fit matrices are the same, whatever is judged
    assert (strict.test.history != every.test.history).nnz == 0
    assert strict.test.history.toarray()[0, items.index("a")] == 1.0  # u1's click on a: seen, never recommended
    assert strict.config.relevance == ("purchase",) and every.config.relevance == ("click", "purchase")
    with pytest.raises(ValueError, match=r"relevant \(--relevant\) must be some of the positives \(click\); "
                                         r"got purchase"):
        EvalConfig(positives=("click",), relevant=("purchase",))
    clicks_only = Dataset(base.items, inter.with_columns(pl.lit("click").alias(C.EVENT)))
    with pytest.raises(DataContractError, match=r"relevant \(--relevant\) purchase: no interaction has these events"):
        build_eval_data(clicks_only, EvalConfig(split=CFG.split, relevant=("purchase",)))


def test_item_features_are_one_hot_categories():
    features = build_eval_data(_dataset(), CFG).test.fit.item_features
    assert features.shape == (6, 2) and features.sum(axis=1).A1.tolist() == [1, 1, 1, 1, 1, 0]


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> tuple[Dataset, object]:
    folder = tmp_path_factory.mktemp("synth")
    write_synthetic(folder, SyntheticConfig(n_users=60, n_items=50, sessions_per_user=6, slate_size=6, seed=1))
    data = load_dataset(DatasetPaths.from_dir(folder))
    return folder, build_eval_data(data, EvalConfig(n_bootstrap=100))


def test_max_users_evaluates_a_seeded_sample_and_fits_on_everyone(synthetic_data):
    folder, full = synthetic_data
    dataset = load_dataset(DatasetPaths.from_dir(folder))
    config = EvalConfig(n_bootstrap=100, max_users=10)
    sampled, again = (build_eval_data(dataset, config) for _ in range(2))
    for window, whole in ((sampled.valid, full.valid), (sampled.test, full.test)):
        assert len(window.users) == min(10, len(whole.users)) and set(window.users) <= set(whole.users)
        # the sampled users keep their whole truth; the fit data is untouched
        assert (window.truth[window.users] != whole.truth[window.users]).nnz == 0
        assert (window.fit.interactions != whole.fit.interactions).nnz == 0
    assert len(full.test.users) > 10
    np.testing.assert_array_equal(sampled.test.users, again.test.users)  # seeded
    result = evaluate_specs(sampled, [ModelSpec("oracle", lambda _: Oracle(sampled.test.truth))], reference="oracle")
    assert result.models[0].topk.shape[0] == 10
    with pytest.raises(ValueError, match="max_users must be >= 1"):
        EvalConfig(max_users=0)


def test_seen_items_never_appear_and_a_perfect_ranker_scores_one(synthetic_data):
    _, data = synthetic_data
    truth = data.test.truth
    result = evaluate_specs(data, [ModelSpec("oracle", lambda _: Oracle(truth)),
                                   ModelSpec("seen", lambda _: Oracle(truth, seen_first=True))], reference="oracle")
    oracle, seen = result.models
    for metric in ("ndcg@10", "hitrate@5", "mrr", "map@100", "recall@100"):
        assert np.allclose(oracle.per_user[metric], 1.0), metric
    history = data.test.history[data.test.users].toarray() > 0
    rows = np.arange(len(data.test.users))[:, None]
    ranked = seen.topk >= 0  # -1 pads lists longer than the unseen catalogue
    assert ranked.sum() > 0 and not history[rows, np.where(ranked, seen.topk, 0)][ranked].any()
    table = result.table.filter((pl.col("model") == "oracle") & (pl.col("slice") == "all"))
    assert table.filter(pl.col("metric") == "ndcg@10")["ci_low"][0] == pytest.approx(1.0)
    # Impression protocol: an oracle of every test click (history re-clicks included) ranks each
    # impression's clicks first, unless the same item was clicked in one impression and only
    # shown in another of the same user.
    ev = data.test_events.filter(pl.col(C.EVENT) != C.IMPRESSION)
    clicks = sp.csr_matrix((np.ones(ev.height), (ev["user_idx"].to_numpy(), ev["item_idx"].to_numpy())),
                           shape=data.test.truth.shape)
    click_oracle = evaluate_specs(data, [ModelSpec("oracle", lambda _: Oracle(clicks))]).models[0]
    auc = click_oracle.impressions["auc"]
    assert np.nanmean(auc) > 0.95 and np.nanmedian(auc) == 1.0 and np.isfinite(auc).sum() >= 20
    assert result.paired["mean_diff"][0] < 0  # "seen" minus "oracle"


def test_blocked_scoring_equals_one_big_block(synthetic_data):
    _, data = synthetic_data
    model = Oracle(data.test.truth, seen_first=False)
    users = data.test.users
    one = rank_users(model, users, data.test.history, 20, block_size=len(users))[0]
    small = rank_users(model, users, data.test.history, 20, block_size=7)[0]
    assert np.array_equal(one, small)


class Prefitted(Oracle):
    """An oracle that is already fitted: the evaluation must only score it."""

    def fit(self, data: FitInput) -> Oracle:
        raise AssertionError("the evaluation runner must not fit")


def test_runner_scores_a_prefitted_model_without_fitting(synthetic_data):
    _, data = synthetic_data
    truth = data.test.truth
    fitted = [score_model(data, "oracle", Prefitted(truth), setting="given", seconds={"fit_s": 1.5}),
              score_model(data, "seen", Prefitted(truth, seen_first=True))]
    result = summarise(data, fitted, reference="oracle")
    oracle, seen = result.models
    assert np.allclose(oracle.per_user["ndcg@10"], 1.0) and oracle.setting == "given" and oracle.tuning == {}
    assert oracle.seconds["fit_s"] == 1.5 and {"score_s", "users_per_s"} <= set(oracle.seconds)
    assert oracle.topk.shape == (len(data.test.users), data.config.max_k) and oracle.impressions is not None
    # the same models through fit -> score give the same table: the runner adds nothing of its own
    specs = [ModelSpec("oracle", lambda _: Oracle(truth)), ModelSpec("seen", lambda _: Oracle(truth, seen_first=True))]
    through_fit = evaluate_specs(data, specs, reference="oracle")
    assert result.table.equals(through_fit.table) and result.paired.equals(through_fit.paired)
    assert np.array_equal(seen.topk, through_fit.models[1].topk)


def test_slices_cover_cold_warm_history_and_events(synthetic_data):
    folder, _ = synthetic_data  # a global split: items published late are cold in the test window
    data = build_eval_data(load_dataset(DatasetPaths.from_dir(folder)),
                           EvalConfig(split=SplitConfig("global", 0.1, 0.2), n_bootstrap=50))
    result = evaluate_specs(data, [ModelSpec("oracle", lambda _: Oracle(data.test.truth))], reference="none")
    slices = set(result.table["slice"])
    assert {"all", "warm_items", "history_5-19", "event_click", "event_purchase", "impressions"} <= slices
    n_users = dict(result.table.filter(pl.col("metric") == "ndcg@10").select("slice", "n_users").iter_rows())
    history_buckets = [v for k, v in n_users.items() if k.startswith("history_")]
    assert sum(history_buckets) == n_users["all"]  # the buckets partition the users
    cold = data.test.truth[data.test.users][:, data.test.cold_items].getnnz(axis=1) > 0
    assert cold.sum() > 0 and n_users["cold_items"] == n_users["cold_only"] == cold.sum()
    # ranking only the cold items, the oracle puts every cold positive first
    cold_only = result.table.filter((pl.col("slice") == "cold_only") & (pl.col("metric") == "recall@100"))
    assert cold_only["value"][0] == pytest.approx(1.0)


def test_models_are_paired_with_the_reference_where_only_new_items_are_ranked_too(synthetic_data):
    """The new-item protocol's comparison (a tower against a text peer) is paired over the same users with a new-item
    positive, as the whole-catalogue metrics are over every test user."""
    folder, _ = synthetic_data
    data = build_eval_data(load_dataset(DatasetPaths.from_dir(folder)),
                           EvalConfig(split=SplitConfig("global", 0.1, 0.2), n_bootstrap=200))
    result = evaluate_specs(data, [ModelSpec("oracle", lambda _: Oracle(data.test.truth)),
                                   ModelSpec("seen", lambda _: Oracle(data.test.truth, seen_first=True))],
                            reference="oracle")
    oracle, seen = result.models
    paired = {row["metric"]: row for row in result.paired.to_dicts()}
    assert {"ndcg@10", "recall@20", "cold_only_ndcg@10", "cold_only_recall@20"} <= set(paired)
    for metric in ("ndcg@10", "recall@20"):
        row = paired[f"cold_only_{metric}"]
        assert row["model"] == "seen" and row["reference"] == "oracle"
        assert row["mean_diff"] == pytest.approx(np.mean(seen.cold_only[metric] - oracle.cold_only[metric]))
        assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    assert paired["cold_only_ndcg@10"]["mean_diff"] != paired["ndcg@10"]["mean_diff"]


def test_report_json_html_plots_and_mlflow(synthetic_data, tmp_path):
    _, data = synthetic_data
    from training.baseline_specs import baseline_specs

    result = evaluate_specs(data, baseline_specs(["random", "popularity"]))
    files = write_report(result, tmp_path / "report", dataset="synth", command="test")
    payload = json.loads(files.json.read_text())
    assert payload["benchmark"] == "evaluate" and payload["split"]["mode"] == "per-user"
    row = next(r for r in payload["rows"] if r["model"] == "popularity" and r["metric"] == "ndcg@10")
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert any(r["metric"] == "imp_auc" for r in payload["rows"])
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") == 3 and "popularity" in page
    assert all(p.stat().st_size > 5_000 for p in files.plots)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_evaluation(result, files, tracking_uri=uri, dataset="synth")
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(run_id)
    assert run.data.metrics[mlflow_metric_key("popularity", "all", "ndcg@10")] == pytest.approx(row["value"])
    # other slices log their headline metrics only (the full table is results.json)
    sliced = result.table.filter((pl.col("slice") != "all") & pl.col("value").is_not_nan())
    assert sliced.height > 0
    for r in sliced.iter_rows(named=True):
        logged = mlflow_metric_key(r["model"], r["slice"], r["metric"]) in run.data.metrics
        assert logged == (r["metric"] in SLICE_METRICS), r
    assert run.data.params["split.mode"] == "per-user" and run.data.params["history"] == "train"
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run_id)}
    assert {"report.html", "results.json", "metric_at_k.png"} <= artifacts


def test_cli_evaluate(synthetic_data, tmp_path):
    folder, _ = synthetic_data
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(folder), "--models", "random,popularity", "--report",
                                      str(tmp_path / "r"), "--tracking-uri", uri, "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    assert "history at test time: train" in result.output and "popularity" in result.output
    assert "relevant: click, purchase" in result.output
    assert "event_purchase_ndcg@10" in result.output  # the strict view beside the default relevance
    assert (tmp_path / "r" / "report.html").exists() and "MLflow run" in result.output
    strict = CliRunner().invoke(cli, ["evaluate", "--data", str(folder), "--models", "popularity", "--relevant",
                                      "purchase", "--report", str(tmp_path / "s"), "--no-mlflow", "--bootstrap", "50"])
    assert strict.exit_code == 0, strict.output
    assert "relevant: purchase," in strict.output and "event_purchase_ndcg@10" not in strict.output
    judged = json.loads((tmp_path / "s" / "results.json").read_text())
    assert judged["relevant"] == ["purchase"] and judged["positives"] == ["click", "purchase"]
    n_users = {r["metric"]: r["n_users"] for r in judged["rows"] if r["model"] == "popularity" and "n_users" in r}
    wide = json.loads((tmp_path / "r" / "results.json").read_text())
    n_wide = {r["metric"]: r["n_users"] for r in wide["rows"] if r["model"] == "popularity" and "n_users" in r}
    assert n_users["ndcg@10"] == n_wide["event_purchase_ndcg@10"] < n_wide["ndcg@10"]  # the strict slice's users
    bad_relevance = CliRunner().invoke(cli, ["evaluate", "--data", str(folder), "--models", "popularity",
                                             "--positives", "click", "--relevant", "purchase", "--no-mlflow"])
    assert bad_relevance.exit_code == 1 and "must be some of the positives" in bad_relevance.output
    none = CliRunner().invoke(cli, ["evaluate", "--data", str(folder)])
    assert none.exit_code == 2 and "pass --baselines" in none.output
    bad = CliRunner().invoke(cli, ["evaluate", "--data", str(folder), "--models", "popularity", "--valid", "0.9",
                                   "--no-mlflow"])
    assert bad.exit_code == 1 and "valid + test < 1" in bad.output and "Traceback" not in bad.output
    unknown = CliRunner().invoke(cli, ["evaluate", "--data", str(folder), "--models", "magic", "--no-mlflow"])
    assert unknown.exit_code == 1
    assert "--models: 'magic' is not a baseline; must be among random, popularity" in unknown.output


def test_config_errors():
    with pytest.raises(ValueError, match="Must be one of train, train\\+valid"):
        EvalConfig(history="valid")
    with pytest.raises(ValueError, match="other than impressions"):
        EvalConfig(positives=("impression",))
    assert timedelta(days=EvalConfig().recent_days) == timedelta(days=30)


def test_indexing_does_not_depend_on_row_order():
    """LightFM visits interactions in matrix order: shuffled input must give identical matrices."""
    data = _dataset()
    shuffled = Dataset(data.items.sample(fraction=1.0, shuffle=True, seed=3),
                       data.interactions.sample(fraction=1.0, shuffle=True, seed=4))
    a, b = build_eval_data(data, CFG).test.fit, build_eval_data(shuffled, CFG).test.fit
    for left, right in ((a.interactions, b.interactions), (a.item_features, b.item_features)):
        assert np.array_equal(left.indptr, right.indptr) and np.array_equal(left.indices, right.indices)
        assert np.array_equal(left.data, right.data)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_cli_evaluate_reads_a_folder_of_csv_tsv_or_json_lines(synthetic_data, tmp_path, fmt):
    """``--data DIR`` takes the contract's tables in any of its formats, with the same result as Parquet."""
    folder, _ = synthetic_data
    plain = tmp_path / fmt
    plain.mkdir()
    items = pl.read_parquet(folder / C.ITEMS_FILE).select(C.ITEM_ID, C.TITLE, C.DESCRIPTION, C.CATEGORY)
    inter = pl.read_parquet(folder / C.INTERACTIONS_FILE).select(
        C.USER_ID, C.ITEM_ID, pl.col(C.TS).dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"), C.EVENT, C.IMPRESSION_ID)
    for name, table in (("items", items), ("interactions", inter)):
        if fmt == "jsonl":
            table.write_ndjson(plain / f"{name}.jsonl")
        else:
            table.write_csv(plain / f"{name}.{fmt}", separator="\t" if fmt == "tsv" else ",")
    runs = {}
    for name, data_dir in (("parquet", folder), (fmt, plain)):
        result = CliRunner().invoke(cli, ["evaluate", "--data", str(data_dir), "--models", "popularity", "--report",
                                          str(tmp_path / f"r_{name}"), "--no-mlflow", "--bootstrap", "20"])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((tmp_path / f"r_{name}" / "results.json").read_text())
    def ndcg(run):
        return [r["value"] for r in run["rows"] if r["metric"] == "ndcg@10" and r.get("slice", "all") == "all"]
    assert ndcg(runs[fmt]) == ndcg(runs["parquet"]) and ndcg(runs[fmt])
    # the same table twice, in two formats: refused, naming both files
    items.write_parquet(plain / C.ITEMS_FILE)
    both = CliRunner().invoke(cli, ["evaluate", "--data", str(plain), "--models", "popularity", "--no-mlflow"])
    assert both.exit_code == 1 and "Traceback" not in both.output
    assert f"items.{fmt}" in both.output and "items.parquet" in both.output and "keep one" in both.output


def test_the_table_shows_a_slice_only_where_it_can_vary_with_its_user_count(tmp_path):
    """A slice column carries its users; one with too few users, or new items that every list holds, is named
    below the table instead of shown (every figure stays in results.json)."""
    folder = tmp_path / "synth"
    write_synthetic(folder, SyntheticConfig(n_users=300, n_items=400, sessions_per_user=6, slate_size=6, seed=1))
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(folder), "--models", "random,popularity",
                                      "--split-mode", "global", "--report", str(tmp_path / "r"), "--no-mlflow",
                                      "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "r" / "results.json").read_text())["rows"]
    n_users = {r["metric"]: r["n_users"] for r in rows if r["model"] == "random" and "n_users" in r}
    header = next(line for line in result.output.splitlines() if line.startswith("│ model"))
    assert f"event_purchase_ndcg@10 (n={n_users['event_purchase_ndcg@10']})" in header  # >= 30 users: shown
    assert n_users["cold_recall@20"] < 30 and "cold_recall@20" not in header
    hidden = next(line for line in result.output.splitlines() if line.startswith("not shown"))
    assert f"cold_recall@20 ({n_users['cold_recall@20']} user(s), fewer than 30)" in hidden
    assert any(r["metric"] == "cold_recall@20" for r in rows)  # still in the JSON
    # on a small log the new items are fewer than the cut-off: every list of 20 holds them all
    small = tmp_path / "small"
    write_synthetic(small, SyntheticConfig(n_users=60, n_items=50, sessions_per_user=6, slate_size=6, seed=1))
    data = build_eval_data(load_dataset(DatasetPaths.from_dir(small)),
                           EvalConfig(split=SplitConfig("global", 0.1, 0.2), n_bootstrap=20))
    n_new = int(data.test.cold_items.sum())
    out = CliRunner().invoke(cli, ["evaluate", "--data", str(small), "--models", "random", "--split-mode", "global",
                                   "--no-mlflow", "--bootstrap", "20"]).output
    assert 0 < n_new <= 20
    assert f"cold_only_recall@20 (only {n_new} new item(s), so every list of 20 holds them all)" in out
