"""The inspection pages say why there is nothing to show after a run that diverged."""

from __future__ import annotations

import pytest
from apphelpers import start_app, train_run


@pytest.mark.parametrize("page", ["app_pages/errors.py", "app_pages/features.py"])
def test_a_diverged_run_is_explained_on_the_inspection_pages(page, tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    train_run(at, epochs=1, subset=1000, lr=10.0, state="diverged")
    at.switch_page(page).run()
    assert not at.exception
    assert any("diverged" in w.value and "learning rate" in w.value for w in at.warning)
