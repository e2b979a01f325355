"""AppTest: the Try it yourself page, with no model and with one trained the way a learner does."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from apphelpers import chart_spec, plotly_array, start_app, train_run

from dlcore.inspection import view_from_result
from dlcore.preprocess import decode_image, image_to_png, predict, to_mnist


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """The app after a 1-epoch run pressed on the Train page, switched to the draw page."""
    with pytest.MonkeyPatch.context() as mp:
        at = start_app(mp, tmp_path_factory.mktemp("dllab"))
        job = train_run(at, epochs=1, subset=3000)
        at.switch_page("pages/draw.py").run()
        assert not at.exception, at.exception
        yield at, job


def test_no_run_shows_the_message(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
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
    bars = plotly_array(chart_spec(at, "draw.probs")["data"][0]["y"])
    assert len(bars) == 10 and abs(bars.sum() - 1) < 1e-4
    assert int(bars.argmax()) == int(probs.argmax())
    np.testing.assert_allclose(bars, probs, atol=1e-5)
    word = dataset.classes[int(probs.argmax())]
    assert any(f"The network says **{word}**" in m.value for m in at.markdown)
    seen = plotly_array(chart_spec(at, "draw.seen")["data"][0]["z"])
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
