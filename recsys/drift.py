"""Drift report: has the data moved far enough from the model's training window to retrain?

``recsys drift --model URI --data NEW`` compares what a registered model was trained on (the
positive events, catalogue and text vectors its :class:`~recsys.bundle.ModelBundle` carries)
with a newer window of contract data, and measures four things:

* **newcomers**: the share of NEW's items and users the model does not know, and the share of
  NEW's positive events they account for (collaborative models know nothing about them);
* **popularity shift**: total variation and Jensen-Shannon distance between the item
  distributions of the two windows (distinct users per item, over the union of items), and the
  overlap of their top-100 items;
* **topic shift**: cosine distance between the mean text vector of the items interacted with in
  each window (new items encoded by the model's own text tower), overall and per returning user,
  and the same shift relative to the training window's spread (see ``centroid_shift``);
* **quality on NEW**: NDCG@k and Recall@2k of the model's lists for the users it knows (their
  histories are the model's own, i.e. before NEW; targets are NEW's positives they had not
  seen), with bootstrap CIs, against the model's test NDCG@10 and against NEW's own most
  popular items (an optimistic reference: it knows NEW's popularity).

A verdict, ``update_due``, lists every figure past its :class:`DriftThresholds` bound. Only
positive events (``bundle.positives``, click and purchase by default) count anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys import contract as C
from recsys.bundle import ModelBundle
from recsys.errors import RecsysError
from recsys.io import Dataset, DatasetPaths, load_dataset
from recsys.text_scorer import TextScorer

__all__ = ["DriftThresholds", "DriftReport", "drift_report", "reference_ndcg", "log_drift", "run_drift",
           "EXPERIMENT", "TOP_N", "REFERENCE_METRIC"]

logger = logging.getLogger(__name__)

EXPERIMENT = "recsys-drift"
TOP_N = 100
"""Size of the popular-item lists whose overlap is reported."""
REFERENCE_METRIC = "ndcg@10"
"""The test metric of the registry (version tag ``test_ndcg_at_10``) that quality on NEW is compared with."""
REPORT_JSON = "drift_report.json"
REPORT_TEXT = "drift_report.txt"


@dataclass(frozen=True)
class DriftThresholds:
    """When a figure calls for a new model. Each bound is exceeded strictly (``>``).

    The defaults are deliberately conservative: each one alone is a reason to retrain.
    """

    new_item_interactions: float = 0.2
    """Share of NEW's positive events on items the model does not know. Past a fifth of the traffic the
    collaborative models and the behaviour features are blind to much of what users do; only the text tower
    places those items."""
    new_user_interactions: float = 0.3
    """Share of NEW's positive events by users the model does not know (they get the popularity fallback)."""
    popularity_tv: float = 0.3
    """Total variation between the item distributions: 0.3 = 30% of the interaction mass has moved to other items
    (the popularity and recency features were fit on another mix)."""
    centroid_shift: float = 0.05
    """How far the mean text vector moved, relative to the training window's spread (``DriftReport.centroid_shift``).
    Scale-free, unlike the raw cosine distance, which depends on the encoder (a fine-tuned MiniLM spreads items
    widely; a small or untuned encoder puts every item within cosine 0.98 of every other, where a complete change
    of topics moves the mean by a cosine distance of 0.01). 0.05 = the mean moved by sqrt(0.05) = 22% of the typical
    item's distance from it: roughly a fifth of the traffic gone to other topics; a later window of unchanged
    tastes stays near 0.01."""
    ndcg_drop: float = 0.2
    """Relative drop of NDCG@10 on NEW below the model's own test NDCG@10 (0.2 = 20% lower)."""
    min_eval_users: int = 20
    """Fewest known users with targets in NEW for the quality rule to apply (fewer: too noisy to judge)."""

    def __post_init__(self) -> None:
        for name in ("new_item_interactions", "new_user_interactions", "popularity_tv", "ndcg_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DriftThresholds.{name} must be in [0, 1]; got {getattr(self, name)}")
        if self.centroid_shift < 0.0:
            raise ValueError(f"DriftThresholds.centroid_shift must be >= 0; got {self.centroid_shift}")
        if self.min_eval_users < 1:
            raise ValueError(f"DriftThresholds.min_eval_users must be >= 1; got {self.min_eval_users}")


