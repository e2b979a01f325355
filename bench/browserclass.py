"""A class in a real browser: one Streamlit server for app.py, one Chromium, N sessions driving it.

Shared by bench/classroom.py and bench/server_memory.py; nothing here asserts a time.

- `Server` starts `streamlit run app.py` as a subprocess (a free port, headless, the environment
  plus overrides such as DLLAB_HOME, DLLAB_MAX_JOBS, DLLAB_RUNNER), waits for /_stcore/health, keeps
  its output in a log file, and reads its memory: `rss()` is the server process alone,
  `children_rss()` the sum over its child processes (where a process runner trains).
- `Browser` launches one Chromium (Debian's, through playwright, with the browser test's arguments);
  `Browser.open_session` opens a page in its own browser context, so each page is a separate
  Streamlit session, as separate students would be.
- `Session` drives the Train page as tests/test_browser.py does: sliders moved with the keyboard,
  Train clicked, and the run's end read from the page. It also listens to the page's websocket
  (Streamlit's protobuf messages) to count full script runs and fragment reruns as the server
  finished them.

How "settled" is told: every setting of the Train page is written into the URL shown in the
"Copy link to these settings" code block, which the server draws in the same script run that read
the new widget value. So once that block's URL holds the slider's new value, the server has rerun
the page with it and the browser has drawn the result. The slider's own value says nothing (the
browser moves it at once), and Streamlit's status widget or the app's "running" state are no
good while a class trains, because the live panel's fragment reruns every 0.9 s anyway. (The link
is drawn under the left column's controls, before the right column's live panel and layer table,
so the end of that same rerun may come a moment later; what a learner sees answer their move is
the page showing the new setting, and that is what is timed.)

Keyboard moves of a slider can come back: with several arrow presses in a row, a rerun has been
seen to bring an intermediate value back after the link had shown the final one (a class run
trained 5 epochs where 1 was set). `Session.set_and_settle` therefore checks that the value is
still there 1.5 s later and sets it again if not, noting it in `Session.reverted`.

When a run ended is recorded inside each page (a 100 ms timer in the page notes the time the status
line first reads "Finished.", or another end state), so a session's time does not depend on when
this single-threaded script got round to looking at it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1600}
MB = 1024 * 1024
# Lines of the server's output worth showing after a benchmark.
PROBLEM = re.compile(r"Traceback|Error|Exception|Warning|Killed|exited", re.IGNORECASE)


class HarnessError(RuntimeError):
    """A step of the harness did not happen in time; the message says which, and for which session."""


def gave_up_errors() -> tuple[type[BaseException], ...]:
    """What a benchmark reports as "gave up" rather than a crash: ours and playwright's timeouts."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    return HarnessError, PlaywrightTimeout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing() -> str | None:
    """Why a browser benchmark cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"Debian's chromium is not at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ------------------------------------------------------------------------------------------ server


class Server:
    """`streamlit run app.py` in a subprocess; use as a context manager so it is always stopped.

    `env` holds overrides of this process's environment (a value of None removes the variable);
    `options` are Streamlit config options passed on the command line, e.g.
    {"runner.postScriptGC": "false"} (they win over .streamlit/config.toml).
    """

    def __init__(self, app_dir: Path | str = ROOT, env: Mapping[str, str | None] | None = None,
                 options: Mapping[str, str] | None = None, log_path: Path | str | None = None) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.env = dict(env or {})
        self.options = dict(options or {})
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="dllab-server-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._ps: psutil.Process | None = None
        self._known_children: dict[int, psutil.Process] = {}

    def start(self, timeout: float = 90.0) -> str:
        env = {**os.environ}
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                   "--server.port", str(self.port), "--server.address", "127.0.0.1",
                   "--browser.gatherUsageStats", "false",
                   # the checkout may be edited while a bench serves it: a file change would make
                   # Streamlit evict and re-import modules under the running sessions
                   "--server.fileWatcherType", "none"]
        for key, value in self.options.items():
            command += [f"--{key}", str(value)]
        log = self.log_path.open("wb")
        try:
            self.proc = subprocess.Popen(command, cwd=self.app_dir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self._ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"the Streamlit server exited with {self.proc.returncode}: "
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.3)
        raise HarnessError(f"the Streamlit server did not answer /_stcore/health in {timeout:.0f} s: "
                           + self.log_tail())

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        """Resident memory of the server process itself, in bytes (0 once it has exited)."""
        try:
            return self._ps.memory_info().rss if self._ps is not None else 0
        except psutil.Error:
            return 0

    def children(self) -> list[psutil.Process]:
        if self._ps is None:
            return []
        try:
            found = self._ps.children(recursive=True)
        except psutil.Error:
            return []
        for child in found:
            self._known_children.setdefault(child.pid, child)
        return found

    def children_rss(self) -> tuple[int, int]:
        """(sum of resident memory over the server's child processes in bytes, how many there are)."""
        total, count = 0, 0
        for child in self.children():
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
                count += 1
        return total, count

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_text()[-chars:]

    def problems(self, limit: int = 30) -> list[str]:
        """Lines of the server's output that look like errors or warnings (the first `limit`)."""
        lines = [line for line in self.log_text().splitlines() if PROBLEM.search(line)]
        return lines[:limit]

    def stop(self) -> None:
        """Terminate the server and any child process it started (each by its id), then kill
        whatever is left after 10 s."""
        if self.proc is None:
            return
        self.children()  # remember them before the parent goes
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        leftovers = [c for c in self._known_children.values() if _running(c)]
        for child in leftovers:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, alive = psutil.wait_procs(leftovers, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class CpuAccount:
    """CPU seconds the machine spent busy since `start()`, and how many of them were not ours (this
    process and everything it started: the server, its workers, Chromium, playwright's driver). On a
    shared machine the second figure says how far other people's work blurred a timing."""

    def __init__(self) -> None:
        self.start()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)

    @staticmethod
    def _ours() -> float:
        total = 0.0
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = process.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def start(self) -> None:
        self.started, self.busy0, self.ours0 = time.monotonic(), self._busy(), self._ours()

    def read(self) -> tuple[float, float, float]:
        """(seconds elapsed, busy CPU seconds, busy CPU seconds of other processes)."""
        busy = self._busy() - self.busy0
        return time.monotonic() - self.started, busy, max(0.0, busy - (self._ours() - self.ours0))

    def line(self) -> str:
        elapsed, busy, foreign = self.read()
        cores = psutil.cpu_count() or 1
        return (f"CPU over {elapsed:.0f} s on {cores} cores: {busy:.0f} s busy, of which {foreign:.0f} s "
                f"by processes not started here ({100 * foreign / max(elapsed * cores, 1e-9):.0f}% of "
                "the machine)")


def cpu_by_kind() -> dict[str, float]:
    """CPU seconds (user + system) of this process's descendants so far, by kind: Chromium's
    renderers, the rest of Chromium, the Streamlit server, its training processes, and the rest
    (playwright's driver, headless runs). Processes that have exited count for nothing."""
    out = {"Chromium renderers": 0.0, "other Chromium": 0.0, "server": 0.0,
           "training processes": 0.0, "other": 0.0}
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.cmdline())
            times = process.cpu_times()
            if "--type=renderer" in command:
                kind = "Chromium renderers"
            elif "chrom" in process.name().lower():
                kind = "other Chromium"
            elif "streamlit" in command:
                kind = "server"
            elif "multiprocessing" in command:
                kind = "training processes"
            else:
                kind = "other"
            out[kind] += times.user + times.system
    return out


