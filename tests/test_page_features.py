"""AppTest: the Learned features page on an MLP and a CNN trained the way a learner does it."""

from __future__ import annotations

import numpy as np
import pytest
from apphelpers import chart_keys, chart_spec, plotly_array, start_app, train_run

EPOCHS = 2


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        at = start_app(mp, tmp_path_factory.mktemp("dllab"), timeout=120)
        at.switch_page("app_pages/features.py").run()
        assert not at.exception
        assert any("No trained model yet" in i.value for i in at.info)
        train_run(at, epochs=EPOCHS, subset=1000)
        at.switch_page("app_pages/features.py").run()
        assert not at.exception
        yield at


def test_mlp_weight_grid(app):
    at = app
    assert at.slider(key="features.units").value == 32
    nonnan = np.isfinite(plotly_array(chart_spec(at, "features.grid")["data"][0]["z"])).sum()
    assert nonnan == 32 * 28 * 28
    at.slider(key="features.units").set_value(64).run()
    assert not at.exception
    spec = chart_spec(at, "features.grid")
    assert np.isfinite(plotly_array(spec["data"][0]["z"])).sum() == 64 * 28 * 28
    assert spec["data"][0]["colorscale"][0][1] != spec["data"][0]["colorscale"][-1][1]
    assert spec["data"][0]["zmin"] == -spec["data"][0]["zmax"]
    at.radio(key="features.sort").set_value("index").run()
    assert not at.exception
    labels = [a["text"] for a in chart_spec(at, "features.grid")["layout"]["annotations"]]
    assert labels == [str(i) for i in range(64)]
    at.radio(key="features.sort").set_value("norm").run()


def test_epoch_slider_covers_every_epoch(app):
    at = app
    slider = at.slider(key="features.epoch")
    assert (slider.min, slider.max, slider.value) == (0, EPOCHS, EPOCHS)
    before = plotly_array(chart_spec(at, "features.grid")["data"][0]["z"])
    slider.set_value(0).run()
    assert not at.exception
    spec = chart_spec(at, "features.grid")
    assert "before training" in spec["layout"]["title"]["text"]
    assert not np.array_equal(np.nan_to_num(before), np.nan_to_num(plotly_array(spec["data"][0]["z"])))
    at.slider(key="features.epoch").set_value(EPOCHS).run()


def test_one_image_through_the_network(app):
    at = app
    at.number_input(key="features.image").set_value(1999).run()
    assert not at.exception
    keys = chart_keys(at)
    assert "features.probs" in keys and "features.act.0" in keys and "features.maps" not in keys
    probs = plotly_array(chart_spec(at, "features.probs")["data"][0]["y"])
    assert len(probs) == 10 and probs.sum() == pytest.approx(1.0, abs=1e-4)
    table = next(d.value for d in at.dataframe if "zeros" in d.value.columns)
    assert list(table["layer"]) == ["1: Linear", "2: ReLU", "4: Linear", "5: ReLU", "7: Linear"]


def test_cnn_kernels_and_feature_maps(app):
    at = app
    train_run(at, epochs=1, subset=300, kind="cnn", channels_0=8, channels_1=8)
    at.switch_page("app_pages/features.py").run()
    assert not at.exception
    keys = chart_keys(at)
    assert {"features.kernels", "features.maps", "features.probs"} <= set(keys)
    assert "features.grid" not in keys
    kernels = plotly_array(chart_spec(at, "features.kernels")["data"][0]["z"])
    assert np.isfinite(kernels).sum() == 8 * 3 * 3  # all 8 kernels of 3x3
    assert at.slider(key="features.epoch").max == 1
    assert any("only 8 kernels" in c.value for c in at.caption)
