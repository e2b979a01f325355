"""The app in a real browser: press Train, watch the curve grow, move a slider, see the run finish.

Needs Debian's Chromium at /usr/bin/chromium and the playwright package. Where they are missing the
test skips with the reason, except under CI (the CI variable set), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


def _missing() -> str | None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return "Debian's chromium is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_browser() -> None:
    """Skip the test where Chromium or playwright is missing (fail under CI, which has them)."""
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)


@contextmanager
def streamlit_server(home: Path, **env: str | None) -> Iterator[str]:
    """A new `streamlit run app.py` on a free port with DLLAB_HOME=home and `env` (None removes a
    variable); nothing has asked it anything but its health, which runs no script."""
    port = _free_port()
    environ = {**os.environ, "DLLAB_HOME": str(home)}
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail("the Streamlit server did not start: "
                                + proc.stdout.read().decode()[-2000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    with streamlit_server(tmp_path_factory.mktemp("dllab-home")) as url:
        yield url


# Points in a plot's first trace, as plotly.js drew them (arrays may arrive base64-encoded).
POINTS_JS = "const POINTS = p => (p._fullData && p._fullData[0] && p._fullData[0]._length) || 0;"
CURVE_POINTS = """() => {
  """ + POINTS_JS + """
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  const batch = plots.filter(p => p.layout && p.layout.title &&
                                  String(p.layout.title.text || '').includes('Training loss'));
  return Math.max(0, ...batch.map(POINTS));
}"""


# The step of the loss curve's last point: the curve is downsampled to a few hundred points, so its
# point count can shrink while training goes on; its last step only grows.
CURVE_LAST_STEP = """() => {
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p =>
      p.layout && p.layout.title && String(p.layout.title.text || '').includes('Training loss'));
  const steps = plots.map(p => {
    const d = p._fullData && p._fullData[0];
    return d && d._length ? Number(d.x[d._length - 1]) : 0;
  });
  return Math.max(0, ...steps);
}"""


EPOCH_POINTS = """() => {
  """ + POINTS_JS + """
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p =>
      p.layout && (p.layout.annotations || []).some(a => String(a.text).includes('loss per epoch')));
  return Math.max(0, ...plots.map(POINTS));
}"""


class FullRuns:
    """Full runs of the page's script that the server finished, read off the page's websocket
    (fragment runs, and runs cut short by st.rerun, not counted)."""

    def __init__(self, page) -> None:
        self.count = 0
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws) -> None:
        if ws.url.endswith("/_stcore/stream"):
            ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, str):
            return
        message = ForwardMsg.FromString(payload)
        if (message.WhichOneof("type") == "script_finished"
                and message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY):
            self.count += 1


def test_train_in_the_browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            _drive(page, server)
        finally:
            shots = Path(os.environ.get("DLLAB_SCREENSHOT_DIR", "/tmp"))
            page.screenshot(path=str(shots / "dllab-train.png"))
            browser.close()


def _drive(page, server: str) -> None:
    full_runs = FullRuns(page)
    page.goto(server)
    page.get_by_text("Train a network").wait_for(timeout=60_000)
    page.get_by_text("535,818").wait_for(timeout=30_000)

    epochs = page.locator('[data-testid="stSlider"]').filter(has_text="Epochs").get_by_role("slider")
    epochs.focus()
    for _ in range(2):  # 10 -> 8 epochs: short, yet long enough to move a slider during the run
        page.keyboard.press("ArrowLeft")
    page.wait_for_function("el => el.value === '8'", arg=epochs.element_handle(), timeout=30_000)
    time.sleep(1)  # let the rerun that the slider asked for finish

    runs_before_train = full_runs.count
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("samples/s").first.wait_for(timeout=60_000)

    # Move a slider at once, while the run has most of its way to go (on a quiet machine the
    # whole run takes a few seconds: a slider moved later found it finished, seen in CI).
    dropout = page.locator('[data-testid="stSlider"]').filter(has_text="Dropout").get_by_role("slider")
    before = dropout.input_value()
    dropout.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    deadline = time.monotonic() + 30
    while dropout.input_value() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dropout.input_value() != before, "the Dropout slider did not move"
    moved_to = dropout.input_value()
    # The slider's rerun may redraw the chart, so it can be absent for a moment: wait for it.
    moved_at, deadline = 0, time.monotonic() + 10
    while moved_at <= 0 and time.monotonic() < deadline:
        moved_at = page.evaluate(CURVE_LAST_STEP)
        time.sleep(0.2)
    assert moved_at > 0, "the loss curve was not drawn after the slider moved"
    assert page.get_by_text("Finished.").count() == 0, "the run ended before the slider moved"

    # While the run trains, the loss curve gains points and the per-epoch figure gains epochs
    # (it is not only drawn once the run has finished).
    seen, during = [], []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and page.get_by_text("Finished.").count() == 0 and (
            len({n for n in seen if n > 0}) < 3 or len({n for n in during if 0 < n < 8}) < 2):
        seen.append(page.evaluate(CURVE_POINTS))
        during.append(page.evaluate(EPOCH_POINTS))
        time.sleep(0.2)
    counts = sorted({n for n in seen if n > 0})
    assert len(counts) >= 3, f"the loss curve did not gain points over time: {seen}"
    assert len({n for n in during if 0 < n < 8}) >= 2, (
        f"the per-epoch figure did not grow while the run trained: {during}")

    page.get_by_text("Finished.").first.wait_for(timeout=240_000)
    # The whole page is run again when the run changes state (Train, its end) and for the slider,
    # not at each epoch: a redraw costs the same for a run of any length.
    page.wait_for_timeout(500)
    full = full_runs.count - runs_before_train
    assert 0 < full <= 5, f"{full} full runs of the page for one 8-epoch run"
    final_step = page.evaluate(CURVE_LAST_STEP)
    assert final_step > moved_at, "training did not go on after the slider moved"
    deadline = time.monotonic() + 20  # the chart may draw a moment after the status line
    while page.evaluate(EPOCH_POINTS) < 8 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert page.evaluate(EPOCH_POINTS) == 8, "the run did not reach its last epoch"
    assert dropout.input_value() == moved_to, "the slider lost the value set during training"
