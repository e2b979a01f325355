"""AppTest: a data folder typed in the sidebar that cannot be read is one note, never a traceback.

(The folder is put in session state before the first run: in AppTest, a rerun of this app leaves
the sidebar block empty, so the sidebar's widgets cannot be driven after the first run.)"""

from __future__ import annotations

import os

from apphelpers import APP
from streamlit.testing.v1 import AppTest


def test_a_symlink_loop_as_the_data_folder_is_one_note(tmp_path, monkeypatch):
    loop = tmp_path / "a"
    os.symlink(tmp_path / "b", loop)
    os.symlink(loop, tmp_path / "b")
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["data_dir"] = str(loop)
    at.run()
    assert not at.exception, at.exception
    notes = [w.value for w in at.sidebar.warning]
    assert notes == [f"The data folder {loop} cannot be opened: Too many levels of symbolic "
                     "links. Using the bundled MNIST sample instead."], notes
    for page in ("pages/experiments.py", "pages/draw.py", "pages/train.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