def cpu_by_kind_line(before: Mapping[str, float]) -> str:
    """Where the CPU went since `before` (a `cpu_by_kind()`), in CPU seconds."""
    now = cpu_by_kind()
    return "CPU seconds by process: " + ", ".join(f"{kind} {now[kind] - before.get(kind, 0.0):.1f}"
                                                  for kind in now)


def wait_for_quiet(max_wait: float, share: float = 0.15, window: float = 5.0) -> str:
    """Wait (at most `max_wait` s) until other processes use under `share` of the machine's CPU over
    `window` seconds; returns a line saying how busy it was when the wait ended."""
    deadline = time.monotonic() + max_wait
    cores = psutil.cpu_count() or 1
    while True:
        account = CpuAccount()
        time.sleep(window)
        elapsed, _, foreign = account.read()
        used = foreign / (elapsed * cores)
        if used < share:
            return f"machine quiet: other processes used {100 * used:.0f}% of the CPU over {window:.0f} s"
        if time.monotonic() > deadline:
            return (f"machine still busy after waiting {max_wait:.0f} s: other processes used "
                    f"{100 * used:.0f}% of the CPU over {window:.0f} s; timings will be blurred")


# ----------------------------------------------------------------------------------------- browser

# Installed in each page: notes the Train page's status line every 100 ms, and once armed, the
# time (Date.now(), ms) training started and the run ended; the status of the run before (shown
# when it was armed) counts for nothing until the page shows another.
WATCHER_JS = """() => {
  if (window.__dllab) return;
  const END = [['Finished.', 'finished'], ['Stopped', 'stopped'], ['Diverged', 'diverged'],
               ['Training failed', 'failed']];
  const w = window.__dllab = {armed: false, armedAt: null, startedAt: null, finishedAt: null,
                              endedAs: null, status: '', stale: null};
  w.look = () => {
    const main = document.querySelector('[data-testid="stMain"]') || document.body;
    const bar = main.querySelector('[data-testid="stProgress"]');
    let status = bar ? bar.textContent.trim() : '';
    if (!status) {  // no progress bar: queued or ended, said in an alert
      const alerts = Array.from(main.querySelectorAll('[data-testid="stAlert"]'),
                                a => a.textContent.trim());
      status = alerts.find(t => t.startsWith('Waiting') || END.some(([p]) => t.startsWith(p)))
               || alerts[alerts.length - 1] || '';
    }
    w.status = status;
    if (!w.armed) return;
    if (w.stale !== null) {  // the status of the run before this one, until the page moves on
      if (status === w.stale) return;
      w.stale = null;
    }
    const now = Date.now();
    if (w.startedAt === null && status.startsWith('Epoch')) w.startedAt = now;
    if (w.finishedAt === null) {
      for (const [p, s] of END) {
        if (status.startsWith(p)) { w.finishedAt = now; w.endedAs = s; break; }
      }
    }
  };
  w.arm = () => {
    w.look();
    Object.assign(w, {armed: true, armedAt: Date.now(), startedAt: null, finishedAt: null,
                      endedAs: null, stale: w.status});
    w.look();
  };
  setInterval(w.look, 100);
}"""

