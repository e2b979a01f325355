"""A class on one server: N browser sessions press Train at once; how long until all have finished?

    python -m bench.classroom --students 8 --epochs 3 [--subset 0] [--runner process] [--max-jobs 1]
                              [--timeout 300] [--gc on|off] [--env K=V] [--wait-quiet 600]
                              [--screenshots DIR] [--app-dir DIR]

One real Streamlit server for app.py (a fresh temporary DLLAB_HOME, so the default dataset falls back
to the bundled 10k MNIST sample) and one Chromium with N sessions (bench/browserclass.py). Each
session sets Epochs (and Training images) by keyboard, waits until the server has taken the setting,
and then all press Train within a fraction of a second. Printed: when each session's run started
training and finished, counted from the moment the class pressed Train; the same N runs
back-to-back headless, once before the server starts and once after it has stopped (this machine's
speed drifts: the same headless runs have taken 9.7 s and 18.4 s minutes apart), the class's time
against their mean (`dlcore.engine.train.train` in a fresh interpreter on the config the Train page
builds: the seed preset with these epochs and training images, on the bundled sample, device auto;
one 1-epoch warm-up run first, not counted), and the ratio of the two; and the median epoch as
the app's runs recorded it against the headless runs' (what the training itself lost to the class).
A session counts as training once its progress bar shows an epoch: that bar and the loss curve's
first point are drawn by the same fragment run, so with one student it is "pressing Train to the
curve's first point".

While the class trains, the Dropout slider (which changes the next run, not the running one) is
moved one keyboard step at a time (0.20 <-> 0.25) in each session in turn, among the sessions whose
page shows their job and whose run has not ended, and the time from the key press until the app has
settled is taken: until the URL in the page's "Copy link to these settings" block holds the new
value, which the server writes in the same script run that read the slider (see
bench/browserclass.py for why this and not Streamlit's status widget). Median and 95th percentile
are printed. (A session's slider is left alone until its page shows the job: a slider moved while
the Train click's own rerun was under way has been seen to lose the click.)

Other lines: how long each session waited before its job trained, the server's RSS (its own, and
its child processes' where a process runner trains), where the CPU went while the class trained
(Chromium's renderers, the rest of Chromium, the server, its training processes), how much CPU
other processes on the machine took meanwhile (--wait-quiet waits for a quiet machine first),
whether the app recorded exactly the headless config, and the server's error-looking output.

Everything is bounded in time: the class gets --timeout seconds from pressing Train (a session that
has not finished by then is reported with the last status line it showed); the server and browser
are stopped at the end whatever happens. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.browserclass import (
    LINK_HOLDS_JS,
    Browser,
    CpuAccount,
    HarnessError,
    Server,
    Session,
    add_server_arguments,
    begin,
    cpu_by_kind,
    cpu_by_kind_line,
    gave_up,
    gave_up_errors,
    mb,
    percentile,
    problems_report,
)

EPOCHS_DEFAULT = 10  # the seed preset's epochs: no train.epochs in the link at this value
SUBSET_DEFAULT = 0  # all training images: no train.train_subset in the link
SLIDER = ("Dropout", "model.dropout")

# Run in a fresh interpreter in the app's folder, so it uses the same dlcore as the server.
HEADLESS = r"""
import json, sys, time
args = json.loads(sys.argv[1])
from dlcore.engine.config import PRESETS
from dlcore.engine.data import load_with_fallback
from dlcore.engine.train import train

dataset, _ = load_with_fallback("mnist")
changes = {"train.epochs": args["epochs"], "train.train_subset": args["subset"],
           "train.dataset": dataset.name, "train.device": "auto"}
try:  # what the Train page does with its widgets' values
    from dlcore.views.form import config_from_widgets, widget_values
    values = widget_values(PRESETS["seed"])
    values.update(changes)
    config = config_from_widgets(values)
except ImportError:
    config = PRESETS["seed"].replace(**changes).validate()
train(config.replace(**{"train.epochs": 1}), dataset)  # warm-up, not counted
runs = []
for _ in range(args["runs"]):
    started = time.perf_counter()
    result = train(config, dataset)
    runs.append({"seconds": time.perf_counter() - started, "status": result.status,
                 "device": result.device, "epochs": [m.seconds for m in result.history]})
