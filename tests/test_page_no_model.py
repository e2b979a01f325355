"""The inspection pages say why there is nothing to show after a run that diverged."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.mark.parametrize("page", ["pages/errors.py", "pages/features.py"])
def test_a_diverged_run_is_explained_on_the_inspection_pages(page, tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.select_slider(key="train.lr").set_value(10.0)
    at.slider(key="train.epochs").set_value(1)
    at.select_slider(key="train.train_subset").set_value(1000)
    at.button(key="train_button").click().run()
    job = at.session_state["job"]
    assert job.wait(180)
    at.run()
    assert job.snapshot().state == "diverged"
    at.switch_page(page).run()
    assert not at.exception
    assert any("diverged" in w.value and "learning rate" in w.value for w in at.warning)
