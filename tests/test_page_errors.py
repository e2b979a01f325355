"""AppTest: the Errors page on a run trained the way a learner does it (bundled MNIST sample)."""

from __future__ import annotations

import numpy as np
import pytest
from apphelpers import chart_spec, plotly_array, start_app, train_run

from dlcore.engine.metrics import cell_indices, most_confused


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        at = start_app(mp, tmp_path_factory.mktemp("dllab"), timeout=120)
        train_run(at)
        result = at.session_state["job"].snapshot().result
        at.switch_page("app_pages/errors.py").run()
        assert not at.exception
        yield at, result


def test_no_run_shows_the_info(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path, timeout=120)
    at.switch_page("app_pages/errors.py").run()
    assert not at.exception
    assert any("No trained model yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_confusion_matrix_counts_and_rows(trained):
    at, result = trained
    at.radio(key="errors.normalize").set_value("counts").run()
    z = plotly_array(chart_spec(at, "errors.confusion")["data"][0]["z"])
    test_y = at.session_state["job"].dataset.test_y.numpy()
    assert z.shape == (10, 10)
    assert z.sum() == len(test_y) == 2000
    assert np.trace(z) == (result.test_pred == test_y).sum()
    at.radio(key="errors.normalize").set_value("rows").run()
    assert not at.exception
    z = plotly_array(chart_spec(at, "errors.confusion")["data"][0]["z"])
    assert np.allclose(z.sum(1), 1.0)
    at.radio(key="errors.normalize").set_value("counts").run()


def test_default_cell_is_the_most_confused_pair(trained):
    at, result = trained
    dataset = at.session_state["job"].dataset
    y = dataset.test_y.numpy()
    top = most_confused(y, result.test_pred, dataset.classes, top=1).iloc[0]
    assert at.selectbox(key="errors.true").value == top["true"]
    assert at.selectbox(key="errors.pred").value == top["predicted"]
    expected = cell_indices(y, result.test_pred, int(top["true_index"]), int(top["pred_index"]))
    assert at.session_state["errors.gallery_indices"] == expected[:60].tolist()
    assert any(c.value.startswith(f"{len(expected)} images: true {top['true']}, predicted "
                                  f"{top['predicted']}") for c in at.caption)


def test_choosing_a_cell_shows_exactly_its_images(trained):
    at, result = trained
    dataset = at.session_state["job"].dataset
    y, classes = dataset.test_y.numpy(), dataset.classes
    matrix = np.zeros((10, 10), int)
    np.add.at(matrix, (y, result.test_pred), 1)
    np.fill_diagonal(matrix, -1)
    full = np.unravel_index(np.argmax(matrix), matrix.shape)
    empty = np.argwhere(matrix == 0)[0]
    for t, p in (full, (3, 3), empty):
        at.selectbox(key="errors.true").set_value(classes[t])
        at.selectbox(key="errors.pred").set_value(classes[p]).run()
        assert not at.exception
        expected = cell_indices(y, result.test_pred, int(t), int(p))
        assert at.session_state["errors.gallery_indices"] == expected[:60].tolist()
        assert any(c.value.startswith(f"{len(expected)} images: true {classes[t]}, "
                                      f"predicted {classes[p]}") for c in at.caption)
    assert any("this cell is empty" in i.value for i in at.info)


def test_scores_tables_and_accuracy(trained):
    at, result = trained
    classes = at.session_state["job"].dataset.classes
    frames = [d.value for d in at.dataframe]
    scores = next(f for f in frames if "precision" in f.columns)
    assert len(scores) == len(classes) and list(scores["class"]) == list(classes)
    assert {"recall", "f1", "support"} <= set(scores.columns) and scores["support"].sum() == 2000
    pairs = next(f for f in frames if "predicted" in f.columns)
    assert 0 < len(pairs) <= 10 and pairs["count"].is_monotonic_decreasing
    accuracy = next(m for m in at.metric if m.label == "Test accuracy")
    assert accuracy.value == f"{result.final.test_acc:.2%}"
