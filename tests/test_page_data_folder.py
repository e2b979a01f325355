"""AppTest: a data folder that cannot be read is one note, never a traceback.

The folder is the class's, set on the Class page; the note is read from a new session's first run
(in AppTest, a rerun of this app leaves the sidebar block empty)."""

from __future__ import annotations

import os

from apphelpers import APP
from streamlit.testing.v1 import AppTest

from dlcore.text import markdown_literal


def test_a_symlink_loop_as_the_data_folder_is_one_note(tmp_path, monkeypatch):
    loop = tmp_path / "a"
    os.symlink(tmp_path / "b", loop)
    os.symlink(loop, tmp_path / "b")
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DLLAB_TEACHER_KEY", raising=False)
    teacher = AppTest.from_file(APP, default_timeout=180)  # no key, on the server's machine
    teacher.switch_page("app_pages/classroom.py").run()
    teacher.text_input(key="class.data_dir").input(str(loop)).run()
    assert not teacher.exception, teacher.exception

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    notes = [w.value for w in at.sidebar.warning]
    assert notes == [markdown_literal(f"The data folder {loop} cannot be opened: Too many levels "
                                      "of symbolic links. Using the bundled MNIST sample instead.")
                     + " Press **Download** below, or set the class's data folder on the **Class** "
                       "page."]
    for page in ("app_pages/experiments.py", "app_pages/draw.py", "app_pages/train.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)


def test_the_dataset_selector_says_which_are_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    options = at.sidebar.selectbox(key="dataset").options
    assert "Fashion-MNIST (not downloaded)" in options and "MNIST (not downloaded)" in options
    assert "scikit-learn digits (8x8)" in options


def test_the_sidebar_says_what_was_loaded_and_from_where(tmp_path, monkeypatch):
    """The sidebar's "In use" line: the dataset's title, its train and test image counts, and the
    folder its files were read from."""
    from test_data import make_mnist

    make_mnist(tmp_path / "d" / "MNIST" / "raw")  # 30 train and 12 test images
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DLLAB_TEACHER_KEY", raising=False)
    teacher = AppTest.from_file(APP, default_timeout=180)
    teacher.switch_page("app_pages/classroom.py").run()
    teacher.text_input(key="class.data_dir").input(str(tmp_path / "d")).run()
    assert not teacher.exception, teacher.exception

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    assert not at.sidebar.warning
    source = markdown_literal(f"folder {tmp_path / 'd' / 'MNIST' / 'raw'}")
    in_use = [c.value for c in at.sidebar.caption if c.value.startswith("**In use:**")]
    assert in_use == [f"**In use:** MNIST — 30 train / 12 test images; source: {source}"]
