"""Tests for dlcore.numbers: the one rule for counts, percentages, times and losses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlcore.numbers import as_text, change, count, loss, number, percent, seconds

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("value", "text"), [
    (535818, "535,818"), (421642, "421,642"), (10000, "10,000"), (999, "999"), (0, "0"),
    (535818.0, "535,818"), (np.int64(60000), "60,000"), (np.float64(1437.0), "1,437"),
    (2.6, "3"), (-1200, "-1,200"), (None, "—"), (NAN, "—"), (pd.NA, "—"), ("many", "—"),
])
def test_count(value, text):
    assert count(value) == text


@pytest.mark.parametrize(("value", "digits", "text"), [
    (0.9575, 2, "95.75%"), (1, 2, "100.00%"), (0, 2, "0.00%"), (0.98765, 1, "98.8%"),
    (0.5, 0, "50%"), (np.float32(0.25), 2, "25.00%"), (None, 2, "—"), (NAN, 2, "—"),
    (0.98123, 2, "98.12%"), (INF, 2, "—"),
])
def test_percent(value, digits, text):
    assert percent(value, digits) == text


@pytest.mark.parametrize(("value", "text"), [
    (0, "0 s"), (0.0004, "< 0.001 s"), (0.0452, "0.045 s"), (0.25, "0.250 s"), (4.523, "4.52 s"),
    (12.34, "12.3 s"), (1234.5, "1,234 s"), (NAN, "—"), (None, "—"), (-1, "—"),
])
def test_seconds(value, text):
    assert seconds(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (2.3067166805267334, "2.3067"), (0.0, "0.0000"), (0.00012, "0.0001"),
    (12345.67, "12,345.7"), (306252160.0, "306 million"), (1101644288.0, "1.1 billion"),
    (64566344.0, "64.6 million"), (2.5e12, "2.5 trillion"), (999.6e6, "1 billion"),
    (3e18, "3.0 × 10¹⁸"), (1e-5, "1.0 × 10⁻⁵"), (-1.5e9, "-1.5 billion"),
    (NAN, "not a number"), (INF, "infinite"), (-INF, "-infinite"), (None, "—"),
])
def test_loss_stays_readable_at_any_size(value, text):
    assert loss(value) == text


def test_number_decimals():
    assert number(0.123456, 2) == "0.12"
    assert number(0.001, 2) == "1.0 × 10⁻³"  # two places would read 0.00


def test_change_has_an_ascii_sign_and_none_when_not_finite():
    assert change(2.3067, 1.8473) == "-0.4594"
    assert change(1.0, 1.5) == "+0.5000"
    assert change(306252160.0, 64566344.0) == "-242 million"
    assert change(2.3, 1101644288.0) == "+1.1 billion"
    assert change(2.3, NAN) is None and change(INF, 2.3) is None and change(None, 1.0) is None


def test_as_text_formats_only_the_named_columns():
    frame = pd.DataFrame({"layer": ["Linear", "Linear"], "parameters": [401920, 2570],
                          "accuracy": [0.9575, NAN]})
    text = as_text(frame, {"parameters": count, "accuracy": percent})
    assert text["parameters"].tolist() == ["401,920", "2,570"]
    assert text["accuracy"].tolist() == ["95.75%", "—"]
    assert text["layer"].tolist() == ["Linear", "Linear"]
    assert frame["parameters"].tolist() == [401920, 2570]  # the frame given is left as it was

