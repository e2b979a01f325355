"""The Train page's widgets, derived from the settings' descriptions (dlcore.engine.config.settings()):
their keys and values as a flat dict, to and from a RunConfig, and what each draws.

Widget keys are config field names ("train.lr", "model.dropout"), except that a list field's
widgets are a count and one value per layer ("model.n_hidden" and "model.width_0"...; its
description's `layers`). Keeping this here lets tests reach it without a browser, and lets links
and presets speak the same keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dlcore.engine.config import RunConfig, Setting, setting, settings

# Kept for callers that name them; each is a description's choice slider stops.
WIDTH_OPTIONS: tuple[int, ...] = setting("model.dense").stops
CHANNEL_OPTIONS: tuple[int, ...] = setting("model.conv_channels").stops
LR_OPTIONS: tuple[float, ...] = setting("train.lr").stops
BATCH_OPTIONS: tuple[int, ...] = setting("train.batch_size").stops
WEIGHT_DECAY_OPTIONS: tuple[float, ...] = setting("train.weight_decay").stops
SUBSET_OPTIONS: tuple[int, ...] = setting("train.train_subset").stops
NOT_ON_PAGE = (None, "sidebar")  # widget kinds the Train page does not draw


def list_widgets() -> dict[str, tuple[str, ...]]:
    """A list field's widget keys by the field's key (its hide group): a count and one per layer."""
    return {key: s.layers.keys() for key, s in settings().items() if s.layers is not None}


LIST_WIDGETS: dict[str, tuple[str, ...]] = list_widgets()


def widget_keys(s: Setting) -> tuple[str, ...]:
    """The widget keys that stand for setting `s`."""
    return s.layers.keys() if s.layers is not None else (s.key,)


def owner(widget_key: str) -> tuple[Setting, str, int | None] | None:
    """The setting a widget key belongs to and its role there: ("value", None), ("count", None)
    or ("item", layer index); None for a key that is no widget's."""
    for s in settings().values():
        if s.layers is None:
            if s.key == widget_key:
                return s, "value", None
        elif s.layers.count_key == widget_key:
            return s, "count", None
        elif s.layers.index(widget_key) is not None:
            return s, "item", s.layers.index(widget_key)
    return None


def layer_field(widget_key: str) -> str | None:
    """The list field whose layer widget `widget_key` is ("model.width_2" -> "model.hidden")."""
    found = owner(widget_key)
    return found[0].key if found is not None and found[1] == "item" else None


def page_settings(section: str) -> list[Setting]:
    """The settings of `section` the Train page draws, in the order it draws them."""
    drawn = [(s.place if s.place is not None else i, s) for i, s in enumerate(
        s for key, s in settings().items() if key.startswith(f"{section}."))
        if s.widget not in NOT_ON_PAGE]
    return [s for _, s in sorted(drawn, key=lambda pair: pair[0])]


def flat_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The config's flat values ("model.hidden": (512, 256), ...) the widget values stand for,
    unchecked: what a description's `used` rule reads on the page."""
    out: dict[str, Any] = {}
    for key, s in settings().items():
        if s.layers is not None and s.layers.count_key in values:
            count = int(values[s.layers.count_key])
            out[key] = tuple(values.get(s.layers.item(i)) for i in range(count))
        elif key in values:
            out[key] = values[key]
    return out


def subset_options(num_train: int) -> tuple[int, ...]:
    """The "Training images" choices for a dataset of `num_train` images: the sizes smaller than it
    (a size it cannot fill would train on all and say otherwise), then 0, all of them, the largest
    choice and so the slider's right end."""
    return dataset_options(setting("train.train_subset"), num_train)


def dataset_options(s: Setting, num_train: int) -> tuple:
    """A choice slider's stops; for a setting sized by the dataset, those below `num_train` and 0
    ("all") at the right end."""
    if not s.sized_by_dataset:
        return s.stops
    return (*(o for o in s.stops if 0 < o < num_train), 0)


def formatter(s: Setting, num_train: int = 0) -> Callable[[Any], str]:
    """How the page writes one of the setting's values (an option's words, "all (60,000)", 0.001)."""
    def write(value: Any) -> str:
        if value in s.labels:
            return s.labels[value]
        if s.sized_by_dataset and value == 0:
            return f"all ({num_train:,})"
        return format(value, s.fmt) if s.fmt else str(value)
    return write


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
    described = settings()
    values: dict[str, Any] = {}
    for key, value in config.flat().items():
        layers = described[key].layers if key in described else None
        if layers is None:
            values[key] = value
            continue
        values[layers.count_key] = len(value)
        spare = value[-1] if value else layers.fill
        for i in range(layers.length[1]):
            values[layers.item(i)] = value[i] if i < len(value) else spare
    return values


def config_from_widgets(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """The RunConfig the widget values describe (validated); missing keys keep `base`'s values."""
    base = base or RunConfig()
    changes: dict[str, Any] = {}
    for key, s in settings().items():
        if s.layers is not None and s.layers.count_key in values:
            count = int(values[s.layers.count_key])
            changes[key] = tuple(int(values[s.layers.item(i)]) for i in range(count))
        elif key in values:
            changes[key] = values[key]
    return base.replace(**changes).validate()
