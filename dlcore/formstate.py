"""The Train page's widget values as a flat dict, to and from a RunConfig.

Widget keys are config field names ("train.lr", "model.dropout"), except that the per-layer lists
become a count and one value per layer ("model.n_hidden" and "model.width_0"...). Keeping this here
lets tests reach it without a browser, and lets links and presets speak the same keys.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from dlcore.config import ModelSpec, RunConfig, TrainConfig

MAX_HIDDEN = 8
MAX_BLOCKS = 4
WIDTH_OPTIONS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 2048, 4096)
CHANNEL_OPTIONS = (4, 8, 16, 32, 64, 128, 256)
LR_OPTIONS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
BATCH_OPTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
WEIGHT_DECAY_OPTIONS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1)
SUBSET_OPTIONS = (0, 100, 300, 1000, 3000, 10000, 30000)
# A layer list's widgets: a count and one value per layer.
LIST_WIDGETS: dict[str, tuple[str, ...]] = {
    "model.hidden": ("model.n_hidden", *(f"model.width_{i}" for i in range(MAX_HIDDEN))),
    "model.conv_channels": ("model.n_blocks", *(f"model.channels_{i}" for i in range(MAX_BLOCKS))),
}


def subset_options(num_train: int) -> tuple[int, ...]:
    """The "Training images" choices for a dataset of `num_train` images: the sizes smaller than it
    (a size it cannot fill would train on all and say otherwise), then 0, all of them, the largest
    choice and so the slider's right end."""
    return (*(o for o in SUBSET_OPTIONS if 0 < o < num_train), 0)


def with_value(options: tuple, value: Any) -> list:
    """`options` with `value` added in order, so a preset's or link's odd value still shows (a
    trailing 0, "all", stays last)."""
    if value in options:
        return list(options)
    if options and options[-1] == 0:
        return [*sorted({*options[:-1], value}), 0]
    return sorted(set(options) | {value})


def widget_values(config: RunConfig) -> dict[str, Any]:
    """Every widget key of the Train page and its value for `config`."""
    values: dict[str, Any] = {}
    for key, value in config.flat().items():
        if key == "model.hidden":
            values["model.n_hidden"] = len(value)
            for i in range(MAX_HIDDEN):
                values[f"model.width_{i}"] = value[i] if i < len(value) else (value[-1] if value else 128)
        elif key == "model.conv_channels":
            values["model.n_blocks"] = len(value)
            for i in range(MAX_BLOCKS):
                values[f"model.channels_{i}"] = value[i] if i < len(value) else value[-1]
        else:
            values[key] = value
    return values


def config_from_widgets(values: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """The RunConfig the widget values describe (validated); missing keys keep `base`'s values."""
    base = base or RunConfig()
    changes: dict[str, Any] = {}
    for section, klass in (("model", ModelSpec), ("train", TrainConfig)):
        for f in fields(klass):
            key = f"{section}.{f.name}"
            if key in values:
                changes[key] = values[key]
    if "model.n_hidden" in values:
        n = int(values["model.n_hidden"])
        changes["model.hidden"] = tuple(int(values[f"model.width_{i}"]) for i in range(n))
    if "model.n_blocks" in values:
        n = int(values["model.n_blocks"])
        changes["model.conv_channels"] = tuple(int(values[f"model.channels_{i}"]) for i in range(n))
    return base.replace(**changes).validate()
