"""What the inspection pages draw, computed headless: first-layer weight grids, activations, error galleries.

The "Learned features" and "Errors" pages read widgets and call these; everything here takes plain
data (arrays, a RunView) and returns figures, tables or small dataclasses, so a test reaches all of it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from dlcore.engine.metrics import cell_indices, confusion
from dlcore.figures import heatmap_figure, weight_grid_figure

GRID_COLUMNS = 8
SKIPPED_LAYERS = ("Flatten", "Dropout")  # the input again / the identity in eval mode


# ---------------------------------------------------------------- shared

def clamp_int(value: Any, low: int, high: int, default: int) -> int:
    """`value` as an int inside [low, high]; `default` (clamped too) when it is not a number at all."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        number = default
    return max(low, min(high, number))


def choice_or(value: Any, options: Sequence[Any], default: Any) -> Any:
    """`value` if it is one of `options`, else `default`: a stale widget value after a run changed."""
    return value if value in list(options) else default


def view_token(view) -> str:
    """A short fingerprint of a run's identity and predictions: it changes when another run is shown."""
    digest = hashlib.sha1()
    digest.update(repr((view.run_id, view.dataset.name, len(view.test_pred))).encode())
    digest.update(np.ascontiguousarray(view.test_pred).tobytes())
    return digest.hexdigest()[:16]


def describe_view(view) -> str:
    """One line for a caption: which run, which network, which data, how well it did."""
    spec = view.config.model
    c, h, w = view.dataset.shape
    if spec.kind == "mlp":
        widths = "-".join(str(n) for n in (c * h * w, *spec.hidden, view.dataset.num_classes))
        net = f"MLP {widths}"
    else:
        net = f"CNN, conv channels {'-'.join(map(str, spec.conv_channels))}, dense {spec.dense}"
    epochs = len(view.history)
    run = f"Run {view.run_id}" if view.run_id is not None else "This session's run"
    return (f"{run} · {net} ({view.params:,} parameters) · {view.dataset.name} · "
            f"{epochs} epoch{'s' if epochs != 1 else ''} · test accuracy {view.test_acc:.2%}")


# ---------------------------------------------------------------- first-layer weights

def first_layer_images(weights: np.ndarray, input_shape: tuple[int, int, int]
                       ) -> tuple[np.ndarray, str]:
    """One 2-D image per unit of a first layer, and a note on how colour channels were folded.

    A Linear layer's weights (units, C*H*W) become (units, H, W); a Conv2d's (out, in, k, k) become
    (out, k, k). Several channels are averaged (the note says so); one channel is taken as it is.
    """
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim == 4:  # conv kernels (out, in, k, k)
        stacked, channels = weights, weights.shape[1]
        what = "input channels"
    elif weights.ndim == 2:
        c, h, w = input_shape
        if weights.shape[1] != c * h * w:
            raise ValueError(f"weights of shape {weights.shape} do not fit inputs of shape {input_shape}")
        stacked, channels = weights.reshape(len(weights), c, h, w), c
        what = "colour channels"
    else:
        raise ValueError(f"cannot draw weights of shape {weights.shape} as images")
    if channels == 1:
        return stacked[:, 0], ""
    return stacked.mean(axis=1), f"Each image is the mean over the {channels} {what}."


def unit_order(weights: np.ndarray, count: int, sort: str = "norm") -> list[int]:
    """Which units to draw: the `count` with the largest weight norm (largest first), or the first
    `count` by index. Fewer when the layer has fewer units."""
    weights = np.asarray(weights, dtype=np.float32)
    count = max(0, min(int(count), len(weights)))
    if sort == "index":
        return list(range(count))
    norms = np.linalg.norm(weights.reshape(len(weights), -1), axis=1)
    norms = np.nan_to_num(norms, nan=-1.0)
    return [int(i) for i in np.argsort(-norms, kind="stable")[:count]]


