"""Figure specs: what a learner reads off the per-epoch curves (titles, units, colours, marks)."""

from __future__ import annotations

import numpy as np

from dlcore.figures import SPLIT_STYLE, epoch_curves_figure

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


def _view(first_layer, hidden=(32,)):
    from types import SimpleNamespace

    from dlcore.config import RunConfig

    config = RunConfig().replace(**{"model.hidden": hidden})
    dataset = SimpleNamespace(shape=(1, 4, 4), classes=[str(c) for c in range(10)])
    return SimpleNamespace(first_layer=first_layer, dataset=dataset, config=config)


def test_the_learned_features_colour_scale_is_one_for_every_epoch() -> None:
    from dlcore.visuals import weight_panel

    rng = np.random.default_rng(0)
    snapshots = [rng.normal(scale=s, size=(32, 16)).astype(np.float32) for s in (0.1, 0.5, 2.0)]
    view = _view(snapshots)
    scales = {(weight_panel(view, e, 16).figure.data[0].zmin,
               weight_panel(view, e, 16).figure.data[0].zmax) for e in range(3)}
    assert len(scales) == 1  # before: each epoch re-fitted its own scale
    (low, high), = scales
    assert high == -low and high >= float(np.abs(snapshots[2]).max()) * 0.5


def test_units_to_show_never_offers_more_than_the_layer_has() -> None:
    from dlcore.visuals import units_slider_max

    zeros = np.zeros
    assert units_slider_max(_view([zeros((10, 16))], hidden=(10,))) == 16
    assert units_slider_max(_view([zeros((40, 16))], hidden=(40,))) == 48
    assert units_slider_max(_view([zeros((512, 16))])) == 128
