"""One learner tweaking sliders: what a run costs in the app against the same run headless.

    python -m bench.app_vs_headless [--epochs 3] [--runs 3] [--subset 0] [--wait-quiet 60]

A real Streamlit server for app.py (a fresh DLLAB_HOME, so the default dataset falls back to the
bundled 10k MNIST sample) and one Chromium session (bench/browserclass.py, as bench/classroom.py
uses). The session sets Epochs (and Training images), then presses Train --runs times, one run after
the other, touching nothing else. For each run: seconds from pressing Train until the page shows it
training (the progress bar's first epoch line, drawn by the same fragment run as the loss curve's
first point) and until it shows "Finished". Then the same runs headless (`dlcore.engine.train.train` in a
fresh interpreter on the config the page builds, after one uncounted warm-up run), and:
- Finished in the app against the headless run: the median of each and the difference;
- the median epoch as the app's runs recorded it against the headless epochs.
The browser shares the machine's cores with the server and the training process. Nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from bench.browserclass import (
    ROOT,
    Browser,
    CpuAccount,
    HarnessError,
    Server,
    add_wait_quiet,
    begin,
    gave_up,
    gave_up_errors,
    problems_report,
)
from bench.classroom import app_epoch_seconds, headless_runs, prepare, subset_text


def app_runs(session, runs: int, timeout: float) -> list[tuple[float | None, float]]:
    """(seconds to the first point or None if never seen, seconds to Finished) for each run."""
    out = []
    for i in range(runs):
        session.wait_ready(timeout)
        session.arm()
        pressed = session.press_train()
        deadline = time.monotonic() + timeout
        state = session.watch()
        while state["finishedAt"] is None:
            if time.monotonic() > deadline:
                raise HarnessError(f"run {i + 1} did not finish in {timeout:.0f} s: {state['status']}")
            time.sleep(0.05)
            state = session.watch()
        if state["endedAs"] != "finished":
            raise HarnessError(f"run {i + 1} ended {state['endedAs']}: {state['status'][:200]}")
        started = state["startedAt"] - pressed if state["startedAt"] is not None else None
        out.append((started, state["finishedAt"] - pressed))
        time.sleep(1.0)  # the page's own rerun after the end, as a learner would read the result
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=0,
                        help="Training images (0: all of the bundled sample's 10,000)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take")
    add_wait_quiet(parser)
    args = parser.parse_args()
    if (code := begin(args)) is not None:
        return code
    home = tempfile.mkdtemp(prefix="dllab-one-")
    print(f"one learner, {args.runs} runs of {args.epochs} epochs, training images "
          f"{subset_text(args.subset)}; home {home}")
    server = Server(ROOT, env={"DLLAB_HOME": home, "DLLAB_MAX_JOBS": "1"})
    browser = Browser()
    try:
        server.start()
        browser.start()
        session = browser.open_session(server.url)
        session.open(args.timeout, wait=False)
        prepare(session, args.epochs, args.subset, args.timeout)
        cpu = CpuAccount()
        app = app_runs(session, args.runs, args.timeout)
        print(f"app {cpu.line()}")
        lines = problems_report(server, [session])
    except gave_up_errors() as exc:
        return gave_up(exc, server, browser)
    finally:
        browser.close()
        server.stop()
    for line in lines:
        print(line)
    cpu = CpuAccount()
    headless = headless_runs(ROOT, home, args.runs, args.epochs, args.subset, args.timeout)
    print(f"headless {cpu.line()}")

    seconds = [r["seconds"] for r in headless["runs"]]
    for i, ((started, finished), alone) in enumerate(zip(app, seconds, strict=True), 1):
        first = f"{started:.2f} s" if started is not None else "never seen"
        print(f"run {i}: first point {first}, Finished {finished:.2f} s; headless {alone:.2f} s")
    firsts = [s for s, _ in app if s is not None]
    finished, alone = statistics.median(f for _, f in app), statistics.median(seconds)
    app_epochs = app_epoch_seconds(home)
    headless_epochs = [e for r in headless["runs"] for e in r["epochs"]]
    print()
    if firsts:
        print(f"Train to the curve's first point: median {statistics.median(firsts):.2f} s "
              f"(worst {max(firsts):.2f} s)")
    print(f"Train to Finished: median {finished:.2f} s in the app, {alone:.2f} s headless: "
          f"{finished - alone:+.2f} s")
    if app_epochs and headless_epochs:
        in_app, base = statistics.median(app_epochs), statistics.median(headless_epochs)
        print(f"epoch: median {in_app:.3f} s in the app ({len(app_epochs)} epochs), {base:.3f} s "
              f"headless ({len(headless_epochs)}): {100 * (in_app / base - 1):+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