def annotate_grid(fig: go.Figure, labels: Sequence[str], image_shape: tuple[int, int],
                  columns: int = GRID_COLUMNS) -> go.Figure:
    """Write a small label in the top-left corner of each tile of a `weight_grid_figure`."""
    h, w = image_shape
    rows = math.ceil(len(labels) / columns) if labels else 0
    height = rows * (h + 1) - 1
    notes = []
    for k, label in enumerate(labels):
        r, c = divmod(k, columns)
        notes.append(go.layout.Annotation(
            x=c * (w + 1) - 0.5, y=height - r * (h + 1) - 0.5, text=str(label), showarrow=False,
            xanchor="left", yanchor="top", font=dict(size=9, color="black"),
            bgcolor="rgba(255,255,255,0.6)", borderpad=0))
    # one layout update: fig.add_annotation per tile validates the whole layout each time (slow)
    fig.update_layout(annotations=list(fig.layout.annotations) + notes)
    return fig


@dataclass
class WeightPanel:
    """The first layer's weights at one epoch, ready to draw."""

    figure: go.Figure
    units: list[int]
    total_units: int
    note: str
    kind: str  # "hidden" | "output" | "conv"
    image_shape: tuple[int, int]


def units_slider_max(view, step: int = 16, most: int = 128) -> int:
    """The largest "units to show" worth offering: the first layer's units rounded up to `step`
    (at most `most`); `step` where the layer has no more (then there is nothing to choose)."""
    total = len(view.first_layer[-1]) if view.first_layer else most
    return max(step, min(most, -(-total // step) * step))


def weight_panel(view, epoch: int, count: int, sort: str = "norm") -> WeightPanel | None:
    """The first Linear/Conv2d layer of `view` at snapshot `epoch` (0 = before training), `count`
    units sorted by `sort`. Units are ranked on the final weights, so each tile keeps its place while
    the epoch changes. None when the run kept no first-layer weights."""
    if not view.first_layer:
        return None
    epoch = clamp_int(epoch, 0, len(view.first_layer) - 1, len(view.first_layer) - 1)
    weights = np.asarray(view.first_layer[epoch], dtype=np.float32)
    final = np.asarray(view.first_layer[-1], dtype=np.float32)
    images, channel_note = first_layer_images(weights, view.dataset.shape)
    units = unit_order(final, count, sort)
    if weights.ndim == 4:
        kind = "conv"
        labels = []
        k = weights.shape[-1]
        note = (f"The first conv layer's {len(weights)} kernels ({k}×{k}): each slides over the "
                "image and answers most where the image looks like it. Blue is a positive weight, "
                "red a negative one.")
    elif view.config.model.kind == "mlp" and not view.config.model.hidden:
        kind = "output"
        labels = [view.dataset.classes[u] for u in units]
        note = ("This MLP has no hidden layer, so these are the weights of the output layer: each "
                "image is one class's template. Blue pixels vote for the class, red ones against it.")
    else:
        kind = "hidden"
        labels = [str(u) for u in units]
        note = ("Each image is one hidden unit's weights over the input: blue where a bright pixel "
                "pushes the unit up, red where it pushes it down.")
    if channel_note:
        note = f"{note} {channel_note}"
    shape = images.shape[1:]
    what = {"conv": "kernel", "output": "class", "hidden": "unit"}[kind]
    stage = "before training" if epoch == 0 and len(view.first_layer) > 1 else (
        f"after epoch {epoch}" if len(view.first_layer) > 1 else "final weights")
    title = f"{len(units)} of {len(weights)} first-layer {what} weights, {stage}"
    # One colour scale for every epoch of the run, so that epochs compare by colour.
    limit = max(float(np.abs(first_layer_images(np.asarray(w, dtype=np.float32),
                                                view.dataset.shape)[0][units]).max())
                for w in view.first_layer) if units else None
    fig = weight_grid_figure(images.reshape(len(images), -1), shape, units, columns=GRID_COLUMNS,
                             title=title, limit=limit)
    if kind != "conv":  # a label would hide most of a 3x3 kernel
        annotate_grid(fig, labels, shape, GRID_COLUMNS)
    return WeightPanel(fig, units, len(weights), note, kind, shape)


# ---------------------------------------------------------------- activations of one image

def image_grid_figure(images: np.ndarray, title: str = "", columns: int = GRID_COLUMNS,
                      labels: Sequence[str] | None = None, colorscale: str = "Viridis") -> go.Figure:
    """Several 2-D maps (n, h, w) side by side on one colour scale (feature maps)."""
    images = np.asarray(images, dtype=np.float32)
    n, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan, dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, columns)
        canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = images[k]
    fig = go.Figure(go.Heatmap(z=canvas[::-1], colorscale=colorscale, hoverongaps=False))
    fig.update_layout(title=title, height=max(200, 40 + 110 * rows), margin=dict(t=40, b=10, l=10, r=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    if labels:
        annotate_grid(fig, labels, (h, w), columns)
    return fig


def shown_activations(activations: Sequence[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """The layers worth drawing: Flatten (the input again) and Dropout (the identity at test time)
    are left out."""
    return [(name, out) for name, out in activations
            if name.split(": ", 1)[-1] not in SKIPPED_LAYERS]


def activation_figure(name: str, output: torch.Tensor, max_maps: int = 8) -> go.Figure:
    """One layer's output for one image: bars for a vector, the first few maps for a conv output."""
    values = output.detach().float().cpu().numpy()
    if values.ndim == 3:
        shown = min(max_maps, len(values))
        title = f"{name}: {shown} of {len(values)} maps, {values.shape[1]}×{values.shape[2]}"
        return image_grid_figure(values[:shown], title=title, labels=[str(i) for i in range(shown)])
    values = values.reshape(-1)
    fig = go.Figure(go.Bar(x=np.arange(len(values)), y=values,
                           hovertemplate="unit %{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=f"{name}: {len(values)} values", height=220, bargap=0,
                      margin=dict(t=40, b=30, l=40, r=10))
    fig.update_xaxes(title_text="unit")
    return fig


def activation_summary(activations: Sequence[tuple[str, torch.Tensor]]) -> pd.DataFrame:
    """Per layer: the output shape and its min, mean, max and share of exact zeros (dead ReLUs)."""
    rows = []
    for name, out in activations:
        values = out.detach().float().cpu()
        rows.append({"layer": name, "output shape": " × ".join(map(str, values.shape)),
                     "min": float(values.min()), "mean": float(values.mean()),
                     "max": float(values.max()), "zeros": float((values == 0).float().mean())})
    return pd.DataFrame(rows, columns=["layer", "output shape", "min", "mean", "max", "zeros"])


def first_block_output(model: nn.Sequential, activations: Sequence[tuple[str, torch.Tensor]]
                       ) -> tuple[str, torch.Tensor] | None:
    """The output of the first conv block (conv, norm, activation, pool: up to the next conv or the
    Flatten), from `layer_activations(model, image)`; None for a network without a Conv2d."""
    layers = list(model)
    start = next((i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)), None)
    if start is None:
        return None
    end = start
    while end + 1 < len(layers) and not isinstance(layers[end + 1], (nn.Conv2d, nn.Flatten)):
        end += 1
    return activations[end]


# ---------------------------------------------------------------- errors: the confusion matrix

def default_cell(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[int, int]:
    """The most-confused (true, predicted) pair; (0, 1) when nothing is confused (an empty cell)."""
    matrix = confusion(y_true, y_pred, num_classes)
    np.fill_diagonal(matrix, 0)
    if matrix.max(initial=0) > 0:
        t, p = np.unravel_index(int(np.argmax(matrix)), matrix.shape)
        return int(t), int(p)
    return 0, min(1, num_classes - 1)


def confusion_click_figure(matrix: np.ndarray, labels: Sequence[str], title: str, *,
                           text_format: str = "d", highlight: tuple[int, int] | None = None
                           ) -> go.Figure:
    """`figures.heatmap_figure` plus one invisible marker per cell, so that a click on a cell selects
    a point (plotly heatmaps themselves cannot be selected), and a frame around `highlight`."""
    matrix = np.asarray(matrix)
    labels = list(labels)
    fig = heatmap_figure(matrix, labels, title, text_format=text_format)
    fig.data[0].hoverinfo = "skip"
    n = len(labels)
    rows, cols = np.divmod(np.arange(n * n), n)
    text = [format(matrix[r, c], text_format) for r, c in zip(rows, cols, strict=True)]
    fig.add_trace(go.Scatter(
        x=[labels[c] for c in cols], y=[labels[r] for r in rows], mode="markers",
        customdata=np.stack([rows, cols], axis=1).tolist(), text=text, showlegend=False,
        marker=dict(symbol="square", size=26, color="rgba(0,0,0,0)", line=dict(width=0)),
        selected=dict(marker=dict(color="rgba(0,0,0,0)")),
        unselected=dict(marker=dict(opacity=0)),
        hovertemplate="true %{y}, predicted %{x}: %{text}<br>click to see these images<extra></extra>",
        name="cells"))
    if highlight is not None:
        r, c = highlight
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                      line=dict(color="orange", width=3), xref="x", yref="y")
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def cell_from_selection(selection: Mapping | None, classes: Sequence[str]) -> tuple[int, int] | None:
    """(true, predicted) of the cell a click on `confusion_click_figure` selected, else None.

    Reads a plotly selection state ({"points": [{"customdata": [t, p], "x": ..., "y": ...}]}).
    """
    if not isinstance(selection, Mapping):
        return None
    points = selection.get("points") or []
    classes = list(classes)
    for point in points:
        if not isinstance(point, Mapping):
            continue
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 2:
            try:
                t, p = int(data[0]), int(data[1])
            except (TypeError, ValueError):
                t = p = -1
            if 0 <= t < len(classes) and 0 <= p < len(classes):
                return t, p
        x, y = point.get("x"), point.get("y")
        if x in classes and y in classes:
            return classes.index(y), classes.index(x)
    return None


def pair_from_row(selection: Mapping | None, pairs: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The (true, predicted) pair of the row selected in the most-confused table, else None."""
    if not isinstance(selection, Mapping):
        return None
    rows = selection.get("rows") or []
    if rows and isinstance(rows[0], int) and 0 <= rows[0] < len(pairs):
        t, p = pairs[rows[0]]
        return int(t), int(p)
    return None


# ---------------------------------------------------------------- errors: the gallery of one cell

def display_image(image: np.ndarray | torch.Tensor, size: int = 84) -> np.ndarray:
    """A uint8 (C, H, W) image as (H', W') or (H', W', 3) uint8 for `st.image`, enlarged by whole
    pixels to about `size` wide (so a 28×28 digit stays sharp)."""
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = np.asarray(array, dtype=np.uint8)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.transpose(array[:3], (1, 2, 0))
    factor = max(1, size // max(array.shape[1], 1))
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def top_classes(probabilities: np.ndarray, classes: Sequence[str], top: int = 3,
                at_least: float = 0.01) -> str:
    """'9 - nine 87% · 4 - four 12%': the `top` most likely classes (those of at least 1%)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")[:top]
    parts = [f"{classes[i]} {probabilities[i]:.0%}" for i in order
             if probabilities[i] >= at_least or i == order[0]]
    return " · ".join(parts)


@dataclass
class Gallery:
    """The images of one confusion-matrix cell, ready for `st.image`."""

    true_class: int
    pred_class: int
    total: int
    indices: list[int] = field(default_factory=list)  # the test indices shown (at most the limit)
    images: list[np.ndarray] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)

    def headline(self, classes: Sequence[str]) -> str:
        kind = "correctly classified" if self.true_class == self.pred_class else "misclassified"
        head = (f"{self.total} images: true {classes[self.true_class]}, "
                f"predicted {classes[self.pred_class]} ({kind})")
        if self.total > len(self.indices):
            head += f"; the first {len(self.indices)} are shown"
        return head


def cell_gallery(test_x: torch.Tensor | np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                 probabilities: np.ndarray, classes: Sequence[str], true_class: int, pred_class: int,
                 limit: int = 60, size: int = 84) -> Gallery:
    """Exactly the test images of one cell (true `true_class`, predicted `pred_class`), the first
    `limit` of them as display images captioned with their index and top predicted classes."""
    indices = cell_indices(y_true, y_pred, true_class, pred_class)
    shown = [int(i) for i in indices[:max(0, limit)]]
    images = [display_image(test_x[i], size) for i in shown]
    captions = [f"#{i}: {top_classes(probabilities[i], classes)}" for i in shown]
    return Gallery(int(true_class), int(pred_class), int(len(indices)), shown, images, captions)
