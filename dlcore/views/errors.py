"""The Errors page's logic: the confusion matrix and what a click on it or on the most-confused
table selects, and the gallery of one cell's test images.

The page reads widgets and calls these; everything here takes plain data (arrays, plotly selection
states) and returns small values or dataclasses, so a test reaches all of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dlcore.engine.metrics import cell_indices, confusion
from dlcore.views.shared import display_image

# ---------------------------------------------------------------- the confusion matrix

def default_cell(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[int, int]:
    """The most-confused (true, predicted) pair; (0, 1) when nothing is confused (an empty cell)."""
    matrix = confusion(y_true, y_pred, num_classes)
    np.fill_diagonal(matrix, 0)
    if matrix.max(initial=0) > 0:
        t, p = np.unravel_index(int(np.argmax(matrix)), matrix.shape)
        return int(t), int(p)
    return 0, min(1, num_classes - 1)


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


# ---------------------------------------------------------------- the gallery of one cell

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
