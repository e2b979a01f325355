"""What one setting is: its description, kept beside its field in `dlcore.engine.config` (the field's
`metadata["setting"]`), and the checks of a value that follow from it.

A description holds everything the app says or decides about a setting: its label and help text,
the widget the Train page draws for it (with options, a slider's range or a choice slider's stops),
its validation range or choices, when a run uses it (shown or drawn disabled otherwise) and, for a
list field, the count and per-layer widgets that stand for it (its hide group). Validation, the
widgets, the URL, the CLI flags, the classroom's hide groups and the lessons' run tables are all
derived from it (`dlcore.engine.config.settings()` lists them). Nothing here imports the config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Condition = Callable[[Mapping[str, Any]], bool]
# The widgets the Train page can draw; "sidebar": chosen in the sidebar, not on the Train page;
# None: no widget (the setting lives in configs, links and flags only).
WIDGETS = ("radio", "selectbox", "slider", "choice_slider", "toggle", "checkbox", "number",
           "sidebar", None)


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def missing(value: Any) -> bool:
    """Whether a stored value is absent: None or NaN (a run recorded before its field existed)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def used_if(key: str, *wanted: Any) -> Condition:
    """A run uses the setting when `key` has one of `wanted` (or is not known: taken as used)."""
    def rule(values: Mapping[str, Any]) -> bool:
        value = values.get(key)
        return missing(value) or value in wanted
    return rule


@dataclass(frozen=True)
class Layers:
    """A list field's widgets: a count slider and one choice slider per layer. Its keys form the
    field's hide group, named by the field's key."""

    count_key: str  # "model.n_hidden"
    count_label: str  # "Hidden layers"
    item_key: str  # "model.width_{i}"
    item_label: str  # "Width of hidden layer {n}" (n counts from 1)
    length: tuple[int, int]  # how many layers a config may have
    item_range: tuple[int, int]  # what one layer's value may be
    noun: str  # what the items are, for messages: "hidden layer widths"
    fill: int | None = None  # an unused slider's value when the list is empty
    each_label: str = ""  # any one layer, for a cap on the widest: "Width of a hidden layer"

    def item(self, i: int) -> str:
        """The widget key of layer `i` (from 0)."""
        return self.item_key.format(i=i)

    def keys(self) -> tuple[str, ...]:
        """Every widget key: the count, then one per possible layer."""
        return (self.count_key, *(self.item(i) for i in range(self.length[1])))

    def index(self, widget_key: str) -> int | None:
        """The layer a widget key stands for (None: not one of this list's layer widgets)."""
        prefix = self.item_key.split("{", 1)[0]
        tail = widget_key[len(prefix):]
        if widget_key.startswith(prefix) and tail.isdigit() and int(tail) < self.length[1]:
            return int(tail)
        return None


@dataclass(frozen=True, eq=False)
class Setting:
    """One setting's description. `key` and `default` are filled in by `dlcore.engine.config.settings()`
    from the field it describes."""

    label: str  # the learner's name for it, in tables and messages
    help: str = ""  # more words: the CLI flag's help, and the widget's where the page shows one
    widget: str | None = None  # one of WIDGETS
    widget_label: str = ""  # the widget's label where it says more than `label`
    options: tuple = ()  # the only values allowed (a choice)
    labels: Mapping[Any, str] = field(default_factory=dict)  # an option's words on the page
    range: tuple[float, float] | None = None  # the values allowed, ends included
    zero: str = ""  # 0 is allowed too (outside `range`) and means this
    slider: tuple[float, float] | None = None  # a slider's range where narrower than `range`
    step: float | None = None  # a slider's step
    stops: tuple = ()  # a choice slider's values
    fmt: str = ""  # how the page writes a value (a format spec: "g", ",")
    sized_by_dataset: bool = False  # choices are sizes below the dataset's, and 0 is "all"
    used: Condition | None = None  # when a run uses it (None: always); else the page hides it
    idle_help: str = ""  # ... or, with this, draws it disabled and says why
    place: float | None = None  # where the page draws it (default: its field's position)
    layers: Layers | None = None  # a list field's widgets
    key: str = ""
    default: Any = None

    @property
    def page_label(self) -> str:
        """The widget's label."""
        return self.widget_label or self.label

    @property
    def slider_range(self) -> tuple[float, float]:
        """A slider's ends: `slider` where given, else the allowed range."""
        found = self.slider or (self.layers.length if self.layers else self.range)
        if found is None:
            raise ValueError(f"{self.key}: no range to draw a slider over")
        return found

    def is_used(self, values: Mapping[str, Any]) -> bool:
        """Whether a run with these flat values ("model.kind": "mlp", ...) uses the setting."""
        return self.used is None or bool(self.used(values))

    def check(self, value: Any) -> None:
        """Raise ConfigError (naming the field and what is allowed) when `value` is not allowed."""
        name = self.key
        if isinstance(self.default, bool):
            _boolean(name, value)
        elif self.options:
            _choice(name, value, self.options)
        elif self.layers is not None:
            low, high = self.layers.length
            if not isinstance(value, tuple) or not low <= len(value) <= high:
                raise ConfigError(name, f"a tuple of between {low} and {high} {self.layers.noun}")
            for i, item in enumerate(value):
                _integer(f"{name}[{i}]", item, *self.layers.item_range)
        elif self.range is None:
            return
        elif self.zero and type(value) is int and value == 0:
            return
        elif isinstance(self.default, int):
            _integer(name, value, *self.range, zero=self.zero)
        else:
            _number(name, value, *self.range)


def describe(label: str, **description: Any) -> dict[str, Setting]:
    """A field's metadata: `field(default=..., metadata=describe("Learning rate", ...))`."""
    return {"setting": Setting(label, **description)}


def _choice(name: str, value: Any, allowed: tuple) -> None:
    # 3.0 == 3 and True == 1: a value of another type is refused even where it compares equal.
    if isinstance(value, bool) or not isinstance(value, type(allowed[0])) or value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(map(str, allowed))}")


def _number(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"{value!r} is not a number; allowed {low:g} to {high:g}")
    if not low <= value <= high:
        raise ConfigError(name, f"{value:g} is out of range; allowed {low:g} to {high:g}")


def _integer(name: str, value: Any, low: int, high: int, zero: str = "") -> None:
    allowed = f"0 ({zero}) or {low} to {high}" if zero else f"{low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"{value!r} is not a whole number; allowed {allowed}")
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is out of range; allowed {allowed}")


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, f"{value!r} is not true or false")
