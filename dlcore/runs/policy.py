"""A class's rules for students' runs, set by the teacher on the server: fixed settings and caps.

A fixed setting has one value for every student (the Train page shows it, disabled); a cap is the
largest value a student may pick (for a layer list, the widest layer). The time cap,
`max_job_seconds`, binds everyone's runs, the teacher's too. The rules live on the server: the page
draws them, and `JobManager.submit` refuses a student's run that breaks them, whatever a link or a
crafted request said.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlcore.engine.config import (
    ConfigError,
    RunConfig,
    layer_field,
    list_widgets,
    setting,
    setting_label,
)

MAX_JOB_SECONDS_ENV = "DLLAB_MAX_JOB_SECONDS"

# The settings a teacher may cap, in the order the Class page shows them, and how each cap reads to
# a student: its label in its description (a layer list's cap is on its widest layer, so it reads
# as the list's `each_label`).
CAPPED: tuple[str, ...] = ("train.epochs", "train.batch_size", "model.hidden", "model.conv_channels",
                           "model.dense")


def cap_label(key: str) -> str:
    """How the cap on setting `key` reads: "Epochs", "Width of a hidden layer"."""
    s = setting(key)
    return s.layers.each_label if s.layers is not None and s.layers.each_label else s.label


CAPS: dict[str, str] = {key: cap_label(key) for key in CAPPED}

# The settings a teacher may fix: every setting of the Train page but the dataset and device
# (chosen in the sidebar).
FIXABLE: tuple[str, ...] = tuple(k for k in RunConfig().flat() if k not in ("train.dataset",
                                                                              "train.device"))


class PolicyError(ValueError):
    """A run that breaks the class's rules; the message lists each rule it breaks."""


def max_job_seconds_from_env() -> float | None:
    """`DLLAB_MAX_JOB_SECONDS`: the longest a run may take (unset or empty: no cap). ValueError
    with one line naming the variable when it is not a positive number."""
    raw = os.environ.get(MAX_JOB_SECONDS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{MAX_JOB_SECONDS_ENV}={raw!r} is not a positive number of seconds")
    return value


def _largest(value: Any) -> float:
    return max(value, default=0) if isinstance(value, tuple) else value


def _capped(value: Any, cap: float) -> Any:
    if isinstance(value, tuple):
        return tuple(min(v, int(cap)) for v in value)
    return type(value)(min(value, cap))


@dataclass(frozen=True)
class ClassPolicy:
    """Fixed settings (flat config keys, as `RunConfig.flat()` names them) and caps (keys of CAPS)."""

    fixed: Mapping[str, Any] = field(default_factory=dict)
    caps: Mapping[str, float] = field(default_factory=dict)
    max_job_seconds: float | None = None

    def validate(self) -> ClassPolicy:
        """The policy itself checked: known keys, fixed values a config accepts, caps >= 1."""
        unknown = [k for k in self.fixed if k not in FIXABLE] + [k for k in self.caps if k not in CAPS]
        if unknown:
            raise PolicyError(f"not a setting the class rules can hold: {', '.join(unknown)}")
        try:
            RunConfig().replace(**dict(self.fixed)).validate()
        except (ConfigError, TypeError, ValueError) as exc:
            raise PolicyError(f"a fixed value is not allowed: {exc}") from None
        for key, cap in self.caps.items():
            if not isinstance(cap, (int, float)) or isinstance(cap, bool) or not cap >= 1:
                raise PolicyError(f"the cap on {CAPS[key].lower()} must be a number of at least 1")
        if self.max_job_seconds is not None and not (
                math.isfinite(self.max_job_seconds) and self.max_job_seconds > 0):
            raise PolicyError("the longest run must be a positive number of seconds")
        return self

    @property
    def binds_students(self) -> bool:
        return bool(self.fixed or self.caps)

    def apply(self, config: RunConfig) -> RunConfig:
        """`config` as the class rules make it: fixed values set, capped values lowered."""
        flat = config.flat()
        changes = dict(self.fixed)
        for key, cap in self.caps.items():
            if key not in changes and _largest(flat[key]) > cap:
                changes[key] = _capped(flat[key], cap)
        return config.replace(**changes) if changes else config

    def broken_rules(self, config: RunConfig) -> list[str]:
        """Each rule `config` breaks, in words for the student."""
        flat = config.flat()
        broken = [f"{setting_label(key)} is fixed at {_show(value)} by your teacher (this run has "
                  f"{_show(flat[key])})"
                  for key, value in self.fixed.items() if flat[key] != value]
        broken += [f"{CAPS[key].lower()} may be at most {_show(cap)} (this run has "
                   f"{_show(_largest(flat[key]))})"
                   for key, cap in self.caps.items() if _largest(flat[key]) > cap]
        return broken

    def check(self, config: RunConfig) -> None:
        """Raise PolicyError listing every rule `config` breaks."""
        broken = self.broken_rules(config)
        if broken:
            raise PolicyError("This run breaks the class's rules: " + "; ".join(broken) + ".")

    def fixed_widgets(self) -> frozenset[str]:
        """The Train page's widget keys whose values are fixed (a layer list is its count and
        every width)."""
        keys: set[str] = set()
        groups = list_widgets()
        for key in self.fixed:
            keys.update(groups.get(key, (key,)))
        return frozenset(keys)

    def widget_cap(self, widget_key: str) -> float | None:
        """The largest value the Train page's widget `widget_key` may take (None: no cap)."""
        return self.caps.get(layer_field(widget_key) or widget_key)

    def slider_range(self, widget_key: str, low: float, high: float) -> tuple[float, float]:
        """A slider's range (`low`, `high`) under the class's cap on its widget."""
        cap = self.widget_cap(widget_key)
        return (low, high) if cap is None else (low, max(low, min(high, type(high)(cap))))

    def describe(self) -> list[str]:
        """One line per rule, for the page that shows students what is fixed."""
        lines = [f"{setting_label(key)}: {_show(value)}" for key, value in self.fixed.items()]
        lines += [f"{CAPS[key]} at most {_show(cap)}" for key, cap in self.caps.items()]
        if self.max_job_seconds is not None:
            lines.append(f"a run may take at most {_show(self.max_job_seconds)} s")
        return lines


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(_show(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:,}" if isinstance(value, int) else str(value)
