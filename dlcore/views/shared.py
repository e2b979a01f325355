"""What the views of more than one page share: which run is shown and how it reads in a line, a
network in a few words, an image for `st.image`, and a stale widget value made safe.

The Learned features and Errors pages both show one trained run (a RunView); the Random Forest and
Class pages both name networks in a few characters. Pages import this module beside their own
view module (the other exception to "a view module is its page's alone" is dlcore.views.form).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dlcore.engine.config import RunConfig


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


def display_image(image: np.ndarray | torch.Tensor, size: int = 84) -> np.ndarray:
    """A uint8 (C, H, W) image as (H', W') or (H', W', 3) uint8 for `st.image`, enlarged by whole
    pixels to about `size` wide (so a 28×28 digit stays sharp)."""
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = np.asarray(array, dtype=np.uint8)
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.transpose(array[:3], (1, 2, 0))
    factor = max(1, size // max(array.shape[1], 1))
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def model_summary(config: RunConfig) -> str:
    """"MLP 512-256" or "CNN 32-64, pool": the network in a few characters."""
    m = config.model
    if m.kind == "cnn":
        return f"CNN {'-'.join(map(str, m.conv_channels))}, k{m.kernel_size}" + (", pool" if m.pool else "")
    return "MLP " + ("-".join(map(str, m.hidden)) or "no hidden layer")
