"""AppTest: the Try it yourself page, with no model and with one trained the way a learner does."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dlcore.inspection import view_from_result
from dlcore.preprocess import decode_image, image_to_png, predict, to_mnist

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def chart_spec(at: AppTest, key: str) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, f"no single chart with key {key}"
    return json.loads(charts[0].proto.spec)


def array(value) -> np.ndarray:
    """A plotly JSON array: a plain list, or plotly 6's base64 typed array."""
    if isinstance(value, dict) and "bdata" in value:
        shape = [int(n) for n in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.array(value, dtype=float)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The app after a 1-epoch run pressed on the Train page, switched to the draw page."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with other jobs: one thread trains faster
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DLLAB_HOME", str(tmp_path_factory.mktemp("dllab")))
            at = AppTest.from_file(APP, default_timeout=180)
            at.run()
            at.select_slider(key="train.train_subset").set_value(3000)
            at.slider(key="train.epochs").set_value(1)
            at.button(key="train_button").click().run()
            job = at.session_state["job"]
            assert job.wait(180)
            at.run()
            assert job.snapshot().state == "finished", job.snapshot().message
            at.switch_page("pages/draw.py").run()
            assert not at.exception, at.exception
            yield at, job
    finally:
        torch.set_num_threads(threads)


def test_no_run_shows_the_message(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/draw.py").run()
    assert not at.exception
    assert any("No trained model yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_page_renders_with_a_model(trained):
    at, _ = trained
    assert at.title[0].value == "Try it yourself"
    assert at.radio(key="draw.source").value in ("draw", "upload")
    assert at.session_state["draw.input"] is None  # an empty canvas or no upload yet
    assert any("Draw, upload or pick" in i.value for i in at.info)
    at.radio(key="draw.source").set_value("upload").run()
    assert not at.exception
    assert at.session_state["draw.input"] is None


@pytest.mark.parametrize("index", [0, 7])
def test_example_shows_the_models_prediction(trained, index):
    at, job = trained
    at.radio(key="draw.source").set_value("example").run()
    at.selectbox(key="draw.example").set_value(index).run()
    assert not at.exception
    dataset = job.dataset
    raw = dataset.test_x[index]
    expected = to_mnist(decode_image(image_to_png(raw)))
    shown = at.session_state["draw.input"]
    assert torch.equal(shown, expected) and shown.shape == (1, 28, 28)
    assert (shown.int() - raw.int()).abs().float().mean() < 8  # MNIST is already centred

    view = view_from_result(job.snapshot().result, dataset)
    probs = predict(view.model, view.model_input, expected)
    bars = array(chart_spec(at, "draw.probs")["data"][0]["y"])
    assert len(bars) == 10 and abs(bars.sum() - 1) < 1e-4
    assert int(bars.argmax()) == int(probs.argmax())
    np.testing.assert_allclose(bars, probs, atol=1e-5)
    word = dataset.classes[int(probs.argmax())]
    assert any(f"The network says **{word}**" in m.value for m in at.markdown)
    seen = array(chart_spec(at, "draw.seen")["data"][0]["z"])
    np.testing.assert_array_equal(seen[::-1], expected[0].numpy())


def test_without_the_canvas_package_the_page_says_so(trained, monkeypatch):
    at, _ = trained
    monkeypatch.setitem(sys.modules, "streamlit_drawable_canvas", None)  # import fails
    at.radio(key="draw.source").set_value("draw").run()
    assert not at.exception
    assert any("needs the `streamlit-drawable-canvas` package" in i.value for i in at.info)
    assert at.session_state["draw.input"] is None
    at.radio(key="draw.source").set_value("example").run()
    assert not at.exception and at.session_state["draw.input"] is not None
