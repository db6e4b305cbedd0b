"""The evaluation report's plots, styled by each model's role so that twenty series stay readable.

A run compares one registered model (``pipeline``, or the run's reference) with its own parts
and ablations and with baselines. Colours say which group a line belongs to rather than trying
to give twenty models twenty colours (a 10-colour cycle repeats, so ``pipeline`` and ``itemknn``
once shared one): the registered model thick, dark red and on top; its parts in shades of blue;
baselines thin and grey, named by a label at the line's end. Cold-exposure views
(``pipeline_cold2of20_spread``) are views of the registered model with a different page layout
and have a plot of their own (``cold_tradeoff.png``), so they are left out here.

Names never overlap: those at line ends are moved apart vertically by the least total distance
(:func:`spread`, an isotonic regression), those of scattered points take the nearest free spot
(:func:`place_near`); legends sit outside the axes so they never cover data. ``training`` draws
its own plots (the cold-exposure trade-off, the ranker's curves) with the same helpers.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Annotation, Text  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import Bbox, blended_transform_factory  # noqa: E402

from recsys.evaluation.runner import EvalResult  # noqa: E402

__all__ = ["BASELINES", "COLD_VIEW", "REGISTERED_COLOUR", "LabelSpec", "Style", "coverage_figure", "label_right",
           "metric_at_k_figure", "model_role", "model_styles", "place_near", "png", "registered_model", "report_images",
           "slices_figure", "spread"]

BASELINES = frozenset({"random", "popularity", "popularity_recent", "itemknn", "lightfm", "ease", "als", "tfidf",
                       "lightfm_text"})
"""The baselines (those of ``training.baseline_specs``, which the runtime does not import): grey, named at the end."""
COLD_VIEW = re.compile(r"^pipeline_cold(\d+)of(\d+)_(\w+)$")
"""``pipeline_cold<slots>of<page>_<place>``: the registered model with new items forced into its first page."""

REGISTERED_COLOUR = "#a50f15"
OTHER_COLOURS = ("#e6550d", "#31a354", "#756bb1", "#8c6d31", "#ce6dbd", "#17becf")
"""Models that are neither the registered model's parts nor baselines (a user's own model)."""
QUALITATIVE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf")
"""A baselines-only run has no registered model to set them against: there each baseline gets a colour."""
MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">", "p", "h")
LABEL_SIZE = 8.0
LABEL_GAP = 1.45
"""Vertical room of one label line, in font sizes (the text's box is about 1.2 font sizes high)."""
HALO = dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.75)
"""Behind a name placed among the data: grid and reference lines do not run through its letters."""
SKIPPED_SLICES = ("impressions", "cold_only")
"""Slices ranked over a different candidate set (shown, where at all, in the tables)."""


def registered_model(result: EvalResult) -> str | None:
    """The model the run is about: ``pipeline`` where present, else the reference of the paired tests.

    A baseline as the reference (``recsys evaluate --baselines`` compares with ``popularity``) is
    still a baseline: such a run has no registered model.
    """
    names = result.table["model"].unique(maintain_order=True).to_list()
    if "pipeline" in names:
        return "pipeline"
    paired = result.paired
    if not paired.is_empty() and "reference" in paired.columns:
        reference = paired["reference"][0]
        if reference in names and reference not in BASELINES:
            return reference
    return None


def model_role(name: str, registered: str | None) -> str:
    """``registered``, ``cold`` (a cold-exposure view), ``ablation`` (a part), ``baseline`` or ``other``."""
    if name == registered:
        return "registered"
    if COLD_VIEW.match(name):
        return "cold"
    if name in BASELINES:
        return "baseline"
    parts = ("pipeline_",) + ((f"{registered}_",) if registered else ())
    if (name.startswith(parts) or name.startswith("text_") or name.endswith(("_alone", "_int8"))
            or name in ("zero_shot", "parent")):
        return "ablation"
    return "other"


@dataclass(frozen=True)
class Style:
    """How one model is drawn in every plot of the report."""

    role: str
    colour: str
    linewidth: float
    marker: str
    markersize: float
    zorder: float
    direct: bool
    """Named by a label beside its line instead of in the legend."""

    @property
    def weight(self) -> str:
        return "bold" if self.role == "registered" else "normal"

    @property
    def text_colour(self) -> str:
        """The colour of the model's name: its line's, darkened where light (pale blue letters are hard to read)."""
        rgb = np.array(matplotlib.colors.to_rgb(self.colour))
        luminance = float(rgb @ (0.2126, 0.7152, 0.0722))
        return matplotlib.colors.to_hex(rgb * min(1.0, 0.4 / luminance) if luminance > 0 else rgb)


