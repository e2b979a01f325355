"""The Train page's form: its widgets, derived from the settings' descriptions
(dlcore.engine.config.settings()), and the same values as a link's URL query parameters.

Shared by the Train, Lessons and Class pages and the sidebar (app.py): the one exception to "a view
module is its page's alone", because a link, a lesson's config and a class's hide list all speak
the Train page's widget keys.

Widgets: their keys and values as a flat dict, to and from a RunConfig, and what each draws. Widget
keys are config field names ("train.lr", "model.dropout"), except that a list field's widgets are a
count and one value per layer ("model.n_hidden" and "model.width_0"...; its description's
`layers`). Keeping this here lets tests reach it without a browser, and lets links and presets
speak the same keys.

Links: the parameter names are the widget keys. A link names only the settings that differ from
RunConfig()'s defaults, so `config_from_query(config_to_query(c))` gives back `c` (its dataset and
device aside: those are the sidebar's). `train.dataset=digits` sets the sidebar's dataset when the
link opens (the device stays the server's). `hide=model.n_hidden,train.lr` is a teacher's classroom
link: those controls are drawn fixed (greyed out) at the link's values. Unknown or malformed
parameters are ignored, each with a note naming it: a line of markdown in which what the link said
is quoted as a code span and the rest escaped (dlcore.text), so a link cannot put its own markup on
the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urljoin

from dlcore.engine.config import (
    ConfigError,
    RunConfig,
    Setting,
    list_widgets,
    owner,
    setting,
    settings,
)
from dlcore.text import markdown_code, markdown_literal

# Kept for callers that name them; each is a description's choice slider stops.
WIDTH_OPTIONS: tuple[int, ...] = setting("model.dense").stops
CHANNEL_OPTIONS: tuple[int, ...] = setting("model.conv_channels").stops
LR_OPTIONS: tuple[float, ...] = setting("train.lr").stops
BATCH_OPTIONS: tuple[int, ...] = setting("train.batch_size").stops
WEIGHT_DECAY_OPTIONS: tuple[float, ...] = setting("train.weight_decay").stops
SUBSET_OPTIONS: tuple[int, ...] = setting("train.train_subset").stops
NOT_ON_PAGE = (None, "sidebar")  # widget kinds the Train page does not draw


LIST_WIDGETS: dict[str, tuple[str, ...]] = list_widgets()


def widget_keys(s: Setting) -> tuple[str, ...]:
    """The widget keys that stand for setting `s`."""
    return s.layers.keys() if s.layers is not None else (s.key,)


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

# ---------------------------------------------------------------- links: the URL's query parameters

HIDE = "hide"
DATASET = "train.dataset"  # a link's dataset goes to the sidebar's selector, not to a Train control


def sidebar_keys() -> tuple[str, ...]:
    """The settings chosen in the sidebar, not by the Train page's controls (dataset, device)."""
    return tuple(key for key, s in settings().items() if s.widget == "sidebar")


def defaults() -> dict[str, Any]:
    """Every widget key and its value for the default config."""
    return widget_values(RunConfig())


def query_keys() -> tuple[str, ...]:
    """The parameters a link may name: every widget key but the sidebar's."""
    sidebar = sidebar_keys()
    return tuple(k for k in defaults() if k not in sidebar)


def no_widget() -> tuple[str, ...]:
    """Settings a link may name that the Train page draws no control for."""
    return tuple(key for key, s in settings().items() if s.widget is None)


def control_keys() -> tuple[str, ...]:
    """The Train page's controls: what a classroom link may show fixed."""
    skip = set(no_widget())
    return tuple(k for k in query_keys() if k not in skip)


def hide_groups() -> dict[str, tuple[str, ...]]:
    """A hide name that stands for a group of controls: a list field's count and layers."""
    return list_widgets()


def hide_choices() -> tuple[str, ...]:
    """What a teacher picks from to fix in a link: each setting once, a list by its group name."""
    groups = hide_groups()
    grouped = {k for keys in groups.values() for k in keys}
    return tuple(sorted([*groups, *(k for k in control_keys() if k not in grouped)]))


# Snapshots of the above for the app's settings, for callers that name them.
SIDEBAR_KEYS: tuple[str, ...] = sidebar_keys()
DEFAULTS: dict[str, Any] = defaults()
QUERY_KEYS: tuple[str, ...] = query_keys()
NO_WIDGET: tuple[str, ...] = no_widget()
CONTROL_KEYS: tuple[str, ...] = control_keys()
HIDE_GROUPS: dict[str, tuple[str, ...]] = hide_groups()
HIDE_CHOICES: tuple[str, ...] = hide_choices()
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _relevant(key: str, values: dict[str, Any]) -> bool:
    """Whether the config holds this widget value (a width beyond the layer count does not)."""
    found = owner(key)
    if found is None or found[1] != "item":
        return True
    s, _, index = found
    return index < values[s.layers.count_key]


def config_to_query(config: RunConfig, hide: Iterable[str] = ()) -> dict[str, str]:
    """The query parameters of a link to `config`: every setting that differs from the defaults."""
    values, default = widget_values(config), defaults()
    query = {key: _format(values[key]) for key in query_keys()
             if _relevant(key, values) and values[key] != default[key]}
    hide = sorted(set(hide))
    if hide:
        query[HIDE] = ",".join(hide)
    return query