READY_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const train = Array.from(document.querySelectorAll('button')).find(
      b => b.textContent.trim() === 'Train');
  return !!(app && app.getAttribute('data-test-script-state') === 'notRunning' && train &&
            !train.disabled && document.querySelector('[data-testid="stCode"]'));
}"""

# True once the URL in the "Copy link to these settings" block gives `key` the value `expected`
# (a missing parameter means the setting is at its default, `fallback`).
LINK_HOLDS_JS = """([key, expected, fallback]) => {
  const code = document.querySelector('[data-testid="stCode"]');
  if (!code) return false;
  let url;
  try { url = new URL(code.textContent.trim()); } catch (e) { return false; }
  const raw = url.searchParams.get(key);
  const value = raw === null ? fallback : parseFloat(raw);
  return value !== null && Math.abs(value - expected) < 1e-6;
}"""


class Session:
    """One browser context and page on the app: one student's Streamlit session."""

    def __init__(self, page: Any, url: str, index: int) -> None:
        self.page = page
        self.url = url
        self.index = index
        self.full_runs = 0  # script runs the server finished for this session (not fragments)
        self.fragment_runs = 0  # fragment reruns the server ran to their end (or to an st.rerun)
        self.fragment_requests = 0  # fragment reruns the browser asked for
        self.page_errors: list[str] = []
        self.reverted: list[str] = []  # settings that went back after the server had taken them
        page.on("websocket", self._on_websocket)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", self._on_console)

    # -- websocket bookkeeping
    def _on_websocket(self, ws: Any) -> None:
        if not ws.url.endswith("/_stcore/stream"):
            return
        ws.on("framereceived", self._on_received)
        ws.on("framesent", self._on_sent)

    def _on_received(self, payload: bytes | str) -> None:
        if isinstance(payload, str):
            return
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        try:
            message = ForwardMsg.FromString(payload)
        except Exception:  # noqa: BLE001 - a frame we cannot read counts as nothing
            return
        if message.WhichOneof("type") != "script_finished":
            return
        # A fragment run that calls st.rerun() ends FINISHED_EARLY_FOR_RERUN, like a full run cut
        # short; the run's fragment ids (metadata.run, where this Streamlit sends it) tell them apart.
        run = getattr(message.metadata, "run", None)
        fragment = bool(getattr(run, "fragment_ids", None))
        if fragment or message.script_finished == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
            self.fragment_runs += 1
        elif message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
            self.full_runs += 1

    def _on_sent(self, payload: bytes | str) -> None:
        if isinstance(payload, str):
            return
        from streamlit.proto.BackMsg_pb2 import BackMsg

        try:
            message = BackMsg.FromString(payload)
        except Exception:  # noqa: BLE001
            return
        if message.WhichOneof("type") == "rerun_script" and message.rerun_script.fragment_id:
            self.fragment_requests += 1

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.page_errors.append(f"console: {message.text}")

    # -- opening
    def open(self, timeout: float = 120.0, wait: bool = True) -> None:
        """Load the app and (unless `wait` is False: then call `opened` later) wait until the Train
        page is drawn, idle, and Train can be pressed."""
        self.page.goto(self.url, timeout=timeout * 1000)
        if wait:
            self.opened(timeout)

    def opened(self, timeout: float = 120.0) -> None:
        """Wait for the page that `open(wait=False)` loaded to be ready."""
        self.wait_ready(timeout)
        self.page.evaluate(WATCHER_JS)

    def wait_ready(self, timeout: float = 60.0) -> None:
        try:
            self.page.wait_for_function(READY_JS, timeout=timeout * 1000, polling=100)
        except Exception as exc:
            raise HarnessError(f"session {self.index}: the Train page was not ready in {timeout:.0f} s "
                               f"({type(exc).__name__})") from None

    # -- sliders
    def slider(self, label: str) -> Any:
        return self.page.locator(f'input[type="range"][aria-label="{label}"]')

    def slider_value(self, label: str) -> float:
        return float(self.slider(label).get_attribute("value"))

    def move_slider(self, label: str, steps: int) -> float:
        """Press ArrowRight (steps > 0) or ArrowLeft `steps` times on the slider; returns the value
        the browser shows afterwards (the server has not necessarily seen it yet)."""
        slider = self.slider(label)
        slider.focus()
        for _ in range(abs(steps)):
            self.page.keyboard.press("ArrowRight" if steps > 0 else "ArrowLeft")
        return float(slider.get_attribute("value"))

    def _press_until(self, label: str, done: Any, direction: Any, what: str, timeout: float) -> None:
        """Press arrow keys on the slider one at a time (each time waiting up to 2 s for the browser
        to show the move) until `done(slider)`; a key press lost during a rerun is pressed again."""
        slider = self.slider(label)
        deadline = time.monotonic() + timeout
        while not done(slider):
            if time.monotonic() > deadline:
                raise HarnessError(f"session {self.index}: the {label} slider did not reach {what} in "
                                   f"{timeout:.0f} s (it shows {slider.get_attribute('aria-valuetext')})")
            before = slider.get_attribute("value")
            slider.focus()
            self.page.keyboard.press(direction(slider))
            moved_by = time.monotonic() + 2
            while slider.get_attribute("value") == before and time.monotonic() < moved_by:
                self.page.wait_for_timeout(20)

    def set_slider(self, label: str, target: float, timeout: float = 30.0) -> None:
        """Move a numeric slider to `target` by keyboard, one step at a time."""
        def value(slider: Any) -> float:
            return float(slider.get_attribute("value"))

        self._press_until(label, lambda s: abs(value(s) - target) < 1e-9,
                          lambda s: "ArrowRight" if value(s) < target else "ArrowLeft", f"{target:g}",
                          timeout)

    def set_choice(self, label: str, text: str, timeout: float = 30.0) -> int:
        """Move a select_slider to the option shown as `text` by keyboard; returns its index.

        Walks right from where it is and wraps round to the first option (Home) at the end."""
        slider = self.slider(label)
        high = int(float(slider.get_attribute("max")))

        def direction(s: Any) -> str:
            return "Home" if int(float(s.get_attribute("value"))) >= high else "ArrowRight"

        self._press_until(label, lambda s: s.get_attribute("aria-valuetext") == text, direction,
                          repr(text), timeout)
        return int(float(slider.get_attribute("value")))

    def set_and_settle(self, label: str, target: float | str, key: str, value: float, default: float,
                       timeout: float = 120.0) -> None:
        """Set a slider (a number) or a select_slider (an option's text) by keyboard and wait until
        the server has it (the settings link gives `key` the value `value`). A value the browser
        shows but the server never took (a key press lost in a rerun, the slider redrawn with an
        older value) is set again."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(1.0, deadline - time.monotonic())
            if isinstance(target, str):
                self.set_choice(label, target, left)
            else:
                self.set_slider(label, target, left)
            try:
                self.wait_link(key, value, default, min(15.0, left))
                # Seen with keyboard moves: a later rerun brings an intermediate value back
                # after the link showed the final one. Only a value that stays counts.
                self.page.wait_for_timeout(1500)
                if self.page.evaluate(LINK_HOLDS_JS, [key, value, default]):
                    return
                self.reverted.append(f"{label}: the link showed {value:g}, 1.5 s later {self.link()!r}")
                if time.monotonic() > deadline:
                    raise HarnessError(f"session {self.index}: {label} would not stay at {target}")
            except HarnessError:
                if time.monotonic() > deadline:
                    shown = self.slider(label).get_attribute("aria-valuetext")
                    raise HarnessError(f"session {self.index}: the server did not take {label} = "
                                       f"{target} in {timeout:.0f} s (the slider shows {shown}, the "
                                       f"link {self.link()!r})") from None

    # -- the link block: the settled signal
    def link(self) -> str:
        code = self.page.locator('[data-testid="stCode"]').first
        return (code.text_content(timeout=5_000) or "").strip()

    def wait_link(self, key: str, expected: float, default: float | None, timeout: float = 30.0) -> float:
        """Seconds until the settings link gives `key` the value `expected` (a missing parameter
        standing for `default`); raises HarnessError after `timeout`."""
        started = time.perf_counter()
        try:
            self.page.wait_for_function(LINK_HOLDS_JS, arg=[key, expected, default],
                                        timeout=timeout * 1000)
        except Exception:
            raise HarnessError(f"session {self.index}: the settings link did not show {key}="
                               f"{expected:g} within {timeout:.0f} s") from None
        return time.perf_counter() - started

    # -- training
    def arm(self) -> None:
        """From now on, note when training starts and when the run ends (see WATCHER_JS)."""
        self.page.evaluate("() => window.__dllab.arm()")

    def press_train(self) -> float:
        """Click Train (in the page's own script, so that a class's clicks take milliseconds, not
        playwright's actionability round trips); returns the wall-clock time just before it."""
        pressed = time.time()
        clicked = self.page.evaluate("""() => {
          const b = Array.from(document.querySelectorAll('button')).find(
              b => b.textContent.trim() === 'Train');
          if (!b || b.disabled) return false;
          b.click();
          return true;
        }""")
        if not clicked:
            raise HarnessError(f"session {self.index}: no enabled Train button to press")
        return pressed

    def watch(self) -> dict[str, Any]:
        """The page's watcher state: status (text), startedAt/finishedAt (s, epoch) or None, endedAs."""
        state = self.page.evaluate(
            "() => { const w = window.__dllab; w.look(); return {status: w.status, "
            "startedAt: w.startedAt, finishedAt: w.finishedAt, endedAs: w.endedAs}; }")
        for key in ("startedAt", "finishedAt"):
            if state[key] is not None:
                state[key] = state[key] / 1000
        return state

    def wait_full_run(self, after: int, timeout: float) -> None:
        """Wait until the server has finished more than `after` full script runs of this session."""
        deadline = time.monotonic() + timeout
        while self.full_runs <= after:
            if time.monotonic() > deadline:
                raise HarnessError(f"session {self.index}: no script run finished within {timeout:.0f} s")
            self.page.wait_for_timeout(50)  # lets playwright deliver the websocket events

    def screenshot(self, path: Path | str) -> None:
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(path), timeout=15_000)