def model_styles(names: Sequence[str], registered: str | None) -> dict[str, Style]:
    """A style for each of ``names`` (cold views included, though the report's plots leave them out)."""
    roles = {n: model_role(n, registered) for n in names}
    ablations = [n for n in names if roles[n] == "ablation"]
    blues = plt.get_cmap("Blues")(np.linspace(0.95, 0.5, len(ablations))) if ablations else []
    baselines = [n for n in names if roles[n] == "baseline"]
    alone = all(r in ("baseline", "cold") for r in roles.values())  # nothing to set the baselines against
    greys = np.linspace(0.25, 0.62, len(baselines)) if baselines else []
    cold = plt.get_cmap("Oranges")
    others = [n for n in names if roles[n] == "other"]
    styles = {}
    for name in names:
        role = roles[name]
        if role == "registered":
            styles[name] = Style(role, REGISTERED_COLOUR, 3.2, "o", 6.5, 5.0, False)
        elif role == "ablation":
            i = ablations.index(name)
            styles[name] = Style(role, matplotlib.colors.to_hex(blues[i]), 1.8, MARKERS[i % len(MARKERS)], 5.0,
                                 3.0, False)
        elif role == "baseline":
            i = baselines.index(name)
            colour = QUALITATIVE[i % len(QUALITATIVE)] if alone else matplotlib.colors.to_hex((greys[i],) * 3)
            styles[name] = Style(role, colour, 1.8 if alone else 1.1, "o", 4.0 if alone else 3.0, 2.0, True)
        elif role == "cold":
            match = COLD_VIEW.match(name)
            share = int(match.group(1)) / max(int(match.group(2)), 1)
            styles[name] = Style(role, matplotlib.colors.to_hex(cold(0.4 + 0.5 * share)), 1.0, ".", 4.0, 1.0, False)
        else:
            i = others.index(name)
            styles[name] = Style(role, OTHER_COLOURS[i % len(OTHER_COLOURS)], 1.8, MARKERS[i % len(MARKERS)], 5.0,
                                 4.0, False)
    return styles


def _ordered(names: Sequence[str], styles: dict[str, Style]) -> list[str]:
    """Registered model, its parts, other models, baselines (cold views dropped): the legend's order."""
    rank = {"registered": 0, "ablation": 1, "other": 2, "baseline": 3}
    return sorted((n for n in names if styles[n].role in rank), key=lambda n: rank[styles[n].role])


