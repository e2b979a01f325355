"""dlcore.views.features, dlcore.views.errors and dlcore.views.shared (and the figures they draw):
what the Learned features and Errors pages show, tested without Streamlit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlcore import figures
from dlcore.engine.config import ModelSpec, RunConfig
from dlcore.engine.dataset import Dataset
from dlcore.engine.metrics import cell_indices, confusion
from dlcore.engine.models import build_model, layer_activations
from dlcore.runs.run_view import RunView
from dlcore.views import errors, features, shared

CLASSES = tuple(str(i) for i in range(4))


def make_view(spec: ModelSpec, shape=(1, 6, 5), n_test=40, snapshots=3, seed=0) -> RunView:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_test, *shape), dtype=torch.uint8, generator=gen)
    y = torch.arange(n_test) % len(CLASSES)
    dataset = Dataset("toy", x, y, x, y, CLASSES, (0.5,) * shape[0], (0.25,) * shape[0], "test")
    model = build_model(spec, shape, len(CLASSES)).eval()
    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    weights = first.weight.detach().numpy()
    layers = [(weights * (k + 1) / snapshots).astype(np.float16) for k in range(snapshots)]
    pred = (y.numpy() + (np.arange(n_test) % 5 == 0)) % len(CLASSES)
    prob = np.eye(len(CLASSES))[pred] * 0.7 + 0.3 / len(CLASSES)
    return RunView(run_id=7, config=RunConfig(model=spec), dataset=dataset, model=model,
                   test_pred=pred, test_prob=prob, history=[{"epoch": 1}, {"epoch": 2}],
                   first_layer=layers)


# ---------------------------------------------------------------- small helpers

def test_clamp_int_and_choice_or():
    assert shared.clamp_int(5, 0, 3, 1) == 3
    assert shared.clamp_int(-2, 0, 3, 1) == 0
    assert shared.clamp_int("2", 0, 3, 1) == 2
    assert shared.clamp_int(None, 0, 3, 1) == 1
    assert shared.clamp_int("x", 0, 3, 9) == 3
    assert shared.choice_or("b", ["a", "b"], "a") == "b"
    assert shared.choice_or("z", ["a", "b"], "a") == "a"
    assert shared.choice_or(None, ["a"], "a") == "a"


def test_view_token_changes_with_predictions_and_describe_view():
    view = make_view(ModelSpec(hidden=(8,)))
    token = shared.view_token(view)
    assert token == shared.view_token(view)
    view.test_pred = view.test_pred.copy()
    view.test_pred[0] = (view.test_pred[0] + 1) % 4
    assert shared.view_token(view) != token
    text = shared.describe_view(view)
    assert "Run 7" in text and "MLP 30-8-4" in text and "2 epochs" in text
    cnn = make_view(ModelSpec(kind="cnn", conv_channels=(4,), dense=8))
    assert "CNN" in shared.describe_view(cnn)


# ---------------------------------------------------------------- first-layer weights

def test_first_layer_images_linear_and_conv():
    w = np.arange(2 * 30, dtype=np.float32).reshape(2, 30)
    images, note = features.first_layer_images(w, (1, 6, 5))
    assert images.shape == (2, 6, 5) and note == ""
    np.testing.assert_array_equal(images[1], w[1].reshape(6, 5))

    rgb = np.stack([np.full(4, c, dtype=np.float32) for c in (1.0, 2.0, 6.0)]).reshape(1, 12)
    images, note = features.first_layer_images(rgb, (3, 2, 2))
    assert images.shape == (1, 2, 2) and np.allclose(images, 3.0) and "mean over the 3" in note

    kernels = np.ones((5, 3, 3, 3), dtype=np.float16)
    images, note = features.first_layer_images(kernels, (3, 8, 8))
    assert images.shape == (5, 3, 3) and "input channels" in note
    images, note = features.first_layer_images(kernels[:, :1], (1, 8, 8))
    assert images.shape == (5, 3, 3) and note == ""

    with pytest.raises(ValueError):
        features.first_layer_images(np.zeros((2, 7)), (1, 6, 5))


def test_unit_order_by_norm_and_index():
    w = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0], [np.nan, 0.0]])
    assert features.unit_order(w, 3, "norm") == [1, 2, 0]
    assert features.unit_order(w, 2, "index") == [0, 1]
    assert features.unit_order(w, 99, "index") == [0, 1, 2, 3]
    assert features.unit_order(w, 99, "norm")[-1] == 3  # NaN rows last


def test_weight_panel_hidden_layer_grid():
    view = make_view(ModelSpec(hidden=(40, 8)))
    panel = features.weight_panel(view, epoch=1, count=32, sort="norm")
    assert panel.kind == "hidden" and panel.total_units == 40 and len(panel.units) == 32
    final = np.asarray(view.first_layer[-1], dtype=np.float32)
    norms = np.linalg.norm(final, axis=1)
    assert norms[panel.units[0]] == pytest.approx(norms.max())
    z = np.asarray(panel.figure.data[0].z, dtype=np.float32)
    assert np.isfinite(z).sum() == 32 * 6 * 5
    assert "after epoch 1" in panel.figure.layout.title.text
    # the colour scale is symmetric around zero
    assert panel.figure.data[0].zmin == -panel.figure.data[0].zmax
    assert len(panel.figure.layout.annotations) == 32
    # epoch 0 is before training; an epoch out of range is clamped to the last one
    assert "before training" in features.weight_panel(view, 0, 16).figure.layout.title.text
    assert "after epoch 2" in features.weight_panel(view, 99, 16).figure.layout.title.text


def test_weight_panel_without_hidden_layer_is_the_output_layer():
    view = make_view(ModelSpec(hidden=()))
    panel = features.weight_panel(view, 2, 32, "index")
    assert panel.kind == "output" and panel.units == [0, 1, 2, 3]
    assert "output layer" in panel.note and "template" in panel.note
    assert [a.text for a in panel.figure.layout.annotations] == list(CLASSES)


def test_weight_panel_conv_kernels_and_no_weights():
    view = make_view(ModelSpec(kind="cnn", conv_channels=(6, 4), dense=8), shape=(3, 8, 8))
    panel = features.weight_panel(view, 1, 16, "index")
    assert panel.kind == "conv" and panel.image_shape == (3, 3) and len(panel.units) == 6
    assert not panel.figure.layout.annotations  # labels would hide the tiny kernels
    assert "kernels" in panel.note and "mean over the 3 input channels" in panel.note
    z = np.asarray(panel.figure.data[0].z, dtype=np.float32)
    assert np.isfinite(z).sum() == 6 * 9
    view.first_layer = []
    assert features.weight_panel(view, 0, 16) is None


def test_weight_panel_single_snapshot_says_final():
    view = make_view(ModelSpec(hidden=(16,)), snapshots=1)
    assert "final weights" in features.weight_panel(view, 0, 16).figure.layout.title.text


# ---------------------------------------------------------------- activations

def test_activations_of_a_cnn():
    view = make_view(ModelSpec(kind="cnn", conv_channels=(6, 4), dense=8, dropout=0.2), shape=(1, 8, 8))
    acts = layer_activations(view.model, view.model_input(view.dataset.test_x[:1])[0])
    shown = features.shown_activations(acts)
    kinds = [name.split(": ")[1] for name, _ in shown]
    assert "Flatten" not in kinds and "Dropout" not in kinds and kinds[0] == "Conv2d"
    name, maps = features.first_block_output(view.model, acts)
    assert name.endswith("MaxPool2d") and tuple(maps.shape) == (6, 4, 4)
    conv_fig = figures.activation_figure(*shown[0], max_maps=4)
    assert "4 of 6 maps" in conv_fig.layout.title.text
    assert np.isfinite(np.asarray(conv_fig.data[0].z, dtype=np.float32)).sum() == 4 * 8 * 8
    bar = figures.activation_figure(*shown[-1])
    assert bar.data[0].type == "bar" and len(bar.data[0].y) == 4
    table = features.activation_summary(shown)
    assert list(table["layer"]) == [n for n, _ in shown]
    assert table["zeros"].between(0, 1).all()


def test_first_block_output_none_for_mlp():
    view = make_view(ModelSpec(hidden=(8,)))
    acts = layer_activations(view.model, view.model_input(view.dataset.test_x[:1])[0])
    assert features.first_block_output(view.model, acts) is None


def test_image_grid_figure_layout():
    fig = figures.image_grid_figure(np.ones((10, 3, 2)), columns=4, labels=[str(i) for i in range(10)])
    z = np.asarray(fig.data[0].z, dtype=np.float32)
    assert z.shape == (3 * 4 - 1, 4 * 3 - 1) and np.isfinite(z).sum() == 10 * 6


# ---------------------------------------------------------------- errors

@pytest.mark.filterwarnings("ignore:A single label")
def test_default_cell():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 2, 2, 1, 0, 2])
    assert errors.default_cell(y_true, y_pred, 3) == (1, 2)
    assert errors.default_cell(y_true, y_true, 3) == (0, 1)
    assert errors.default_cell(np.zeros(3, int), np.zeros(3, int), 1) == (0, 0)


def test_confusion_click_figure_and_selection():
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 0, 2, 1])
    matrix = confusion(y_true, y_pred, 3)
    labels = ["a", "b", "c"]
    fig = figures.confusion_click_figure(matrix, labels, "m", highlight=(2, 0))
    assert np.asarray(fig.data[0].z).sum() == len(y_true)  # the heatmap stays the first trace
    cells = fig.data[1]
    assert len(cells.x) == 9 and list(cells.customdata[5]) == [1, 2]
    assert (cells.x[5], cells.y[5]) == ("c", "b")
    shape = fig.layout.shapes[0]
    assert (shape.x0, shape.y0) == (-0.5, 1.5)

    classes = tuple(labels)
    assert errors.cell_from_selection({"points": [{"customdata": [2, 0], "x": "a", "y": "c"}]},
                                       classes) == (2, 0)
    assert errors.cell_from_selection({"points": [{"x": "b", "y": "c"}]}, classes) == (2, 1)
    assert errors.cell_from_selection({"points": [{"customdata": [9, 9]}]}, classes) is None
    assert errors.cell_from_selection({"points": []}, classes) is None
    assert errors.cell_from_selection(None, classes) is None
    assert errors.pair_from_row({"rows": [1]}, [(0, 1), (2, 0)]) == (2, 0)
    assert errors.pair_from_row({"rows": [5]}, [(0, 1)]) is None
    assert errors.pair_from_row({"rows": []}, [(0, 1)]) is None


def test_display_image_and_top_classes():
    gray = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    big = shared.display_image(gray, size=9)
    assert big.shape == (6, 9) and big.dtype == np.uint8 and big[5, 8] == 5
    rgb = shared.display_image(torch.zeros(3, 4, 4, dtype=torch.uint8), size=8)
    assert rgb.shape == (8, 8, 3)
    text = errors.top_classes(np.array([0.1, 0.85, 0.05, 0.0]), CLASSES)
    assert text == "1 85% · 0 10% · 2 5%"
    assert errors.top_classes(np.array([0.0, 0.0, 0.999, 0.001]), CLASSES) == "2 100%"


def test_cell_gallery_is_exactly_the_cell():
    view = make_view(ModelSpec(hidden=(8,)), n_test=40)
    y_true = view.dataset.test_y.numpy()
    expected = cell_indices(y_true, view.test_pred, 0, 1)
    assert len(expected) > 0
    gallery = errors.cell_gallery(view.dataset.test_x, y_true, view.test_pred, view.test_prob,
                                   CLASSES, 0, 1)
    assert gallery.indices == expected.tolist() and gallery.total == len(expected)
    assert len(gallery.images) == len(gallery.captions) == len(expected)
    assert gallery.captions[0].startswith(f"#{expected[0]}: 1 ")
    assert gallery.headline(CLASSES).startswith(f"{len(expected)} images: true 0, predicted 1")
    limited = errors.cell_gallery(view.dataset.test_x, y_true, view.test_pred, view.test_prob,
                                   CLASSES, 1, 1, limit=3)
    assert limited.total > 3 and len(limited.indices) == 3 and "first 3" in limited.headline(CLASSES)
    assert "correctly classified" in limited.headline(CLASSES)
    empty = errors.cell_gallery(view.dataset.test_x, y_true, view.test_pred, view.test_prob,
                                 CLASSES, 0, 3)
    assert empty.total == 0 and empty.indices == [] and empty.headline(CLASSES).startswith("0 images")
