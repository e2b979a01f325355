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
import time
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser, streamlit_server

pytestmark = pytest.mark.browser

TITLES = ("Train", "Learned features", "Errors", "Random Forest baseline", "Experiments",
          "Lessons", "Try it yourself", "Class")
MODULES = ("app", "common", "baseline", "draw", "features", "experiments", "lessons", "train",
           "errors")


def test_a_deep_link_on_a_fresh_server_shows_the_apps_navigation(tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    with streamlit_server(tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/experiments")
            page.get_by_role("heading", name="Experiments").first.wait_for(timeout=60_000)
            nav = page.locator('[data-testid="stSidebarNav"]')
            nav.wait_for(timeout=30_000)
            time.sleep(1)  # a later message could still replace the list
            # Each link's label, without its icon (a Material icon is a word in the DOM: "draw")
            shown = [t.strip() for t in nav.locator('[data-testid="stSidebarNavLink"] span[label]')
                     .all_inner_texts() if t.strip()]
            assert all(title in shown for title in TITLES), shown
            assert not set(shown) & set(MODULES), shown
            # app.py ran: its sidebar (the device panel) is there
            page.get_by_text("Training on:").first.wait_for(timeout=30_000)
            assert page.get_by_text("Page not found").count() == 0
        finally:
            shots = Path(os.environ.get("DLLAB_SCREENSHOT_DIR", "/tmp"))
            page.screenshot(path=str(shots / "dllab-deeplink.png"))
            browser.close()
