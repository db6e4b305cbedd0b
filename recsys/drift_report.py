"""The drift report's figures, thresholds and verdict: what ``recsys drift`` prints, saves and logs.

Computed by :func:`recsys.drift.drift_report`; this module only holds the result and renders it
(terminal table, JSON with NaN as null, MLflow-safe metric names).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["DriftThresholds", "DriftReport", "EXPERIMENT", "TOP_N", "REFERENCE_METRIC", "REPORT_JSON", "REPORT_TEXT",
           "NAN", "pct", "clean_json"]

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


NAN = float("nan")
NAN3 = (NAN, NAN, NAN)


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
    reference_ndcg: float = NAN
    """The model's test NDCG@10 (NaN when not found)."""
    reference_source: str = ""
    ndcg_drop: float = NAN
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
        return clean_json(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        """The figures, their thresholds and the verdict, as a table for a terminal."""
        t = self.thresholds
        k, k2 = f"@{self.k}", f"@{2 * self.k}"
        rows: list[tuple[str, str, str, bool]] = [
            ("items in NEW not in the catalogue", f"{pct(self.unknown_item_share)} of {self.new_items}", "", False),
            ("  their share of NEW's interactions", pct(self.unknown_item_interactions),
             f"> {pct(t.new_item_interactions)}", self.unknown_item_interactions > t.new_item_interactions),
            ("users in NEW the model does not know", f"{pct(self.unknown_user_share)} of {self.new_users}", "", False),
            ("  their share of NEW's interactions", pct(self.unknown_user_interactions),
             f"> {pct(t.new_user_interactions)}", self.unknown_user_interactions > t.new_user_interactions),
            ("popularity: total variation distance", _num(self.popularity_tv), f"> {t.popularity_tv:.2f}",
             self.popularity_tv > t.popularity_tv),
            ("popularity: Jensen-Shannon (bits)", _num(self.popularity_js), "", False),
            (f"popularity: top-{self.top_n} overlap", pct(self.top_overlap), "", False),
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
        rows.append((f"{REFERENCE_METRIC} drop on NEW vs test", pct(self.ndcg_drop), f"> {pct(t.ndcg_drop)}",
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


def pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _num(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def clean_json(value):
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return clean_json(value.item())
    return value


# ---- the comparison ----------------------------------------------------------------------
