"""The Learned features page's logic: the first layer's weights as images, epoch by epoch, and what
each layer makes of one test image.

The page reads widgets and calls these; everything here takes plain data (arrays, a RunView) and
returns figures, tables or small dataclasses, so a test reaches all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from dlcore.figures import GRID_COLUMNS, annotate_grid, weight_grid_figure
from dlcore.views.shared import clamp_int

SKIPPED_LAYERS = ("Flatten", "Dropout")  # the input again / the identity in eval mode


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

def shown_activations(activations: Sequence[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """The layers worth drawing: Flatten (the input again) and Dropout (the identity at test time)
    are left out."""
    return [(name, out) for name, out in activations
            if name.split(": ", 1)[-1] not in SKIPPED_LAYERS]


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