print("RESULT " + json.dumps({"runs": runs, "config": config.to_dict(), "dataset": dataset.name,
                              "train_images": len(dataset.train_y)}))
"""


def subset_text(subset: int) -> str:
    return "all" if subset == 0 else f"{subset:,}"


def prepare(session: Session, epochs: int, subset: int, timeout: float) -> None:
    """Wait for the Train page that `open(wait=False)` loaded, then set Epochs and Training images,
    waiting until the server has them."""
    session.opened(timeout)
    if subset != SUBSET_DEFAULT:
        session.set_and_settle("Training images", subset_text(subset), "train.train_subset", subset,
                               SUBSET_DEFAULT, timeout)
    if epochs != EPOCHS_DEFAULT:
        session.set_and_settle("Epochs", epochs, "train.epochs", epochs, EPOCHS_DEFAULT, timeout)
    session.wait_ready(timeout)


def headless_runs(app_dir: Path, home: str, runs: int, epochs: int, subset: int,
                  timeout: float) -> dict:
    args = json.dumps({"app_dir": str(app_dir), "runs": runs, "epochs": epochs, "subset": subset})
    try:
        proc = subprocess.run([sys.executable, "-c", HEADLESS, args], cwd=app_dir, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "DLLAB_HOME": home})
    except subprocess.TimeoutExpired:
        raise HarnessError(f"the headless runs took more than {timeout:.0f} s") from None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise HarnessError(f"the headless runs failed (exit {proc.returncode}): {proc.stderr[-1500:]}")


def app_configs(home: str) -> list[dict]:
    """The configs of the runs the app recorded in DLLAB_HOME's run history (empty if unreadable)."""
    try:
        with sqlite3.connect(Path(home) / "runs.sqlite") as conn:
            return [json.loads(row[0]) for row in conn.execute("SELECT config FROM runs")]
    except (sqlite3.Error, json.JSONDecodeError, IndexError):
        return []


def timed_headless(args: argparse.Namespace, home: str, n: int) -> dict | None:
    """The class's N runs back-to-back headless, with a line on the CPU they had; None if they failed."""
    cpu = CpuAccount()
    try:
        result = headless_runs(args.app_dir, home, n, args.epochs, args.subset, args.timeout)
    except HarnessError as exc:
        print(f"headless: gave up: {exc}")
        return None
    result["cpu"] = cpu.line()
    return result


def app_epoch_seconds(home: str) -> list[float]:
    """Every epoch's seconds as the app's runs recorded them (empty if unreadable)."""
    try:
        with sqlite3.connect(Path(home) / "runs.sqlite") as conn:
            return [row[0] for row in conn.execute("SELECT seconds FROM epochs")]
    except sqlite3.Error:
        return []


