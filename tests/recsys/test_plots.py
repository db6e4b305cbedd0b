"""The report's plots stay readable with twenty models: roles set colours, names never overlap, legends sit outside.

The many-model run is made here: one baseline is evaluated on synthetic data and its table copied
under the names a ``recsys train`` run reports (the pipeline, its ablations, baselines and
cold-exposure views), with values so close that names at the line ends would collide unmoved.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from matplotlib.colors import to_rgb
from matplotlib.text import Text
from PIL import Image

from features.split import SplitConfig
from recsys.evaluation.eval_data import EvalConfig, build_eval_data
from recsys.evaluation.plots import (
    REGISTERED_COLOUR,
    coverage_figure,
    metric_at_k_figure,
    model_role,
    registered_model,
    slices_figure,
    spread,
)
from recsys.evaluation.report import write_report
from recsys.evaluation.runner import EvalResult
from recsys.io import Dataset
from recsys.synthetic import SyntheticConfig, generate_synthetic
from training.baseline_specs import baseline_specs
from training.fit_models import evaluate_specs
from training.stage_logging import plot_cold_tradeoff

BASELINES = ["random", "popularity", "popularity_recent", "itemknn", "lightfm", "ease", "als"]
PARTS = ["pipeline_no_text", "pipeline_no_cf", "pipeline_no_ease", "text_alone", "lightfm_alone", "text_freeze5",
         "zero_shot"]
COLD = [f"pipeline_cold{slots}of20_{place}" for place in ("spread", "end") for slots in (2, 4, 6, 10)]
NAMES = [*BASELINES, "pipeline", *PARTS, *COLD]


@pytest.fixture(scope="module")
def evaluated() -> EvalResult:
    """Two baselines really evaluated (``popularity`` the paired reference): a baselines-only run."""
    items, inter = generate_synthetic(SyntheticConfig(n_users=80, n_items=60, sessions_per_user=5, seed=2))
    data = build_eval_data(Dataset(items, inter), EvalConfig(split=SplitConfig("per-user", 0.1, 0.2), n_bootstrap=30))
    return evaluate_specs(data, baseline_specs(["random", "popularity"]))


@pytest.fixture(scope="module")
def many(evaluated: EvalResult) -> EvalResult:
    """23 models with pipeline-style names, every figure within a few per cent of the others."""
    one = evaluated.table.filter(pl.col("model") == "popularity")
    frames = []
    for i, name in enumerate(NAMES):
        factor = 1.0 + 0.004 * (i % 4)  # lines 0.4% apart: their end labels would sit on each other
        frames.append(one.with_columns(pl.lit(name).alias("model"), pl.col("value") * factor,
                                       pl.col("ci_low") * factor, pl.col("ci_high") * factor))
    return EvalResult(evaluated.data, [], pl.concat(frames))


def _lines(fig) -> dict[str, list]:
    out: dict[str, list] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                out.setdefault(line.get_gid(), []).append(line)
    return out


def _labels(fig) -> list[Text]:
    return [t for ax in fig.axes for t in ax.texts]


def _text_box(text: Text, renderer):
    """The letters' box alone (an annotation's own extent also spans its leader line)."""
    return Text.get_window_extent(text, renderer)


def _assert_no_overlap(fig) -> None:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), _text_box(t, renderer)) for t in _labels(fig)]
    assert len(boxes) >= 2
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"


def _grey(colour) -> bool:
    r, g, b = to_rgb(colour)
    return r == g == b


def test_roles_of_pipeline_names():
    assert model_role("pipeline", "pipeline") == "registered"
    assert {model_role(n, "pipeline") for n in PARTS + ["parent"]} == {"ablation"}
    assert {model_role(n, "pipeline") for n in BASELINES} == {"baseline"}
    assert {model_role(n, "pipeline") for n in COLD} == {"cold"}
    assert model_role("my_model", "pipeline") == "other"


def test_metric_at_k_styles_models_by_role(many):
    fig = metric_at_k_figure(many)
    lines = _lines(fig)
    colour = {name: to_rgb(found[0].get_color()) for name, found in lines.items()}
    assert colour["pipeline"] != colour["itemknn"]  # the 10-colour cycle once gave them one colour
    assert colour["pipeline"] == to_rgb(REGISTERED_COLOUR)
    widths = {name: found[0].get_linewidth() for name, found in lines.items()}
    assert widths["pipeline"] > max(w for n, w in widths.items() if n != "pipeline")
    assert lines["pipeline"][0].get_zorder() > max(found[0].get_zorder() for n, found in lines.items()
                                                   if n != "pipeline")
    assert all(_grey(colour[n]) for n in BASELINES)
    assert all(b > r and b > g for n in PARTS for r, g, b in [colour[n]])  # one hue family: blues
    assert not set(COLD) & set(lines)  # the cold-exposure views have a plot of their own
    assert set(lines) == {"pipeline", *PARTS, *BASELINES}
    for ax in fig.axes:  # each panel names every baseline at its line end, nothing else
        assert sorted(t.get_text() for t in ax.texts) == sorted(BASELINES)
    plt.close(fig)


@pytest.mark.parametrize("figure", [metric_at_k_figure, coverage_figure], ids=["metric_at_k", "coverage"])
def test_labels_never_overlap_with_many_models(many, figure):
    fig = figure(many)
    _assert_no_overlap(fig)
    plt.close(fig)


def test_scatter_names_every_model_but_the_cold_views(many):
    fig = coverage_figure(many)
    assert sorted(t.get_text() for t in _labels(fig)) == sorted(["pipeline", *PARTS, *BASELINES])
    plt.close(fig)


def test_legend_lies_outside_the_axes(many):
    fig = metric_at_k_figure(many)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert all(not box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    assert {t.get_text() for t in legend.get_texts()} == {"pipeline", *PARTS}  # baselines are named on the lines
    plt.close(fig)


def test_slice_bars_are_coloured_by_role(many):
    fig = slices_figure(many)
    bars = {p.get_gid(): p.get_facecolor()[:3] for p in fig.axes[0].patches if p.get_gid()}
    assert bars["pipeline"] == pytest.approx(to_rgb(REGISTERED_COLOUR))
    assert all(_grey(bars[n]) for n in BASELINES)
    assert not set(COLD) & set(bars)
    rows = zip(fig.axes[0].get_yticks(), (t.get_text() for t in fig.axes[0].get_yticklabels()), strict=True)
    assert max(rows)[1] == "pipeline"  # the registered model is the top row
    plt.close(fig)


def test_a_baselines_only_run_gives_each_baseline_a_colour(evaluated):
    assert registered_model(evaluated) is None  # its paired reference, popularity, is a baseline
    fig = metric_at_k_figure(evaluated)
    colours = {name: to_rgb(found[0].get_color()) for name, found in _lines(fig).items()}
    assert len(set(colours.values())) == 2 and not any(map(_grey, colours.values()))
    assert not fig.legends  # each line is named at its end
    plt.close(fig)


def test_report_plots_draw_the_registered_model_and_not_the_cold_views(many, tmp_path):
    files = write_report(many, tmp_path, dataset="fixture", command="test")
    assert [p.name for p in files.plots] == ["metric_at_k.png", "slices_ndcg10.png", "coverage_vs_popularity.png"]
    pixels = np.asarray(Image.open(files.plots[0]).convert("RGB")).reshape(-1, 3)
    registered = np.round(np.array(to_rgb(REGISTERED_COLOUR)) * 255)
    assert (np.abs(pixels - registered).max(axis=1) <= 2).sum() > 500  # the thick dark-red line
    r, g, b = (pixels / 255).T
    assert ((r > 0.8) & (g > 0.3) & (g < 0.7) & (b < 0.35)).sum() == 0  # no orange: the cold views are not drawn


def test_spread_keeps_the_gap_and_moves_as_little_as_it_can():
    assert spread([0.0, 0.0, 0.0], 1.0) == pytest.approx([-1.0, 0.0, 1.0])
    assert spread([5.0, 0.0, 9.0], 1.0) == pytest.approx([5.0, 0.0, 9.0])  # already apart: unchanged
    placed = spread([3.0, 0.0, 0.2, 0.1], 1.0, low=0.0, high=10.0)
    assert np.diff(np.sort(placed)).min() >= 1.0 - 1e-9 and placed.min() >= 0.0
    assert placed[0] == pytest.approx(3.0)


def _curve(gain: float) -> pl.DataFrame:
    """Merit, its quota views and the two ablations; ``gain`` 0: no new item reached a top 20 (a small log)."""
    rows = [("merit", 0, "-", "pipeline", 0.1652, 0.0)]
    for place in ("spread", "end"):  # the same items in the first 20 either way: the same Recall@20
        rows += [("quota", s, place, f"pipeline_cold{s}of20_{place}", 0.1652 - (0.006 * s if gain else 0.0), gain * s)
                 for s in (2, 4, 6, 10)]
    rows += [("no text", 0, "-", "pipeline_no_text", 0.1672, 0.0), ("no new items", 0, "-", "pipeline_no_new", 0.1650,
                                                                      0.0)]
    frame = pl.DataFrame(rows, schema=["setting", "slots", "place", "model", "recall@20", "cold_recall@20"],
                         orient="row")
    return frame.with_columns(pl.lit(0.1).alias("ndcg@10"), pl.lit(0.0).alias("new_per_list"))


REFERENCE = {"text_alone": 0.0404, "lightfm_alone": 0.1207, "ease": 0.1456, "popularity": 0.0822}
"""Reference marks as in a real run (MovieLens' Recall@20)."""


@pytest.mark.parametrize("gain", [0.05, 0.0], ids=["a curve", "every point at recall 0"])
def test_cold_tradeoff_labels_fit_and_do_not_overlap(gain):
    fig = plot_cold_tradeoff(_curve(gain), REFERENCE)
    _assert_no_overlap(fig)
    renderer = fig.canvas.get_renderer()
    texts = [t.get_text() for t in _labels(fig)]
    assert set(REFERENCE) <= set(texts)
    if gain == 0:  # five points on one spot: one label with every slot count
        assert "0, 2, 4, 6, 10" in texts
    else:  # one quota line: the place in the page does not change which items are in it
        assert {"0", "2", "4", "6", "10"} <= set(texts) and texts.count("2") == 1
    for text in _labels(fig):  # the PNG is saved untrimmed: what is outside the figure is lost
        assert fig.bbox.contains(*_text_box(text, renderer).min) and fig.bbox.contains(*_text_box(text, renderer).max)
    (ax,) = fig.axes
    assert not fig.legends[0].get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"no text tower", "no new-item candidates", "pipeline: new items on merit (no slots)"} <= set(legend)
    assert ax.get_ylabel() == "Recall@20 (every test positive)"
    plt.close(fig)
