"""AppTest: the Try it yourself page, with no model and with one trained the way a learner does."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from apphelpers import chart_spec, plotly_array, start_app, train_run
from PIL import ImageFile
from test_preprocess import blank_png, stroke_image

from dlcore.runs.run_view import view_from_result
from dlcore.views import draw as preprocess
from dlcore.views.draw import decode_image, image_to_png, predict, to_mnist


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """The app after a 1-epoch run pressed on the Train page, switched to the draw page."""
    with pytest.MonkeyPatch.context() as mp:
        at = start_app(mp, tmp_path_factory.mktemp("dllab"))
        job = train_run(at, epochs=1, subset=3000)
        at.switch_page("app_pages/draw.py").run()
        assert not at.exception, at.exception
        yield at, job


def test_no_run_shows_the_message(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    at.switch_page("app_pages/draw.py").run()
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


def test_a_4096_square_upload_is_refused_from_its_header_with_a_message(trained, monkeypatch):
    at, _ = trained
    at.radio(key="draw.source").set_value("upload").run()

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    at.file_uploader(key="draw.upload").set_value(("huge.png", blank_png(4096, 4096), "image/png"))
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "huge.png cannot be used" in errors[0], errors
    assert "too large: 4096x4096 pixels; the limit is 4,000,000" in errors[0]
    assert at.session_state["draw.input"] is None
    at.run()  # a rerun says it again, from the session's note of the upload
    assert [e.value for e in at.error] == errors and not at.exception
    at.file_uploader(key="draw.upload").set_value(None).run()
    assert not at.error and not at.exception


def test_an_upload_is_decoded_once_not_on_every_rerun(trained, monkeypatch):
    at, _ = trained
    at.radio(key="draw.source").set_value("upload").run()
    calls = []
    decode = preprocess.decode_image

    def counted(*args, **kwargs):
        calls.append(1)
        return decode(*args, **kwargs)
    monkeypatch.setattr(preprocess, "decode_image", counted)
    data = image_to_png(stroke_image())
    at.file_uploader(key="draw.upload").set_value(("seven.png", data, "image/png")).run()
    assert not at.exception, at.exception
    expected = to_mnist(decode(data))
    assert torch.equal(at.session_state["draw.input"], expected)
    assert len(at.get("image")) == 1 and at.get("plotly_chart")
    for _ in range(3):
        at.run()
    assert len(calls) == 1
    assert torch.equal(at.session_state["draw.input"], expected)
    other = image_to_png(stroke_image(kind="line"))
    at.file_uploader(key="draw.upload").set_value(("line.png", other, "image/png")).run()
    assert len(calls) == 2 and torch.equal(at.session_state["draw.input"], to_mnist(decode(other)))
    at.file_uploader(key="draw.upload").set_value(None).run()