def config_diff(app: dict, headless: dict) -> str:
    """The fields where the app's recorded config differs from the headless one."""
    out = []
    for section in sorted(set(app) | set(headless)):
        a, h = app.get(section, {}), headless.get(section, {})
        for key in sorted(set(a) | set(h)):
            if a.get(key) != h.get(key):
                out.append(f"{section}.{key} {a.get(key)!r} (headless {h.get(key)!r})")
    return ", ".join(out) or "(only in form)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=0,
                        help="Training images (0: all of the bundled sample's 10,000)")
    add_server_arguments(parser)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds the class gets from pressing Train (and the headless runs)")
    parser.add_argument("--setup-timeout", type=float, default=180.0,
                        help="seconds for the sessions to open and take their settings")
    parser.add_argument("--slider-timeout", type=float, default=30.0,
                        help="give up on one slider move after this many seconds")
    parser.add_argument("--slider-pause", type=float, default=0.5,
                        help="seconds between one slider move settling and the next")
    parser.add_argument("--no-slider", dest="slider", action="store_false",
                        help="do not move sliders while the class trains (just wait)")
    parser.add_argument("--screenshots", type=Path, help="save each session's page here at the end")
    parser.add_argument("--no-headless", dest="headless", action="store_false",
                        help="skip the back-to-back headless runs")
    args = parser.parse_args()
    if (code := begin(args)) is not None:
        return code

    home = tempfile.mkdtemp(prefix="dllab-class-")
    before = timed_headless(args, home, args.students) if args.headless else None
    env: dict[str, str | None] = {"DLLAB_HOME": home, "DLLAB_MAX_JOBS": str(args.max_jobs)}
    if args.runner:
        env["DLLAB_RUNNER"] = args.runner
    env.update(item.split("=", 1) for item in args.env)
    options = {"runner.postScriptGC": "true" if args.gc == "on" else "false"} if args.gc else {}
    n = args.students
    print(f"{n} students, {args.epochs} epochs, training images {subset_text(args.subset)}, "
          f"DLLAB_MAX_JOBS={args.max_jobs}, DLLAB_RUNNER={args.runner or '(app default)'}, "
          f"postScriptGC {args.gc or 'as in .streamlit/config.toml'}; app {args.app_dir}; home {home}")

    class_time: float | None = None
    settle: list[float] = []
    slider_timeouts = 0
    slider_notes: list[str] = []
    peak = {"server": 0, "children": 0, "n_children": 0}
    lines: list[str] = []
    app_runs: list[dict] = []
    app_epochs: list[float] = []
    states: list[dict] = []
    server = Server(args.app_dir, env=env, options=options)
    browser = Browser()
    try:
        server.start()
        browser.start()
        sessions = [browser.open_session(server.url) for _ in range(n)]
        setup_started = time.monotonic()
        for session in sessions:  # all load at once; each then takes its settings in turn
            session.open(args.setup_timeout, wait=False)
        for session in sessions:
            prepare(session, args.epochs, args.subset, args.setup_timeout)
        default_dropout = sessions[0].slider_value(SLIDER[0])
        dropout_step = float(sessions[0].slider(SLIDER[0]).get_attribute("step"))
        for session in sessions:
            for note in session.reverted:
                print(f"session {session.index}: a setting went back after the server took it ({note})")
        wrong = [s.index for s in sessions
                 if not s.page.evaluate(LINK_HOLDS_JS, ["train.epochs", args.epochs, EPOCHS_DEFAULT])]
        if wrong:
            print(f"sessions {wrong}: Epochs changed again before Train was pressed")
        print(f"{n} sessions open with their settings in {time.monotonic() - setup_started:.1f} s; "
              f"server RSS {mb(server.rss())}")

        for session in sessions:
            session.arm()
        cpu, by_kind = CpuAccount(), cpu_by_kind()
        pressed = [session.press_train() for session in sessions]
        t0 = pressed[0]
        print(f"all {n} pressed Train within {pressed[-1] - t0:.2f} s")

        deadline = time.monotonic() + args.timeout
        move = 0
        states = [session.watch() for session in sessions]
        while time.monotonic() < deadline:
            states = [session.watch() for session in sessions]
            server_rss, (children_rss, n_children) = server.rss(), server.children_rss()
            peak["server"] = max(peak["server"], server_rss)
            if children_rss > peak["children"]:
                peak["children"], peak["n_children"] = children_rss, n_children
            if all(s["finishedAt"] is not None for s in states) or not server.alive:
                break
            if not args.slider:
                time.sleep(0.2)
                continue
            # In turn, a session whose job the page shows and whose run has not ended. (Moving a
            # slider while the Train click's own rerun is under way can lose the click.)
            waiting = [s for s, state in zip(sessions, states, strict=True)
                       if state["finishedAt"] is None and state["status"]]
            if not waiting:
                time.sleep(0.2)
                continue
            session = waiting[move % len(waiting)]
            move += 1
            value = session.slider_value(SLIDER[0])
            step = 1 if value <= default_dropout + 1e-9 else -1  # between the default and one above
            target = round(value + step * dropout_step, 6)
            moved = time.perf_counter()
            session.move_slider(SLIDER[0], step)
            try:
                session.wait_link(SLIDER[1], target, default_dropout,
                                  min(args.slider_timeout, max(1.0, deadline - time.monotonic())))
                settle.append(time.perf_counter() - moved)
            except HarnessError:
                slider_timeouts += 1
                if len(slider_notes) < 5:
                    slider_notes.append(
                        f"session {session.index}: Dropout moved to {target:g} at "
                        f"{time.time() - t0:.1f} s did not settle; the slider now shows "
                        f"{session.slider_value(SLIDER[0]):g}, the link {session.link()!r}")
            time.sleep(args.slider_pause)
        states = [session.watch() for session in sessions]

        print()
        for session, state in zip(sessions, states, strict=True):
            started = state["startedAt"]
            start_text = f"training from {started - t0:5.1f} s" if started else "never seen training"
            if state["finishedAt"] is not None:
                print(f"session {session.index}: {state['endedAs']} at {state['finishedAt'] - t0:6.1f} s "
                      f"({start_text}): {state['status'][:110]}")
            elif not state["status"]:
                print(f"session {session.index}: NOT FINISHED after {args.timeout:.0f} s: no job ever "
                      "shown, the Train press was not taken")
            else:
                print(f"session {session.index}: NOT FINISHED after {args.timeout:.0f} s ({start_text}); "
                      f"last status: {state['status'][:110]}")
        finished = [s["finishedAt"] for s in states if s["finishedAt"] is not None]
        if len(finished) == n:
            class_time = max(finished) - t0
        if not server.alive:
            print(f"the server exited (code {server.proc.returncode}) during the class")
        print(cpu.line())
        print(cpu_by_kind_line(by_kind))
        for note in slider_notes:
            print(note)
        print(f"server RSS now {mb(server.rss())}, peak {mb(peak['server'])}; its child processes "
              f"peak {mb(peak['children'])} over {peak['n_children']}")
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            for session in sessions:
                session.screenshot(args.screenshots / f"classroom-{session.index}.png")
        lines = problems_report(server, sessions)
        app_runs = app_configs(home)
        app_epochs = app_epoch_seconds(home)
    except gave_up_errors() as exc:
        if args.screenshots:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            for session in browser.sessions:
                session.screenshot(args.screenshots / f"classroom-{session.index}.png")
        return gave_up(exc, server, browser)
    finally:
        browser.close()
        server.stop()
    for line in lines:
        print(line)

    back_to_back: float | None = None
    if args.headless:
        after = timed_headless(args, home, n)
        results = [r for r in (before, after) if r is not None]
        for label, result in (("before", before), ("after", after)):
            if result is not None:
                seconds = [r["seconds"] for r in result["runs"]]
                print(f"headless {label} the class on {result['dataset']} ({result['train_images']:,} "
                      f"images), device {result['runs'][0]['device']}: runs of "
                      f"{', '.join(f'{s:.1f}' for s in seconds)} s, {sum(seconds):.1f} s in all "
                      f"({', '.join(sorted({r['status'] for r in result['runs']}))}); {result['cpu']}")
        if results:
            back_to_back = statistics.mean(sum(r["seconds"] for r in res["runs"]) for res in results)
            headless_epochs = [e for res in results for r in res["runs"] for e in r["epochs"]]
            if app_epochs and headless_epochs:
                app_median = statistics.median(app_epochs)
                headless_median = statistics.median(headless_epochs)
                print(f"epoch seconds, median: in the app {app_median:.2f} ({len(app_epochs)} epochs), "
                      f"headless {headless_median:.2f} ({len(headless_epochs)}): the app's epoch "
                      f"{100 * (app_median / headless_median - 1):+.0f}%")
            config = results[-1]["config"]
            same = [c for c in app_runs if c == config]
            print(f"the app recorded {len(app_runs)} runs, {len(same)} with exactly the headless config")
            for i, app_config in enumerate(app_runs, 1):
                if app_config != config:
                    print(f"  app run {i} differs: {config_diff(app_config, config)}")

    print()
    parts = [f"{n} students, {args.epochs} epochs:"]
    if class_time is not None:
        parts.append(f"class finished in {class_time:.1f} s;")
    else:
        done = sum(s["finishedAt"] is not None for s in states)
        parts.append(f"class NOT finished in {args.timeout:.0f} s ({done} of {n} runs ended);")
    if back_to_back is not None:
        parts.append(f"back-to-back headless {back_to_back:.1f} s (mean of before and after);")
        if class_time is not None:
            parts.append(f"ratio {class_time / back_to_back:.2f}x;")
    if settle:
        parts.append(f"slider settle median {statistics.median(settle):.2f} s, "
                     f"p95 {percentile(settle, 95):.2f} s over {len(settle)} moves"
                     + (f" ({slider_timeouts} more gave up after {args.slider_timeout:.0f} s)"
                        if slider_timeouts else ""))
    elif slider_timeouts:
        parts.append(f"no slider move settled ({slider_timeouts} gave up after {args.slider_timeout:.0f} s)")
    print(" ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