def _last(raw: str | list[str]) -> str:
    if isinstance(raw, (list, tuple)):
        return str(raw[-1]) if raw else ""
    return str(raw)


def _parse(key: str, text: str) -> Any:
    """The widget value `text` stands for; ValueError says in words why it cannot be one."""
    default = defaults()[key]
    text = text.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("not true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError("not a whole number") from None
    if isinstance(default, float):
        try:
            value = float(text)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value
    return text


def _check(key: str, value: Any, base: RunConfig) -> None:
    """Raise ValueError when the Train page cannot show `value` for `key`: outside its slider (a
    layer count outside the list's length), or a value the config refuses."""
    s, role, _ = owner(key) or (setting(key), "value", None)
    if role == "count" or (role == "value" and s.widget == "slider"):
        low, high = s.slider_range
        if not low <= value <= high:
            raise ValueError(f"out of range; allowed {low:g} to {high:g}")
    if role == "count":
        return
    probe = {s.key: (value,) if role == "item" else value}
    try:
        base.replace(**probe).validate()
    except ConfigError as exc:
        message = str(exc).split(": ", 1)[-1] if str(exc).startswith(s.key) else str(exc)
        raise ValueError(message) from None


def config_from_query(params: Mapping[str, str | list[str]], base: RunConfig | None = None
                      ) -> tuple[RunConfig, list[str]]:
    """The RunConfig a link's parameters describe, and a note (markdown, safe to show) for each
    parameter ignored.

    Settings the link does not name (or names badly) keep `base`'s values (default RunConfig());
    a repeated parameter counts by its last value, as st.query_params reads it. `hide` is read by
    `hidden_from_query`, not here.
    """
    base = base or RunConfig()
    values = widget_values(base)
    notes: list[str] = []
    for key, raw in params.items():
        if key in (HIDE, DATASET):  # read by hidden_from_query and dataset_from_query
            continue
        text = _last(raw)
        if key in sidebar_keys():
            notes.append(f"{markdown_code(key)}: chosen in the sidebar, not by a link")
            continue
        if key not in query_keys():
            notes.append(f"{markdown_code(key)}: not a setting of this app")
            continue
        try:
            value = _parse(key, text)
            _check(key, value, base)
        except ValueError as exc:
            notes.append(f"{markdown_code(f'{key}={text}')}: {markdown_literal(exc)}")
            continue
        values[key] = value
    try:
        return config_from_widgets(values, base), notes
    except ConfigError as exc:  # each value passed on its own; together they should too
        return base, [*notes, f"the link's settings do not fit together ({markdown_literal(exc)}); "
                              "defaults used"]


def hidden_from_query(params: Mapping[str, str | list[str]]) -> tuple[frozenset[str], list[str]]:
    """The Train page controls a link's `hide=a,b` names (groups expanded), and notes for the rest."""
    if HIDE not in params:
        return frozenset(), []
    hidden: set[str] = set()
    notes = []
    groups, controls = hide_groups(), control_keys()
    for name in (n.strip() for n in _last(params[HIDE]).split(",")):
        if not name:
            continue
        if name in groups:
            hidden.update(groups[name])
        elif name in controls:
            hidden.add(name)
        else:
            notes.append(f"{markdown_code(f'hide={name}')}: not a control of the Train page")
    return frozenset(hidden), notes


def dataset_from_query(params: Mapping[str, str | list[str]]) -> tuple[str | None, list[str]]:
    """The dataset a link names for the sidebar (None when it names none), and a note when the
    name is not one of the app's datasets."""
    if DATASET not in params:
        return None, []
    name = _last(params[DATASET]).strip()
    names = setting(DATASET).options
    if name in names:
        return name, []
    return None, [f"{markdown_code(f'{DATASET}={name}')}: not a dataset of this app (one of "
                  f"{', '.join(names)})"]


def hide_names(hidden: Iterable[str]) -> list[str]:
    """The shortest `hide` list for a set of hidden controls (whole groups by their group name)."""
    hidden = set(hidden)
    names = []
    for group, keys in hide_groups().items():
        if set(keys) <= hidden:
            names.append(group)
            hidden -= set(keys)
    return sorted([*names, *hidden])


def link_params(config: RunConfig, hidden: Iterable[str] = (), dataset: str | None = None
                ) -> dict[str, str]:
    """What the Train page writes into the URL: the settings, the sidebar's `dataset` when it is
    not the default, and the classroom link's `hide`."""
    params = config_to_query(config, hide_names(hidden))
    if dataset is not None and dataset != RunConfig().train.dataset:
        params[DATASET] = dataset
    return params


def train_page_url(page_url: str | None) -> str | None:
    """The Train page's address from another page's ("http://host:8501/classroom" ->
    "http://host:8501/"): the Train page is the app's default page, at its root."""
    return urljoin(page_url, ".") if page_url else page_url


def should_apply(params: Mapping[str, Any], first_visit: bool) -> bool:
    """Whether the URL carries a link to apply: only on the session's first visit to the Train
    page, and only when it is not empty. A link opens a new browser session; after that the URL
    holds what the Train page wrote, and the query string a rerun brings back can be a write or two
    behind (a slider moved while the page was rerunning): applied, it put the slider back."""
    return first_visit and bool(params)


def link_url(base: str | None, params: Mapping[str, str]) -> str:
    """The shareable link: the page's address (when known) and the query string."""
    query = urlencode(params, safe=",")
    return (base or "") + (f"?{query}" if query else "")
