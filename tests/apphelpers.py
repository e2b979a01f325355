"""Helpers for the AppTest tests of the pages: the app's path, the charts a page drew, and a run
pressed on the Train page the way a learner does it.

The test modules import it as `from apphelpers import ...` (tests/ has no __init__.py, so pytest
puts tests/ on sys.path)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dlcore.runs.jobs import TrainingJob

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def chart_spec(at: AppTest, key: str) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, f"no single chart with key {key}"
    return json.loads(charts[0].proto.spec)


def chart_keys(at: AppTest) -> list[str]:
    return [c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")]


def plotly_array(value) -> np.ndarray:
    """A plotly JSON array: a plain list, or plotly 6's base64 typed array."""
    if isinstance(value, dict) and "bdata" in value:
        shape = [int(n) for n in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.array(value, dtype=float)


def unescape(markdown: str) -> str:
    """The text CommonMark shows for backslash-escaped markdown (word joiners are invisible)."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def shown_literally(markdown: str, text: str) -> bool:
    """`text` is in the element's markdown only escaped: shown as typed, never as markup."""
    return text not in markdown and text in unescape(markdown)


def click_train(at: AppTest, state: str = "finished") -> TrainingJob:
    """Press Train with the settings the page has now, wait for the run, and check how it ended."""
    at.button(key="train_button").click().run()
    job = at.session_state["job"]
    assert job.wait(180)
    at.run()
    assert job.snapshot().state == state, job.snapshot().message
    return job


def train_run(at: AppTest, epochs: int = 1, subset: int = 1000, lr: float | None = None,
              state: str = "finished", **model) -> TrainingJob:
    """Press Train on the Train page with these settings and wait for the run to end as `state`.

    `model` sets the page's `model.*` controls: `kind` (a radio, applied first) and select sliders
    such as `channels_0=8`."""
    at.switch_page("app_pages/train.py").run()
    if "kind" in model:
        at.radio(key="model.kind").set_value(model.pop("kind")).run()
    for key, value in model.items():
        at.select_slider(key=f"model.{key}").set_value(value)
    if lr is not None:
        at.select_slider(key="train.lr").set_value(lr)
    at.slider(key="train.epochs").set_value(epochs)
    at.select_slider(key="train.train_subset").set_value(subset)
    return click_train(at, state)


def start_app(mp: pytest.MonkeyPatch, home: Path, timeout: float = 180) -> AppTest:
    """The app, run once on its first page, with DLLAB_HOME=home set through `mp` (a test's
    monkeypatch, or a module fixture's `pytest.MonkeyPatch.context()`)."""
    mp.setenv("DLLAB_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    return at
