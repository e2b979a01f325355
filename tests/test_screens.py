"""Every page in a real browser after a short run: a full-page screenshot of each (in the folder
DLLAB_SCREENSHOT_DIR names, else a temporary one), no exception on any page, every plotly chart
on screen with at least one point and a title on each axis it shows, and nothing fetched from
anywhere but the server (a classroom may have no internet).

Needs Debian's Chromium and playwright (skips without them, fails under CI); see test_browser.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser, streamlit_server

pytestmark = pytest.mark.browser

# Sidebar title of each page, and a text that shows once the page has drawn.
PAGES = [("Train", "Train a network"), ("Learned features", "Learned features"),
         ("Errors", "Errors"), ("Random Forest baseline", "Random Forest baseline"),
         ("Experiments", "Experiments"), ("Lessons", "Lessons"), ("Try it yourself", "Try it"),
         ("Class", "Class")]

# Each plotly chart as plotly.js drew it: its title, its points over all traces (a heatmap's rows
# count), and the axes it shows without a title.
CHARTS_JS = r"""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => {
  const layout = p._fullLayout || {};
  const size = d => d._length || (d.z && d.z.length) || (d.x && d.x.length) || 0;
  const points = (p._fullData || []).reduce((n, d) => n + (d.visible === false ? 0 : size(d)), 0);
  const text = t => (t && (typeof t === 'string' ? t : t.text)) || '';
  const untitled = Object.keys(layout).filter(k => /^[xy]axis[0-9]*$/.test(k))
      .filter(k => layout[k].visible !== false && !text(layout[k].title)).sort();
  const notes = (layout.annotations || []).map(a => String(a.text || '')).join(' | ');
  const title = (p.layout && text(p.layout.title)) || notes;  // _fullLayout holds a placeholder
  return {title: title.replace(/<\/?b>/g, ''), points: points, untitled: untitled};
})"""


def settle(page, text: str) -> None:
    """Wait until the page shows `text` and its script run has ended (no running indicator)."""
    page.get_by_text(text, exact=False).first.wait_for(timeout=120_000)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            break
        time.sleep(0.3)
    time.sleep(1.5)  # plotly draws a moment after the script run ends


def screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so the window is made as tall as
    that block for the shot."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(max(height + 50, 1000), 12_000)})
    time.sleep(1.0)  # charts re-lay themselves out to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def check_page(page, name: str, shots: Path, problems: list[str]) -> None:
    screenshot(page, shots / f"screen-{name.lower().replace(' ', '-')}.png")
    for exception in page.locator('[data-testid="stException"]').all_inner_texts():
        problems.append(f"{name}: an exception on the page: {exception[:300]}")
    charts = page.evaluate(CHARTS_JS)
    print(f"{name}: {len(charts)} charts: {[(c['title'], c['points']) for c in charts]}")
    for chart in charts:
        if chart["points"] < 1:
            problems.append(f"{name}: chart {chart['title']!r} has no points")
        if chart["untitled"]:
            problems.append(f"{name}: chart {chart['title']!r} has untitled axes {chart['untitled']}")


def open_page(page, title: str, text: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    settle(page, text)


def test_every_page_after_a_short_run(tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("DLLAB_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with streamlit_server(tmp_path / "home") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        elsewhere: list[str] = []
        page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(
            (url, "data:", "blob:")) else None)
        try:
            page.goto(f"{url}/?train.epochs=2&train.train_subset=3000")
            settle(page, "Train a network")
            page.get_by_role("button", name="Train", exact=True).click()
            page.get_by_text("Finished.").wait_for(timeout=300_000)
            settle(page, "Finished.")
            charts = page.evaluate(CHARTS_JS)
            assert len(charts) >= 2, f"the Train page drew {len(charts)} charts after the run"
            for title, text in PAGES:
                if title != "Train":
                    open_page(page, title, text)
                if title == "Random Forest baseline":
                    page.get_by_role("button", name="Fit forest").click()
                    settle(page, "Side by side")
                if title == "Experiments":  # choose the run: its curves and its actions show
                    page.locator('[data-testid="stMultiSelect"]').filter(
                        has_text="Compare").locator("input").click()
                    page.get_by_role("option").first.click()
                    page.keyboard.press("Escape")
                    settle(page, "Manage a run")
                check_page(page, title, shots, problems)
            # The lesson's diverging run: its loss chart shows the steps up to the blow-up.
            open_page(page, "Lessons", "Lessons")
            page.get_by_role("tab", name="Beginners' mistakes").click()
            page.get_by_role("button", name="Load: learning rate 10").click()
            settle(page, "Train a network")
            page.get_by_role("button", name="Train", exact=True).click()
            page.get_by_text("diverged", exact=False).first.wait_for(timeout=120_000)
            settle(page, "diverged")
            check_page(page, "Train diverged", shots, problems)
        finally:
            browser.close()
    problems += [f"fetched from outside the server: {u[:200]}" for u in sorted(set(elsewhere))]
    assert not problems, "\n".join(problems)