_NAN = float("nan")
_NAN3 = (_NAN, _NAN, _NAN)


@dataclass(frozen=True)
class DriftReport:
    """The figures of one comparison, the verdict and its reasons (see the module docstring)."""

    model: str
    data: str
    k: int
    train_window: tuple[str, str]
    """First and last timestamp of the model's positive events."""
    new_window: tuple[str, str]
    train_pairs: int
    """Distinct (user, item) positive pairs the model was trained on."""
    new_events: int
    """Positive events in NEW."""
    new_users: int
    """Users with a positive event in NEW."""
    new_items: int
    """Items with a positive event in NEW."""
    unknown_item_share: float
    """Share of NEW's interacted items that are not in the model's catalogue."""
    unknown_item_interactions: float
    """Share of NEW's positive events on those items."""
    unknown_user_share: float
    """Share of NEW's users that the model does not know."""
    unknown_user_interactions: float
    """Share of NEW's positive events by those users."""
    popularity_tv: float
    """Total variation distance between the item distributions (distinct users per item), in [0, 1]."""
    popularity_js: float
    """Jensen-Shannon divergence of the same distributions, in bits ([0, 1])."""
    top_overlap: float
    """Share of the smaller top-``top_n`` list also in the other window's top list."""
    top_n: int
    centroid_distance: float
    """1 - cosine of the mean text vectors of the items interacted with (NaN without a text tower)."""
    centroid_shift: float
    """``|c_new - c_train|^2 / (1 - |c_train|^2)`` with ``c`` the mean unit text vector of a window's (user, item)
    pairs: the squared move of the mean over the training window's spread (the mean squared distance of its items
    from ``c_train``). 0 = same mean; about 1 = moved as far as a typical item lies from it."""
    user_centroid_distance: float
    """Mean over returning users of the cosine distance between their own two windows' mean vectors."""
    user_centroid_shift: float
    """Mean over returning users of their squared move over the training window's spread (noisy for short
    histories: reported, not judged)."""
    returning_users: int
    """Users with positives in both windows."""
    eval_users: int
    """Known users with at least one unseen positive in NEW: the users the quality figures average over."""
    quality: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """Model on NEW: metric -> (mean, CI low, CI high)."""
    popularity_quality: dict[str, float] = field(default_factory=dict)
    """NEW's own most popular items (unseen ones) for the same users: metric -> mean."""
    reference_ndcg: float = _NAN
    """The model's test NDCG@10 (NaN when not found)."""
    reference_source: str = ""
    ndcg_drop: float = _NAN
    """1 - NDCG@10 on NEW / reference (positive = worse on NEW)."""
    update_due: bool = False
    reasons: tuple[str, ...] = ()
    """One line per threshold exceeded."""
    notes: tuple[str, ...] = ()
    """Checks that could not be made, and why."""
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    def metrics(self) -> dict[str, float]:
        """Every finite figure under an MLflow-safe key (``ndcg@10`` -> ``ndcg_at_10``)."""
        out = {name: float(getattr(self, name)) for name in (
            "train_pairs", "new_events", "new_users", "new_items", "unknown_item_share", "unknown_item_interactions",
            "unknown_user_share", "unknown_user_interactions", "popularity_tv", "popularity_js", "top_overlap",
            "centroid_distance", "centroid_shift", "user_centroid_distance", "user_centroid_shift", "returning_users",
            "eval_users", "reference_ndcg",
            "ndcg_drop")}
        for metric, (mean, low, high) in self.quality.items():
            key = _key(metric)
            out |= {key: mean, f"{key}.ci_low": low, f"{key}.ci_high": high}
        out |= {f"popularity_on_new/{_key(m)}": v for m, v in self.popularity_quality.items()}
        out["update_due"] = float(self.update_due)
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def to_dict(self) -> dict:
        """Plain JSON (NaN as null)."""
        return _clean(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        """The figures, their thresholds and the verdict, as a table for a terminal."""
        t = self.thresholds
        k, k2 = f"@{self.k}", f"@{2 * self.k}"
        rows: list[tuple[str, str, str, bool]] = [
            ("items in NEW not in the catalogue", f"{_pct(self.unknown_item_share)} of {self.new_items}", "", False),
            ("  their share of NEW's interactions", _pct(self.unknown_item_interactions),
             f"> {_pct(t.new_item_interactions)}", self.unknown_item_interactions > t.new_item_interactions),
            ("users in NEW the model does not know", f"{_pct(self.unknown_user_share)} of {self.new_users}", "", False),
            ("  their share of NEW's interactions", _pct(self.unknown_user_interactions),
             f"> {_pct(t.new_user_interactions)}", self.unknown_user_interactions > t.new_user_interactions),
            ("popularity: total variation distance", _num(self.popularity_tv), f"> {t.popularity_tv:.2f}",
             self.popularity_tv > t.popularity_tv),
            ("popularity: Jensen-Shannon (bits)", _num(self.popularity_js), "", False),
            (f"popularity: top-{self.top_n} overlap", _pct(self.top_overlap), "", False),
            ("text centroid: cosine distance", _num(self.centroid_distance), "", False),
            ("text centroid: shift / spread", _num(self.centroid_shift), f"> {t.centroid_shift:.2f}",
             self.centroid_shift > t.centroid_shift),
            (f"  per returning user: cosine distance ({self.returning_users})", _num(self.user_centroid_distance),
             "", False),
            ("  per returning user: shift / spread", _num(self.user_centroid_shift), "", False),
        ]
        for metric, (mean, low, high) in self.quality.items():
            rows.append((f"model on NEW: {metric} ({self.eval_users} users)", f"{_num(mean)} [{_num(low)}, "
                         f"{_num(high)}]", "", False))
        if self.popularity_quality:
            pop = ", ".join(f"{m} {_num(v)}" for m, v in self.popularity_quality.items())
            rows.append(("NEW's own top items (reference)", pop, "", False))
        rows.append((f"model's test {REFERENCE_METRIC}", _num(self.reference_ndcg), "", False))
        rows.append((f"{REFERENCE_METRIC} drop on NEW vs test", _pct(self.ndcg_drop), f"> {_pct(t.ndcg_drop)}",
                     self.ndcg_drop > t.ndcg_drop and self.eval_users >= t.min_eval_users))
        width = max(len(r[0]) for r in rows) + 2
        vwidth = max(len(r[1]) for r in rows) + 2
        lines = [f"drift report: {self.model or 'model'} vs {self.data}",
                 f"  training window {self.train_window[0]} .. {self.train_window[1]} "
                 f"({self.train_pairs} user-item pairs); NEW {self.new_window[0]} .. {self.new_window[1]} "
                 f"({self.new_events} positive events; quality: NDCG{k}, Recall{k2})",
                 "",
                 f"{'figure':<{width}}{'value':<{vwidth}}{'threshold':<12}drift",
                 f"{'-' * (width - 2):<{width}}{'-' * (vwidth - 2):<{vwidth}}{'-' * 10:<12}-----"]
        lines += [f"{name:<{width}}{value:<{vwidth}}{bound:<12}{'YES' if hit else ''}".rstrip()
                  for name, value, bound, hit in rows]
        lines.append("")
        if self.update_due:
            lines.append("verdict: UPDATE DUE (retrain and register a new version)")
            lines += [f"  - {r}" for r in self.reasons]
        else:
            lines.append("verdict: no update due (every figure within its threshold)")
        if self.reference_source:
            lines.append(f"  test {REFERENCE_METRIC} from: {self.reference_source}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _key(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", metric.replace("@", "_at_"))


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _num(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def _clean(value):
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


# ---- the comparison ----------------------------------------------------------------------
def drift_report(bundle: ModelBundle, new_data: str | Path | Dataset, *, k: int = 10,
                 thresholds: DriftThresholds = DriftThresholds(), reference: tuple[float, str] = (_NAN, ""),
                 n_bootstrap: int = 1000, seed: int = 0, max_users: int = 20_000, model_uri: str = "",
                 label: str | None = None) -> DriftReport:
    """Compare the model's training window with the newer contract data in ``new_data``.

    Args:
        bundle: the model (``recsys.pyfunc_model.load_registered``).
        new_data: a dataset folder (``items`` and ``interactions`` in the data contract; the item table lists
            every item the interactions name, old or new) or an already loaded :class:`~recsys.io.Dataset`.
        k: NDCG@k and Recall@2k are reported; NDCG@10 is always computed for the comparison with the test metric.
        thresholds: when the verdict says an update is due.
        reference: the model's test NDCG@10 and where it came from (:func:`reference_ndcg`); NaN = unknown.
        n_bootstrap: bootstrap resamples of the quality CIs.
        seed: seed of the bootstrap and of the user sample.
        max_users: most users whose lists are scored for the quality figures (a seeded sample beyond that).
        model_uri: shown in the report.
        label: how the report names NEW (default: the folder).

    Raises:
        DataContractError: the folder is missing or breaks the data contract.
        RecsysError: NEW has no positive event, or ``k`` is out of range.
    """
    from recsys.pyfunc_model import check_k

    k = check_k(k)
    if max_users < 1:
        raise ValueError(f"max_users must be >= 1; got {max_users}")
    label = label or (str(new_data) if not isinstance(new_data, Dataset) else "(dataset)")
    dataset = new_data if isinstance(new_data, Dataset) else load_dataset(DatasetPaths.from_dir(new_data))
    positives = list(bundle.positives)
    new = dataset.interactions.filter(pl.col(C.EVENT).is_in(positives)).select(C.USER_ID, C.ITEM_ID, C.TS)
    if new.height == 0:
        raise RecsysError(f"{label}: no positive events ({', '.join(positives)}); nothing to compare")
    known = pl.Series(C.ITEM_ID, bundle.item_ids.tolist(), dtype=pl.String)
    arrived = dataset.items.filter(~pl.col(C.ITEM_ID).is_in(known.implode()))
    ext = bundle.with_new_items(arrived)  # new items encoded by the model's text tower: vectors and candidates
    notes: list[str] = []

    lookup = pl.DataFrame({C.ITEM_ID: ext.item_ids.tolist(), C.ITEM_IDX: np.arange(ext.n_items)},
                          schema={C.ITEM_ID: pl.String, C.ITEM_IDX: pl.Int64})
    new = new.with_columns(pl.Series(C.USER_IDX, bundle.user_index(new[C.USER_ID].to_numpy()), dtype=pl.Int64)
                           ).join(lookup, on=C.ITEM_ID, how="left", maintain_order="left")
    old_item = pl.col(C.ITEM_IDX) < bundle.n_items
    old_user = pl.col(C.USER_IDX) >= 0
    shares = new.select(
        pl.col(C.ITEM_ID).filter(~old_item).n_unique().alias("unknown_items"),
        pl.col(C.ITEM_ID).n_unique().alias("items"),
        (~old_item).mean().alias("unknown_item_events"),
        pl.col(C.USER_ID).filter(~old_user).n_unique().alias("unknown_users"),
        pl.col(C.USER_ID).n_unique().alias("users"),
        (~old_user).mean().alias("unknown_user_events")).row(0, named=True)

    state = bundle.state
    train_pairs = state.events.select(C.USER_IDX, C.ITEM_IDX).unique()
    new_pairs = new.select(C.USER_ID, C.USER_IDX, C.ITEM_IDX).unique()
    p = np.bincount(train_pairs[C.ITEM_IDX].to_numpy(), minlength=ext.n_items).astype(np.float64)
    q = np.bincount(new_pairs[C.ITEM_IDX].to_numpy(), minlength=ext.n_items).astype(np.float64)
    tv, js = _distances(p, q)
    overlap, top_n = _top_overlap(p, q, TOP_N)

    vectors = _text_vectors(ext)
    centroid = user_centroid = _NAN
    returning = 0
    train_matrix = _binary(train_pairs[C.USER_IDX].to_numpy(), train_pairs[C.ITEM_IDX].to_numpy(),
                           (bundle.n_users, ext.n_items))
    mine = new_pairs.filter(old_user)
    new_matrix = _binary(mine[C.USER_IDX].to_numpy(), mine[C.ITEM_IDX].to_numpy(), (bundle.n_users, ext.n_items))
    shift = user_shift = _NAN
    if vectors is None:
        notes.append("the model has no text tower: the text centroid shift is not measured")
    else:
        before, after = p @ vectors / p.sum(), q @ vectors / q.sum()
        spread = 1.0 - float(before @ before)  # mean |v - c|^2 of unit vectors v around their mean c
        centroid = _cosine_distance(before, after)
        shift = float(np.sum((after - before) ** 2)) / spread if spread > 1e-12 else _NAN
        both = np.flatnonzero((train_matrix.getnnz(axis=1) > 0) & (new_matrix.getnnz(axis=1) > 0))
        returning = len(both)
        if returning:
            a = np.asarray(train_matrix[both] @ vectors) / train_matrix[both].getnnz(axis=1)[:, None]
            b = np.asarray(new_matrix[both] @ vectors) / new_matrix[both].getnnz(axis=1)[:, None]
            user_centroid = float(np.mean(_cosine_distance(a, b)))
            user_shift = float(np.mean(np.sum((b - a) ** 2, axis=1))) / spread if spread > 1e-12 else _NAN

    quality, popular, eval_users, eligible = _quality(ext, new_matrix, q, k, n_bootstrap, seed, max_users)
    if eligible > eval_users:
        notes.append(f"quality on NEW measured on a random sample of {eval_users} of the {eligible} known users "
                     "with unseen positives")
    ref_value, ref_source = reference
    drop = _NAN
    if REFERENCE_METRIC in quality and math.isfinite(ref_value) and ref_value > 0:
        drop = 1.0 - quality[REFERENCE_METRIC][0] / ref_value
    if not math.isfinite(ref_value):
        notes.append(f"the model's test {REFERENCE_METRIC} was not found: the quality drop is not checked")
    elif 0 < eval_users < thresholds.min_eval_users:
        notes.append(f"only {eval_users} known users have unseen positives in NEW (fewer than "
                     f"{thresholds.min_eval_users}): the quality drop is not checked")
    if eval_users == 0:
        notes.append("no known user has positives in NEW that they had not seen: quality on NEW is not measured")

    times = state.events[C.TS]
    report = DriftReport(
        model=model_uri, data=label, k=k, train_window=(str(times.min()), str(times.max())),
        new_window=(str(new[C.TS].min()), str(new[C.TS].max())), train_pairs=train_pairs.height,
        new_events=new.height, new_users=shares["users"], new_items=shares["items"],
        unknown_item_share=shares["unknown_items"] / shares["items"],
        unknown_item_interactions=float(shares["unknown_item_events"]),
        unknown_user_share=shares["unknown_users"] / shares["users"],
        unknown_user_interactions=float(shares["unknown_user_events"]),
        popularity_tv=tv, popularity_js=js, top_overlap=overlap, top_n=top_n, centroid_distance=centroid,
        centroid_shift=shift, user_centroid_distance=user_centroid, user_centroid_shift=user_shift,
        returning_users=returning, eval_users=eval_users, quality=quality,
        popularity_quality=popular, reference_ndcg=ref_value, reference_source=ref_source, ndcg_drop=drop,
        notes=tuple(notes), thresholds=thresholds)
    reasons = _reasons(report)
    return replace(report, update_due=bool(reasons), reasons=tuple(reasons))


def _reasons(r: DriftReport) -> list[str]:
    t = r.thresholds
    out = []
    if r.unknown_item_interactions > t.new_item_interactions:
        out.append(f"new items: {_pct(r.unknown_item_interactions)} of NEW's interactions are on items the model "
                   f"does not know (threshold {_pct(t.new_item_interactions)})")
    if r.unknown_user_interactions > t.new_user_interactions:
        out.append(f"new users: {_pct(r.unknown_user_interactions)} of NEW's interactions are by users the model "
                   f"does not know (threshold {_pct(t.new_user_interactions)})")
    if r.popularity_tv > t.popularity_tv:
        out.append(f"popularity shift: total variation {r.popularity_tv:.3f} between the item distributions "
                   f"(threshold {t.popularity_tv:.2f}; top-{r.top_n} overlap {_pct(r.top_overlap)})")
    if r.centroid_shift > t.centroid_shift:
        out.append(f"text centroid shift: the mean item vector moved {r.centroid_shift:.3f} of the training spread "
                   f"(threshold {t.centroid_shift:.2f}; cosine distance {r.centroid_distance:.4f}): "
                   "users moved to other topics")
    if r.ndcg_drop > t.ndcg_drop and r.eval_users >= t.min_eval_users:
        out.append(f"quality drop: {REFERENCE_METRIC} {r.quality[REFERENCE_METRIC][0]:.4f} on NEW vs "
                   f"{r.reference_ndcg:.4f} in test, {_pct(r.ndcg_drop)} lower (threshold {_pct(t.ndcg_drop)})")
    return out


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _distances(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """Total variation and Jensen-Shannon divergence (bits) of two count vectors over the same items."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(0.5 * np.abs(p - q).sum()), float(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def _top_overlap(p: np.ndarray, q: np.ndarray, n: int) -> tuple[float, int]:
    """Share of the shorter top-``n`` list (items with counts, ties by index) found in the other; and its length."""
    def top(counts: np.ndarray) -> np.ndarray:
        return np.argsort(-counts, kind="stable")[:min(n, int(np.count_nonzero(counts)))]

    a, b = top(p), top(q)
    size = min(len(a), len(b))
    return (len(np.intersect1d(a, b)) / size if size else _NAN), size


def _text_vectors(bundle: ModelBundle) -> np.ndarray | None:
    """float [n_items, d] L2-normalised text vectors of the (extended) catalogue, or None without a text tower."""
    state = bundle.state
    if state.item_vectors is not None and state.item_vectors.shape[0] == bundle.n_items:
        return np.asarray(state.item_vectors, np.float64)
    text = next((m for m in state.models.values() if isinstance(m, TextScorer)), None)
    if text is None or text.item_vectors_.shape[0] != bundle.n_items:
        return None
    vectors = text.item_vectors_.numpy().astype(np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _cosine_distance(a: np.ndarray, b: np.ndarray):
    """1 - cosine of ``a`` and ``b`` (vectors, or rows of two matrices)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    norm = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    out = np.maximum(1.0 - np.sum(a * b, axis=1) / norm, 0.0)
    return float(out[0]) if out.size == 1 else out


def _quality(bundle: ModelBundle, new_matrix: sp.csr_matrix, new_counts: np.ndarray, k: int, n_bootstrap: int,
             seed: int, max_users: int) -> tuple[dict[str, tuple[float, float, float]], dict[str, float], int, int]:
    """The model's NDCG@k/Recall@2k (and NDCG@10) on NEW for known users with unseen positives; NEW-popular's.

    Returns the model's figures with CIs, the popularity reference's, the users evaluated and the users eligible
    (more than ``max_users``: a seeded random sample of them is evaluated).
    """
    from recsys.evaluation.bootstrap import bootstrap_many
    from recsys.evaluation.metrics import ranking_metrics, top_k

    seen = (bundle.history != 0).astype(np.float32)
    truth = (new_matrix - new_matrix.multiply(seen)).tocsr()
    truth.eliminate_zeros()
    users = np.flatnonzero(truth.getnnz(axis=1) > 0)
    eligible = len(users)
    if eligible == 0:
        return {}, {}, 0, 0
    if eligible > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    length = max(2 * k, 10)
    recs = bundle.recommend(bundle.user_ids[users], length, keep_row=True)
    lookup = pl.DataFrame({C.ITEM_ID: bundle.item_ids.tolist(), "i": np.arange(bundle.n_items)},
                          schema={C.ITEM_ID: pl.String, "i": pl.Int64})
    recs = recs.join(lookup, on=C.ITEM_ID, how="left")
    topk = np.full((len(users), length), -1, np.int64)
    topk[recs["_row"].to_numpy(), recs["rank"].to_numpy() - 1] = recs["i"].to_numpy()
    ks = sorted({k, 2 * k, 10})
    names = {f"ndcg@{k}", f"recall@{2 * k}", REFERENCE_METRIC}
    target = truth[users]
    model = {m: v for m, v in ranking_metrics(topk, target, ks).items() if m in names}
    quality = bootstrap_many(model, n_resamples=n_bootstrap, seed=seed)
    popular = np.vstack([top_k(np.broadcast_to(new_counts, (len(block), bundle.n_items)), length,
                               exclude=seen[block]) for block in np.array_split(users, -(-len(users) // 1024))])
    reference = {m: float(np.nanmean(v)) for m, v in ranking_metrics(popular, target, ks).items() if m in names}
    order = sorted(names, key=lambda m: (m != f"ndcg@{k}", m != f"recall@{2 * k}", m))
    return {m: quality[m] for m in order}, {m: reference[m] for m in order}, len(users), eligible


# ---- the model's own test metric, MLflow, the command -----------------------------------------
def reference_ndcg(model_uri: str, bundle: ModelBundle, tracking_uri: str | None) -> tuple[float, str]:
    """The model's test NDCG@10 and its source: the registry version's tag, the bundle's meta, or its run.

    Returns ``(nan, "")`` when none has it (the quality rule is then skipped, with a note).
    """
    from recsys.registry import METRIC_TAG, parse_model_uri

    found = parse_model_uri(model_uri)
    if found is not None:
        try:
            from recsys.registry import resolve_version

            version = resolve_version(*found, tracking_uri)
            value = _float(version.tags.get(METRIC_TAG))
            if value is not None:
                return value, f"version {version.version} tag {METRIC_TAG}"
        except Exception as exc:  # noqa: BLE001 - any store error: try the other sources
            logger.debug("no version tag for %s: %s", model_uri, exc)
    value = _float(bundle.meta.get(METRIC_TAG))
    if value is not None:
        return value, f"bundle meta {METRIC_TAG}"
    run_id = bundle.meta.get("run_id")
    if run_id and tracking_uri:
        try:
            from mlflow import MlflowClient

            from recsys.evaluation.tracking import mlflow_metric_key

            key = mlflow_metric_key(bundle.pipeline.name, "all", REFERENCE_METRIC)
            value = _float(MlflowClient(tracking_uri).get_run(run_id).data.metrics.get(key))
            if value is not None:
                return value, f"run {run_id} metric {key}"
        except Exception as exc:  # noqa: BLE001
            logger.debug("no run metric for %s: %s", run_id, exc)
    return _NAN, ""


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def log_drift(report: DriftReport, tracking_uri: str, *, run_name: str | None = None) -> str:
    """Log the report as a run of the ``recsys-drift`` experiment; returns the run id.

    Params: model URI, data path, k and the thresholds. Metrics: :meth:`DriftReport.metrics`.
    Tags: ``update_due``. Artifacts: ``drift_report.json`` and ``drift_report.txt``.
    """
    import mlflow

    from recsys.evaluation.tracking import experiment_id

    mlflow.set_tracking_uri(tracking_uri)
    params = {"model_uri": report.model, "data": report.data, "k": report.k}
    params |= {f"threshold.{k}": v for k, v in asdict(report.thresholds).items()}
    with mlflow.start_run(experiment_id=experiment_id(mlflow, EXPERIMENT, tracking_uri),
                          run_name=run_name or f"drift-{Path(report.data).name}") as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(report.metrics())
        mlflow.set_tags({"update_due": str(report.update_due).lower(),
                         "reasons": "; ".join(r.split(":")[0] for r in report.reasons) or "none"})
        mlflow.log_dict(report.to_dict(), REPORT_JSON)
        mlflow.log_text(report.render(), REPORT_TEXT)
        logger.info("logged drift run %s to %s", run.info.run_id, tracking_uri)
        return run.info.run_id


def run_drift(model_uri: str, new_data: str | Path, *, tracking_uri: str | None, k: int = 10, log: bool = True,
              thresholds: DriftThresholds = DriftThresholds()) -> tuple[DriftReport, str | None]:
    """``recsys drift``: read NEW (fails fast), load the model, compare, log to MLflow unless ``log`` is False."""
    from recsys.pyfunc_model import check_k, load_registered

    check_k(k)
    dataset = load_dataset(DatasetPaths.from_dir(new_data))
    bundle = load_registered(model_uri, tracking_uri)
    report = drift_report(bundle, dataset, k=k, thresholds=thresholds, model_uri=model_uri, label=str(new_data),
                          reference=reference_ndcg(model_uri, bundle, tracking_uri))
    run_id = log_drift(report, tracking_uri) if log and tracking_uri else None
    return report, run_id