class Browser:
    """One Chromium for every session; a context manager that always closes it."""

    def __init__(self, executable: str = CHROMIUM, args: list[str] | None = None) -> None:
        self.executable = executable
        self.args = list(CHROMIUM_ARGS if args is None else args)
        self._playwright: Any = None
        self.browser: Any = None
        self.sessions: list[Session] = []

    def start(self) -> Browser:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=self.executable, args=self.args)
        return self

    def open_session(self, url: str) -> Session:
        """A new browser context (its own cookies: a separate Streamlit session) with one page."""
        context = self.browser.new_context(viewport=VIEWPORT)
        session = Session(context.new_page(), url, len(self.sessions) + 1)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        if self.browser is not None:
            with contextlib.suppress(Exception):
                self.browser.close()
            self.browser = None
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                self._playwright.stop()
            self._playwright = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a bench that serves the app: its runner, slots, GC, environment, checkout."""
    parser.add_argument("--runner", help="DLLAB_RUNNER for the server (default: the app's own)")
    parser.add_argument("--max-jobs", type=int, default=1, help="DLLAB_MAX_JOBS for the server")
    parser.add_argument("--gc", choices=("on", "off"),
                        help="force Streamlit's runner.postScriptGC (default: .streamlit/config.toml)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="another environment variable for the server (repeatable)")
    add_wait_quiet(parser)
    parser.add_argument("--app-dir", type=Path, default=ROOT, help="the checkout whose app.py to serve")


def add_wait_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for other processes to leave the CPU alone")


def begin(args: argparse.Namespace) -> int | None:
    """What every browser bench does first: say why it cannot run (returning the exit code 2), or
    stop cleanly on SIGTERM and wait for a quiet machine if --wait-quiet asks."""
    if reason := missing():
        print(f"cannot run: {reason}")
        return 2
    exit_on_sigterm()
    if args.wait_quiet > 0:
        print(wait_for_quiet(args.wait_quiet))
    return None


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the `with` blocks stop the server and the browser."""
    import signal

    def _raise(signum: int, frame: object) -> None:
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


def mb(n_bytes: float) -> str:
    return f"{n_bytes / MB:.0f} MB"


def gave_up(exc: BaseException, server: Server, browser: Browser) -> int:
    """Say why a bench gave up, with the server's and the pages' problems; the exit code, 1."""
    print(f"gave up: {type(exc).__name__}: {str(exc)[:500]}")
    for line in problems_report(server, browser.sessions):
        print(line)
    return 1


def problems_report(server: Server, sessions: Iterable[Session], limit: int = 15) -> list[str]:
    """Lines to print after a benchmark: the server's error-looking output and the pages' errors."""
    lines = []
    found = server.problems(limit)
    if found:
        lines.append(f"server output ({server.log_path}), lines that look like problems:")
        lines += [f"  {line}" for line in found]
    for session in sessions:
        for error in session.page_errors[:3]:
            lines.append(f"session {session.index} page error: {error[:300]}")
    return lines