def spread(targets: Sequence[float], gap: float, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Positions as near ``targets`` as possible (least squares) with neighbours at least ``gap`` apart.

    With ``p`` sorted, ``p[i+1] - p[i] >= gap`` is ``q = p - gap * i`` non-decreasing, so the
    answer is the isotonic regression of ``sorted(targets) - gap * i`` (pool adjacent violators).
    ``low``/``high`` keep the labels within a band where it is tall enough to hold them all.
    """
    t = np.asarray(targets, dtype=float)
    if t.size == 0:
        return t
    order = np.argsort(t, kind="stable")
    steps = gap * np.arange(t.size)
    blocks: list[list[float]] = []  # [sum, count] of pooled runs
    for value in t[order] - steps:
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    q = np.concatenate([np.full(int(c), s / c) for s, c in blocks])
    if low is not None and high is not None and high - low >= gap * (t.size - 1):
        q = np.clip(q, low, high - steps[-1])
    out = np.empty_like(t)
    out[order] = q + steps
    return out


@dataclass(frozen=True)
class LabelSpec:
    """A label for the right margin of an axes, pointing at ``(x, y)`` (``x`` None: the axes' right edge)."""

    text: str
    y: float
    x: float | None = None
    colour: str = "0.3"
    weight: str = "normal"


def label_right(ax: Axes, labels: Sequence[LabelSpec], *, fontsize: float = LABEL_SIZE,
                pad: float = 0.02) -> list[Annotation]:
    """Name lines in the margin right of ``ax``, moved apart vertically so that no two overlap.

    The axes' limits are frozen first (labels are placed in data coordinates), so call this once
    everything is drawn and the figure's layout is final; a thin leader joins a label moved away
    from its line. Labels stay between the axes' bottom and top where there is room for them.
    """
    labels = [s for s in labels if np.isfinite(s.y)]  # a figure that could not be computed has no line to name
    if not labels:
        return []
    fig = ax.figure
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    points = 72.0 / fig.dpi
    bottom, top = (ax.transAxes.transform([(0, 0), (0, 1)])[:, 1] * points).tolist()
    wanted = ax.transData.transform([(1.0, s.y) for s in labels])[:, 1] * points
    placed = spread(wanted, LABEL_GAP * fontsize, bottom + fontsize * 0.6, top - fontsize * 0.6)
    text_at = blended_transform_factory(ax.transAxes, ax.transData)
    out = []
    for spec, want, got in zip(labels, wanted, placed, strict=True):
        y = float(ax.transData.inverted().transform((0.0, got / points))[1])
        leader = abs(got - want) > 0.25 * fontsize
        if spec.x is None:
            xy, xycoords = (1.0, spec.y), text_at
        else:
            xy, xycoords = (spec.x, spec.y), "data"
        out.append(ax.annotate(
            spec.text, xy=xy, xycoords=xycoords, xytext=(1.0 + pad, y), textcoords=text_at, va="center",
            ha="left", fontsize=fontsize, color=spec.colour, fontweight=spec.weight, annotation_clip=False,
            arrowprops=dict(arrowstyle="-", lw=0.6, color=spec.colour, shrinkA=1, shrinkB=2,
                            alpha=0.8) if leader or spec.x is not None else None))
    return out


def _value(t: pl.DataFrame, model: str, metric: str, slice_name: str = "all") -> float | None:
    hit = t.filter((pl.col("model") == model) & (pl.col("slice") == slice_name) & (pl.col("metric") == metric))
    return float(hit["value"][0]) if hit.height else None


def _cold_note(names: Sequence[str], styles: dict[str, Style]) -> str:
    n = sum(styles[m].role == "cold" for m in names)
    return f"; {n} cold-exposure view(s) left out (cold_tradeoff.png)" if n else ""


def metric_at_k_figure(result: EvalResult) -> Figure:
    """NDCG@K and Recall@K against K (one panel each), whole catalogue ranked.

    The registered model and its parts are in the legend below the panels; each baseline is
    named at the right end of its line.
    """
    t = result.table.filter(pl.col("slice") == "all")
    ks = list(result.data.config.ks)
    names = t["model"].unique(maintain_order=True).to_list()
    styles = model_styles(names, registered_model(result))
    shown = _ordered(names, styles)
    fig, axes = plt.subplots(2, 1, figsize=(8.5, 7.6), sharex=True)
    fig.subplots_adjust(left=0.09, right=0.78, top=0.95, bottom=0.08, hspace=0.12)
    handles = {}
    for ax, family in zip(axes, ("ndcg", "recall"), strict=True):
        ends = []
        for model in shown:
            values = [_value(t, model, f"{family}@{k}") for k in ks]
            points = [(k, v) for k, v in zip(ks, values, strict=True) if v is not None]
            if not points:
                continue
            s = styles[model]
            (line,) = ax.plot(*zip(*points, strict=True), color=s.colour, linewidth=s.linewidth, marker=s.marker,
                              markersize=s.markersize, zorder=s.zorder, label=model, gid=model)
            handles.setdefault(model, line)
            if s.direct:
                ends.append(LabelSpec(model, points[-1][1], points[-1][0], s.text_colour, s.weight))
        ax.set(xscale="log", ylabel=f"{family}@K")
        ax.set_title(f"{family}@K, whole catalogue ranked", fontsize=10, loc="left")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.margins(x=0.03)
        label_right(ax, ends)
    axes[-1].set_xlabel("K (list length)")
    legend_names = [m for m in shown if not styles[m].direct and m in handles]
    if legend_names:
        legend = fig.legend([handles[m] for m in legend_names], legend_names, loc="upper center", fontsize=8,
                            bbox_to_anchor=(0.45, 0.03), ncol=min(3, len(legend_names)), frameon=False,
                            title="registered model (bold) and its parts; baselines named on the lines"
                            + _cold_note(names, styles), title_fontsize=8)
        for text in legend.get_texts():
            text.set_fontweight(styles[text.get_text()].weight)
    return fig


def slices_figure(result: EvalResult, metric: str = "ndcg@10") -> Figure:
    """``metric`` per slice of test users, one small panel per slice, one bar per model (95% CI).

    Models are rows named on the left (no legend to match colours against); the dashed line is
    the registered model's value, so what beats it in a slice is plain.
    """
    t = result.table.filter((pl.col("metric") == metric) & ~pl.col("slice").is_in(SKIPPED_SLICES))
    names = t["model"].unique(maintain_order=True).to_list()
    registered = registered_model(result)
    styles = model_styles(names, registered)
    shown = _ordered(names, styles)
    slices = t["slice"].unique(maintain_order=True).to_list()
    ncols = min(4, max(len(slices), 1))
    nrows = max(math.ceil(len(slices) / ncols), 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 1.6, (0.22 * len(shown) + 1.0) * nrows),
                             sharey=True, squeeze=False)
    ys = np.arange(len(shown))[::-1]
    for ax, slice_name in zip(axes.flat, slices, strict=False):
        rows = {r["model"]: r for r in t.filter(pl.col("slice") == slice_name).iter_rows(named=True)}
        vals = [rows[m]["value"] if m in rows else np.nan for m in shown]
        low = [rows[m]["value"] - rows[m]["ci_low"] if m in rows and rows[m]["ci_low"] is not None else 0.0
               for m in shown]
        high = [rows[m]["ci_high"] - rows[m]["value"] if m in rows and rows[m]["ci_high"] is not None else 0.0
                for m in shown]
        bars = ax.barh(ys, vals, height=0.75, xerr=[low, high], color=[styles[m].colour for m in shown],
                       error_kw=dict(lw=0.7, capsize=1.5, ecolor="0.35"))
        for bar, model in zip(bars, shown, strict=True):
            bar.set_gid(model)
        if registered in rows:
            ax.axvline(rows[registered]["value"], color=REGISTERED_COLOUR, lw=0.9, ls="--", zorder=0)
        n_users = max((r["n_users"] or 0) for r in rows.values()) if rows else 0
        ax.set_title(f"{slice_name} (n={n_users:,})", fontsize=9)
        if not np.nan_to_num(vals).any():  # an empty panel would read as a drawing error
            ax.text(0.5, 0.5, f"{metric} is 0\nfor every model", transform=ax.transAxes, ha="center", va="center",
                    fontsize=8, color="0.35")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlim(left=0)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(slices):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_yticks(ys, shown, fontsize=8)
        for label, model in zip(ax.get_yticklabels(), shown, strict=True):
            label.set_color(styles[model].text_colour)
            label.set_fontweight(styles[model].weight)
    dashed = f"; dashed: {registered}" if registered in shown else ""
    fig.suptitle(f"{metric} by slice of test users (95% bootstrap CI{dashed})" + _cold_note(names, styles),
                 fontsize=10)
    fig.tight_layout()
    return fig


def coverage_figure(result: EvalResult) -> Figure:
    """Catalogue coverage@10 against the mean popularity of the top 10 (marker area ~ NDCG@10).

    Each point is named beside it (:func:`place_near`), the registered model first, so that
    points which nearly coincide (a model and its int8 view) keep names that do not overlap.
    """
    t = result.table.filter(pl.col("slice") == "all")
    names = t["model"].unique(maintain_order=True).to_list()
    styles = model_styles(names, registered_model(result))
    shown = [m for m in _ordered(names, styles)
             if _value(t, m, "popularity@10") is not None and _value(t, m, "coverage@10") is not None]
    fig, ax = plt.subplots(figsize=(8.0, 5.5))
    fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.11)
    labels, radii = [], []
    for model in shown:
        s = styles[model]
        x, y = _value(t, model, "popularity@10"), _value(t, model, "coverage@10")
        area = 30 + 1500 * (_value(t, model, "ndcg@10") or 0.0)
        ax.scatter([x], [y], s=area, color=s.colour, alpha=0.75, zorder=s.zorder, gid=model,
                   edgecolors="black" if s.role == "registered" else "white", linewidths=0.8)
        labels.append(LabelSpec(model, y, x, s.text_colour, s.weight))
        radii.append(math.sqrt(area) / 2)
    ax.set(xscale="symlog", xlabel="mean train popularity of the top-10 items", ylabel="catalogue coverage@10")
    ax.set_title("coverage vs popularity (marker area ~ NDCG@10)" + _cold_note(names, styles).replace("; ", "\n"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.12)
    _readable_ticks(ax)
    place_near(ax, labels, radii)
    return fig


def _readable_ticks(ax: Axes) -> None:
    """Plain-number ticks (1, 2, 5, 10, 20, ...) on a symlog x axis, at least three of them."""
    low, high = ax.get_xlim()
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [0.0] + [m * 10.0**e for e in range(-2, 8) for m in mantissas]
        ticks = [v for v in ticks if low <= v <= high]
        if len(ticks) >= 3:
            break
    else:  # a narrow range (every model about equally popular): evenly spaced round numbers
        ticks = [v for v in MaxNLocator(4).tick_values(low, high) if low <= v <= high]
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.minorticks_off()
    ax.set_xlim(low, high)


_AROUND = ((1, 0, "left", "center"), (-1, 0, "right", "center"), (0, 1, "center", "bottom"),
           (0, -1, "center", "top"), (1, 1, "left", "bottom"), (1, -1, "left", "top"), (-1, 1, "right", "bottom"),
           (-1, -1, "right", "top"))
"""Directions tried around a point, in order of preference, with the text's alignment there."""


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _letters(text: Text, renderer) -> Bbox:
    """The box of a text's letters alone (an annotation's own extent also spans its leader line)."""
    if isinstance(text, Annotation):
        text.update_positions(renderer)  # an annotation's place follows its offset only once updated
    return Text.get_window_extent(text, renderer)


def _line_points(lines: Sequence[Line2D], step: float) -> np.ndarray:
    """Display points every ``step`` pixels along ``lines``: what a name must not cover."""
    out = [np.empty((0, 2))]
    for line in lines:
        xy = line.get_transform().transform(line.get_xydata())
        for a, b in zip(xy[:-1], xy[1:], strict=True):
            n = max(int(np.hypot(*(b - a)) / step), 1)
            out.append(a + (b - a) * np.linspace(0, 1, n + 1)[:, None])
    return np.concatenate(out)


def place_near(ax: Axes, labels: Sequence[LabelSpec], radii: Sequence[float], *, fontsize: float = LABEL_SIZE,
               rings: int = 16, lines: Sequence[Line2D] = ()) -> list[Annotation]:
    """Name each point beside it where the name covers no other name, no other point and stays in the axes.

    Greedy, in the order given: the spots around a point (right, left, above, below, the corners)
    at growing distances, the first free one taken; a name that had to move away gets a thin
    leader line. Texts already in ``ax`` are avoided too; where nothing is free, the least covered
    spot. ``radii``: the markers' radii in points; ``lines``: curves the names should not sit on
    either. Call once the layout and the axes' limits are final (they are frozen here).
    """
    kept = [i for i, s in enumerate(labels) if np.isfinite(s.y) and s.x is not None and np.isfinite(s.x)]
    labels, radii = [labels[i] for i in kept], [radii[i] for i in kept]
    if not labels:
        return []
    fig = ax.figure
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    centres = ax.transData.transform([(s.x, s.y) for s in labels])
    marks = [Bbox.from_bounds(cx - r * px, cy - r * px, 2 * r * px, 2 * r * px)
             for (cx, cy), r in zip(centres, radii, strict=True)]
    step = 2.0 * px
    along = _line_points(lines, step)
    taken = [_letters(t, renderer) for t in ax.texts]  # names placed before, by label_right too
    out = []
    for i, (spec, radius) in enumerate(zip(labels, radii, strict=True)):
        probe = ax.annotate(spec.text, (spec.x, spec.y), xytext=(0, 0), textcoords="offset points",
                            fontsize=fontsize, fontweight=spec.weight, annotation_clip=False)
        best: tuple[float, int, tuple[float, float], str, str] | None = None
        for ring in range(rings):
            distance = radius + 2.0 + ring * fontsize
            for dx, dy, ha, va in _AROUND:
                probe.xyann = (dx * distance, dy * distance)
                probe.set_ha(ha)
                probe.set_va(va)
                box = _letters(probe, renderer)
                outside = box.width * box.height - _overlap(box, frame)
                on_line = ((along[:, 0] >= box.x0) & (along[:, 0] <= box.x1) & (along[:, 1] >= box.y0)
                           & (along[:, 1] <= box.y1)).sum() * step * step
                covered = (outside + on_line + sum(_overlap(box, b) for b in taken)
                           + sum(_overlap(box, m) for j, m in enumerate(marks) if j != i))
                if best is None or covered < best[0]:
                    best = (covered, ring, probe.xyann, ha, va)
                if covered == 0:
                    break
            if best[0] == 0:
                break
        probe.remove()
        _, ring, offset, ha, va = best
        leader = dict(arrowstyle="-", lw=0.5, color=spec.colour, alpha=0.7, shrinkA=1, shrinkB=radius)
        ann = ax.annotate(spec.text, (spec.x, spec.y), xytext=offset, textcoords="offset points", ha=ha, va=va,
                          fontsize=fontsize, color=spec.colour, fontweight=spec.weight, annotation_clip=False,
                          arrowprops=leader if ring > 0 else None, zorder=6, bbox=HALO)
        taken.append(_letters(ann, renderer))
        out.append(ann)
    return out


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (closed afterwards: a report renders many and pyplot keeps them open)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def report_images(result: EvalResult) -> dict[str, bytes]:
    """The report's plots by file stem: ``metric_at_k``, ``slices_ndcg10``, ``coverage_vs_popularity``."""
    return {"metric_at_k": png(metric_at_k_figure(result)), "slices_ndcg10": png(slices_figure(result)),
            "coverage_vs_popularity": png(coverage_figure(result))}
