"""Figure specs: what a learner reads off the curves and charts (titles, units, colours, marks)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dlcore.figures import (
    MODEL_COLORS,
    PANEL_TITLE,
    SPLIT_STYLE,
    batch_loss_figure,
    epoch_curves_figure,
    grouped_bar_figure,
    log_x_lines_figure,
    runs_overlay_figure,
)

HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.8 + 0.05 * e, "val_loss": 1.2 / e,
            "val_acc": 0.78 + 0.05 * e, "test_loss": 1.1 / e, "test_acc": 0.79 + 0.05 * e}
           for e in (1, 2, 3)]


def test_each_split_has_one_colour_in_both_panels_and_one_legend_entry() -> None:
    fig = epoch_curves_figure(HISTORY)
    by_split: dict[str, set] = {}
    for trace in fig.data:
        by_split.setdefault(trace.legendgroup, set()).add(trace.line.color)
    assert by_split == {split: {style[0]} for split, style in SPLIT_STYLE.items()}
    assert len({style[0] for style in SPLIT_STYLE.values()}) == 3  # validation is not train's colour
    assert sorted(t.name for t in fig.data if t.showlegend) == ["test", "train", "validation"]


def test_accuracy_is_in_percent_and_every_axis_has_a_title() -> None:
    fig = epoch_curves_figure(HISTORY)
    accuracy = [t for t in fig.data if t.yaxis == "y2" and t.legendgroup == "test"][0]
    assert np.allclose(accuracy.y, [84.0, 89.0, 94.0])
    layout = fig.layout
    assert layout.yaxis.title.text == "loss" and layout.yaxis2.title.text == "accuracy"
    assert layout.yaxis2.ticksuffix == "%"
    assert layout.xaxis.title.text == "epoch" and layout.xaxis2.title.text == "epoch"
    titles = [a for a in layout.annotations if a.text in ("loss per epoch", "accuracy per epoch")]
    assert len(titles) == 2 and all(a.font.size >= 14 for a in titles)


def test_the_kept_epoch_of_early_stopping_is_marked() -> None:
    fig = epoch_curves_figure(HISTORY, best_epoch=2)
    assert [(s.x0, s.xref) for s in fig.layout.shapes] == [(2, "x"), (2, "x2")]
    assert any(a.text == "kept: epoch 2" for a in fig.layout.annotations)
    assert not epoch_curves_figure(HISTORY).layout.shapes


def test_before_any_epoch_the_axes_cover_the_run_and_say_so() -> None:
    fig = epoch_curves_figure([], epochs=5)
    assert not fig.data
    assert list(fig.layout.xaxis.range) == [0.5, 5.5]
    assert list(fig.layout.yaxis.range) == [0, 1] and list(fig.layout.yaxis2.range) == [0, 100]
    assert epoch_curves_figure(HISTORY).layout.yaxis.range is None  # with points: fitted to them
    assert any(a.text == "no epoch has finished yet" for a in fig.layout.annotations)


def test_the_loss_figure_before_any_step_says_so_on_fixed_axes() -> None:
    fig = batch_loss_figure([])
    assert [a.text for a in fig.layout.annotations] == ["no training steps yet"]
    assert tuple(fig.layout.xaxis.range) == tuple(fig.layout.yaxis.range) == (0, 1)
    assert not batch_loss_figure([(1, 2.3)]).layout.annotations


def test_the_live_figures_do_not_measure_their_labels_against_the_page() -> None:
    for fig in (batch_loss_figure([(1, 2.3), (2, 2.1)]), epoch_curves_figure(HISTORY)):
        axes = [fig.layout[name] for name in fig.layout if name.startswith(("xaxis", "yaxis"))]
        assert len(axes) >= 2
        assert all(ax.ticklabeloverflow == "allow" and ax.automargin is False for ax in axes)


# ------------------------------------------------------------------------- the loss of a run that blew up

def _blow_up(fig):
    """The trace that marks the blow-up (a red X) and the note beside it."""
    marks = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "x"]
    notes = [a for a in fig.layout.annotations if a.text.startswith("diverged at step")]
    assert len(marks) == 1 and len(notes) == 1
    return marks[0], notes[0]


def test_a_diverged_run_shows_its_one_point_and_the_marked_blow_up() -> None:
    fig = batch_loss_figure([(1, 2.3)], diverged=(2, 306e6))
    curve = fig.data[0]
    assert list(curve.x) == [1] and "markers" in curve.mode  # one point as a line draws nothing
    mark, note = _blow_up(fig)
    assert (list(mark.x), list(mark.y)) == ([2], [306e6]) and mark.marker.color == "#d62728"
    assert note.text == "diverged at step 2: loss 306 million"
    assert fig.layout.yaxis.type == "log"  # or the point before would lie flat on the axis
    assert note.y == math.log10(306e6)  # an annotation on a log axis is placed by its log10


def test_a_loss_that_is_not_a_number_is_marked_at_the_top_of_the_axis() -> None:
    for value, words in ((math.nan, "not a number"), (math.inf, "infinite")):
        fig = batch_loss_figure([(1, 2.3), (2, 2.4)], diverged=(3, value))
        mark, note = _blow_up(fig)
        low, high = fig.layout.yaxis.range
        assert list(mark.y) == [high] and mark.cliponaxis is False and low <= 2.3 < 2.4 < high
        assert note.text == f"diverged at step 3: loss {words}"
        assert fig.layout.yaxis.type != "log"
    fig = batch_loss_figure([], diverged=(1, math.nan))  # it blew up on the first step
    mark, _ = _blow_up(fig)
    assert list(mark.x) == [1] and list(mark.y) == [fig.layout.yaxis.range[1]]


def test_a_long_healthy_run_is_a_plain_line() -> None:
    fig = batch_loss_figure([(s, 2.3 / s) for s in range(1, 201)])
    assert [t.mode for t in fig.data] == ["lines"]
    assert not fig.layout.annotations and fig.layout.yaxis.type is None


# ------------------------------------------------------------------------- the network against the forest

def test_the_network_and_the_forest_have_one_distinct_colour_on_every_figure() -> None:
    from dlcore.views.baseline import FOREST, NETWORK

    assert set(MODEL_COLORS) == {NETWORK, FOREST}
    assert MODEL_COLORS[NETWORK] != MODEL_COLORS[FOREST]
    series = {NETWORK: [0.9, 0.8], FOREST: [0.7, 0.6], "other": [0.5, 0.4]}
    bars = grouped_bar_figure(["0", "1"], series, "Per-class test accuracy", "accuracy", (0, 1))
    lines = log_x_lines_figure([100, 1000], series, "Test accuracy against training-set size",
                               "training images (log scale)", "test accuracy")
    for name in (NETWORK, FOREST):
        bar = next(t for t in bars.data if t.name == name)
        line = next(t for t in lines.data if t.name == name)
        assert bar.marker.color == line.line.color == line.marker.color == MODEL_COLORS[name]
    assert next(t for t in bars.data if t.name == "other").marker.color is None  # plotly's own
    assert bars.layout.yaxis.title.text == "accuracy"
    assert lines.layout.yaxis.title.text == "test accuracy"
    assert lines.layout.xaxis.title.text == "training images (log scale)"


# ------------------------------------------------------------------------- runs overlaid

def test_the_overlays_panel_titles_are_readable_apart_and_accuracy_is_in_percent() -> None:
    overlay = pd.DataFrame({"run": [7, 7], "epoch": [1, 2], "test_acc": [0.5, 0.6],
                            "test_loss": [1.2, 0.9]})
    fig = runs_overlay_figure(overlay, {7: "#7 first"})
    titles = sorted(fig.layout.annotations, key=lambda a: a.x)
    assert [a.text for a in titles] == ["test accuracy", "test loss"]
    for title in titles:
        assert title.font.size >= 14 and title.font.color == PANEL_TITLE["font"]["color"]
    # on a narrow page (360 px between the margins) the two titles do not reach each other
    width, char = 360, 0.6 * titles[0].font.size
    reach = (len(titles[0].text) + len(titles[1].text)) / 2 * char
    assert (titles[1].x - titles[0].x) * width > reach + 20
    accuracy = next(t for t in fig.data if t.meta[1] == "acc")
    assert list(accuracy.y) == [0.5, 0.6] and fig.layout.yaxis.tickformat == ".0%"  # shown as %
    assert fig.layout.yaxis.title.text == "accuracy" and fig.layout.yaxis2.title.text == "loss"
    assert fig.layout.legend.orientation == "h"  # below: a legend beside the panels squeezed them


def test_close_accuracies_get_ticks_that_differ_within_0_to_100_percent() -> None:
    # Seen on screen: one run at 89.8% then 90.6% had ticks "90% 90% 90% 90% 91%".
    overlay = pd.DataFrame({"run": [1, 1], "epoch": [1, 2], "test_acc": [0.898, 0.906],
                            "test_loss": [0.36, 0.32]})
    axis = runs_overlay_figure(overlay, {1: "#1"}).layout.yaxis
    assert axis.tickformat == ".1%" and 0 <= axis.range[0] < 0.898 and 0.906 < axis.range[1] <= 1
    near_one = runs_overlay_figure(overlay.assign(test_acc=[0.995, 1.0]), {1: "#1"}).layout.yaxis
    assert near_one.range[1] == 1.0


def test_a_log_axis_labels_each_decade_as_a_plain_number() -> None:
    from dlcore.figures import config_scatter_figure
    frame = pd.DataFrame({"label": ["a", "b"], "x": [1e-4, 1e-2], "test_acc": [0.9, 0.95],
                          "selected": [False, True]})
    axis = config_scatter_figure(frame, "Learning rate", True, True).layout.xaxis
    assert axis.type == "log" and axis.dtick == 1 and axis.exponentformat == "none"


def _view(first_layer, hidden=(32,)):
    from types import SimpleNamespace

    from dlcore.engine.config import RunConfig

    config = RunConfig().replace(**{"model.hidden": hidden})
    dataset = SimpleNamespace(shape=(1, 4, 4), classes=[str(c) for c in range(10)])
    return SimpleNamespace(first_layer=first_layer, dataset=dataset, config=config)


def test_the_learned_features_colour_scale_is_one_for_every_epoch() -> None:
    from dlcore.views.features import weight_panel

    rng = np.random.default_rng(0)
    snapshots = [rng.normal(scale=s, size=(32, 16)).astype(np.float32) for s in (0.1, 0.5, 2.0)]
    view = _view(snapshots)
    scales = {(weight_panel(view, e, 16).figure.data[0].zmin,
               weight_panel(view, e, 16).figure.data[0].zmax) for e in range(3)}
    assert len(scales) == 1  # before: each epoch re-fitted its own scale
    (low, high), = scales
    assert high == -low and high >= float(np.abs(snapshots[2]).max()) * 0.5


def test_units_to_show_never_offers_more_than_the_layer_has() -> None:
    from dlcore.views.features import units_slider_max

    zeros = np.zeros
    assert units_slider_max(_view([zeros((10, 16))], hidden=(10,))) == 16
    assert units_slider_max(_view([zeros((40, 16))], hidden=(40,))) == 48
    assert units_slider_max(_view([zeros((512, 16))])) == 128
