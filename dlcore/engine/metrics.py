"""What a run got wrong: confusion matrix, per-class scores, most-confused pairs, the images behind a cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix as _sk_confusion
from sklearn.metrics import precision_recall_fscore_support


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
              normalize: bool = False) -> np.ndarray:
    """Rows are true classes, columns predicted; row-normalised to fractions if asked."""
    labels = np.arange(num_classes)
    if normalize:
        return _sk_confusion(y_true, y_pred, labels=labels, normalize="true")
    return _sk_confusion(y_true, y_pred, labels=labels)


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...]) -> pd.DataFrame:
    """Precision, recall, F1 and support for each class."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(len(classes)), zero_division=0)
    return pd.DataFrame({"class": list(classes), "precision": precision, "recall": recall,
                         "f1": f1, "support": support})


def most_confused(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...],
                  top: int = 10) -> pd.DataFrame:
    """The off-diagonal cells with the most images, largest first."""
    matrix = confusion(y_true, y_pred, len(classes))
    np.fill_diagonal(matrix, 0)
    true_idx, pred_idx = np.nonzero(matrix)
    counts = matrix[true_idx, pred_idx]
    order = np.argsort(-counts, kind="stable")[:top]
    return pd.DataFrame({
        "true": [classes[i] for i in true_idx[order]],
        "predicted": [classes[j] for j in pred_idx[order]],
        "count": counts[order],
        "true_index": true_idx[order],
        "pred_index": pred_idx[order],
    })


def cell_indices(y_true: np.ndarray, y_pred: np.ndarray, true_class: int, pred_class: int) -> np.ndarray:
    """Test-set indices of exactly the images in one confusion-matrix cell."""
    return np.flatnonzero((np.asarray(y_true) == true_class) & (np.asarray(y_pred) == pred_class))


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of each class: the fraction of its test images predicted right."""
    matrix = confusion(y_true, y_pred, num_classes)
    totals = matrix.sum(1)
    return np.divide(np.diag(matrix), totals, out=np.zeros(num_classes), where=totals > 0)
