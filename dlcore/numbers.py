"""How the app writes a number for a learner: one rule for every page, readable on a projector.

- `count(n)`: a whole number with thousands separators, "535,818" (parameters, images, nodes).
- `percent(x)`: a fraction as a percentage, "95.75%" (accuracies).
- `seconds(s)`: a measured time in seconds, "12.3 s", "0.045 s", "1,234 s".
- `number(x)`: a measured quantity of any size (a loss, a norm): "2.3026", "12,345.7",
  "306 million", "1.2 × 10¹⁸", "3.0 × 10⁻⁷"; "not a number" and "infinite" where it is not finite.
  `loss(x)` is `number` for a loss, `change(before, after)` the signed difference of two.
- `as_text(frame, formats)`: a table's columns written by these, for st.dataframe.

A missing value (None or NaN where a number was expected) is written "—". Separators are always
"," and the decimal point "." (the same on every machine, unlike the browser's locale).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

MISSING = "—"
NOT_A_NUMBER = "not a number"
INFINITE = "infinite"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_WORDS = ((1e6, "million"), (1e9, "billion"), (1e12, "trillion"))


def _float(x: Any) -> float | None:
    """`x` as a float, None when it is missing (None, NaN, pandas' NA) or not a number at all."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def count(n: Any) -> str:
    """A whole number with thousands separators: 535818 -> "535,818" (floats are rounded)."""
    value = _float(n)
    if value is None:
        return MISSING
    if math.isinf(value):
        return INFINITE if value > 0 else f"-{INFINITE}"
    return f"{round(value):,}"


def percent(x: Any, digits: int = 2) -> str:
    """A fraction as a percentage: 0.9575 -> "95.75%" (`digits` after the point)."""
    value = _float(x)
    if value is None or math.isinf(value):
        return MISSING
    return f"{value * 100:,.{digits}f}%"


def seconds(s: Any) -> str:
    """A time in seconds, to about three figures: "0.045 s", "4.52 s", "12.3 s", "1,234 s"."""
    value = _float(s)
    if value is None or math.isinf(value) or value < 0:
        return MISSING
    if value == 0:
        return "0 s"
    if value < 0.001:
        return "< 0.001 s"
    if value < 1:
        return f"{value:.3f} s"
    if value < 10:
        return f"{value:.2f} s"
    if value < 100:
        return f"{value:.1f} s"
    return f"{value:,.0f} s"


def _power_of_ten(value: float) -> str:
    """'1.2 × 10¹⁸': two significant figures and a superscript exponent."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa} × 10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def number(x: Any, decimals: int = 4) -> str:
    """A measured quantity readable at any size.

    Below 1,000: `decimals` places ("2.3026"); below a million: one place with separators
    ("12,345.7"); below 10¹⁵: three figures and a word ("306 million", "1.1 billion"); beyond,
    and below 10⁻`decimals` where the places would read 0: a power of ten ("1.2 × 10¹⁸").
    NaN is "not a number", ±inf "infinite" / "-infinite"; None is "—".
    """
    if x is None:
        return MISSING
    try:
        value = float(x)
    except (TypeError, ValueError):
        return MISSING
    if math.isnan(value):
        return NOT_A_NUMBER
    if math.isinf(value):
        return INFINITE if value > 0 else f"-{INFINITE}"
    size, sign = abs(value), "-" if value < 0 else ""
    if size == 0:
        return f"{0:.{decimals}f}"
    if size < 0.5 * 10.0 ** -decimals:
        return sign + _power_of_ten(size)
    if size < 1000:
        return f"{value:.{decimals}f}"
    if size < 999_999.95:
        return f"{value:,.1f}"
    for scale, word in _WORDS:
        if size / scale < 999.5:
            return f"{sign}{size / scale:.3g} {word}"
    return sign + _power_of_ten(size)


def loss(x: Any) -> str:
    """A loss: `number` with four decimals ("2.3026", "306 million", "not a number")."""
    return number(x, 4)


def change(before: Any, after: Any, decimals: int = 4) -> str | None:
    """`after - before` with its sign ("-0.4593", "+1.1 billion"), None when either is not finite.

    The sign is ASCII "+" or "-": st.metric reads a delta that starts with "-" as going down.
    """
    a, b = _float(before), _float(after)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    diff = b - a
    text = number(diff, decimals)
    return text if diff < 0 else f"+{text}"


def as_text(frame: pd.DataFrame, formats: Mapping[str, Callable[[Any], str]]) -> pd.DataFrame:
    """A copy of `frame` with each column named in `formats` written by its function."""
    out = frame.copy()
    for column, write in formats.items():
        out[column] = [write(v) for v in frame[column]]
    return out
