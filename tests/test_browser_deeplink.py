"""A deep link on a fresh server: the first request of a new server goes straight to
`/experiments`, and the page shows the app's own navigation and sidebar.

Streamlit (1.67) runs a folder named `pages/` beside the main script as an old-style multipage app,
listing every module in it (app, common, ...) and running the page without app.py, until some
session has run app.py's `st.navigation` in that server process (PagesManager.uses_pages_directory,
a class attribute set from the folder's existence alone). That is why the page modules live in
`app_pages/`, not `pages/`.

Needs Debian's Chromium at /usr/bin/chromium and the playwright package; where they are missing
the test skips, except under CI (the CI variable set), where it fails, as tests/test_browser.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, ROOT, _free_port, _missing

pytestmark = pytest.mark.browser

TITLES = ("Train", "Learned features", "Errors", "Random Forest baseline", "Experiments",
          "Lessons", "Try it yourself")
MODULES = ("app", "common", "baseline", "draw", "features", "experiments", "lessons", "train",
           "errors")


@contextmanager
def fresh_server(home: Path) -> Iterator[str]:
    """A new `streamlit run app.py` on a free port that no browser has asked anything yet."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**os.environ, "DLLAB_HOME": str(home)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:  # the health endpoint runs no script: the server stays fresh
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the Streamlit server did not start")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_deep_link_on_a_fresh_server_shows_the_apps_navigation(tmp_path):
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with fresh_server(tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/experiments")
            page.get_by_role("heading", name="Experiments").first.wait_for(timeout=60_000)
            nav = page.locator('[data-testid="stSidebarNav"]')
            nav.wait_for(timeout=30_000)
            time.sleep(1)  # a later message could still replace the list
            links = [t.strip() for t in nav.get_by_role("link").all_inner_texts()]
            shown = [t for t in (line.strip() for text in links for line in text.splitlines()) if t]
            assert all(title in shown for title in TITLES), shown
            assert not set(shown) & set(MODULES), shown
            # app.py ran: its sidebar (the device panel) is there
            page.get_by_text("Training on:").first.wait_for(timeout=30_000)
            assert page.get_by_text("Page not found").count() == 0
        finally:
            shots = Path(os.environ.get("DLLAB_SCREENSHOT_DIR", "/tmp"))
            page.screenshot(path=str(shots / "dllab-deeplink.png"))
            browser.close()
