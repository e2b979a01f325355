"""The server's Streamlit config: the per-run garbage collection stays off, the app stays local,
uploads stay small."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from dlcore.views.draw import MAX_BYTES

ROOT = Path(__file__).resolve().parents[1]


def test_post_script_gc_is_off_with_the_reason_beside_it() -> None:
    text = (ROOT / ".streamlit" / "config.toml").read_text()
    config = tomllib.loads(text)
    assert config["runner"]["postScriptGC"] is False
    assert config["server"]["address"] == "localhost"
    reason = text[text.index("[runner]"):text.index("postScriptGC")]
    assert "gc.collect" in reason and "issue 9" in reason


def test_streamlit_reads_it_as_off_when_started_from_the_project() -> None:
    # Streamlit reads .streamlit/config.toml from the folder it is started in: as the README does.
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('runner.postScriptGC'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_no_pages_folder_beside_app_py() -> None:
    # Streamlit runs a folder named pages/ beside the main script as an old-style multipage app
    # (its own navigation over every module there, pages run without app.py) until a session has
    # called st.navigation: a deep link on a fresh server showed that. The pages live in app_pages/.
    assert not (ROOT / "pages").exists()
    assert (ROOT / "app_pages" / "experiments.py").exists()


def test_uploads_are_capped_at_the_size_the_app_accepts() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    limit = config["server"]["maxUploadSize"] * 1024 * 1024  # Streamlit counts MiB
    assert MAX_BYTES <= limit < 2 * MAX_BYTES
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "server.maxUploadSize" in readme and "Student 7" in readme
    assert "reverse proxy" in readme and "asked once on the Train page" in readme
