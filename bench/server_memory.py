"""Does the server's memory stay flat over many runs and fragment reruns (with runner.postScriptGC off)?

    python -m bench.server_memory [--runs 20] [--measure-at 5] [--epochs 50] [--subset 100]
                                  [--min-reruns 100] [--gc on|off] [--runner R] [--app-dir DIR]

Issue 9's check: with Streamlit's per-run `gc.collect(2)` off, the server's RSS after 100 fragment
reruns and 20 runs should be within 10% of its RSS after 5 runs. One real server (fresh temporary
DLLAB_HOME, bundled MNIST sample), one Chromium session (bench/browserclass.py): Training images at
its smallest option and Epochs set by keyboard, then Train pressed and the run's end ("Finished.")
waited for, --runs times, and then on, run after run, until the Train page's live panel (which
reruns every 0.9 s while a job is active) has rerun at least --min-reruns times (at most --max-runs
runs). Many epochs of a few images keep each job active for a while at little cost. The reruns are
counted from the page's websocket (Streamlit's "script finished" messages of fragment runs), not
estimated.

The server's RSS (its own process; its child processes, where a process runner trains, separately)
is read --settle seconds after run --measure-at and after the last run; every run's is printed, as
RSS without the per-run collection goes up and down in a saw-tooth. Printed at the end:
"server RSS after 5 runs X MB, after N runs Y MB (+Z%)", with the reruns counted. Nothing here
asserts; every wait is bounded, and the server and browser are stopped at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from bench.browserclass import (
    MB,
    Browser,
    CpuAccount,
    Server,
    add_server_arguments,
    begin,
    gave_up,
    gave_up_errors,
    mb,
    problems_report,
)

EPOCHS_DEFAULT = 10  # the seed preset's: no train.epochs in the settings link at this value
SUBSET_DEFAULT = 0  # all images: no train.train_subset in the link


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--measure-at", type=int, default=5, help="the run after which RSS is the base")
    parser.add_argument("--epochs", type=int, default=50,
                        help="epochs per run (many short epochs keep a job active for a few seconds)")
    parser.add_argument("--subset", type=int, default=100,
                        help="Training images per run (100 is the smallest option)")
    parser.add_argument("--min-reruns", type=int, default=100,
                        help="after --runs, go on with more runs until this many fragment reruns")
    parser.add_argument("--max-runs", type=int, default=200, help="but stop after this many runs")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to wait after a run before reading the RSS")
    parser.add_argument("--run-timeout", type=float, default=180.0, help="give up on a run after this")
    add_server_arguments(parser)
    args = parser.parse_args()
    if not 1 <= args.measure_at < args.runs:
        parser.error("--measure-at must be at least 1 and less than --runs")
    if (code := begin(args)) is not None:
        return code

    home = tempfile.mkdtemp(prefix="dllab-memory-")
    env: dict[str, str | None] = {"DLLAB_HOME": home, "DLLAB_MAX_JOBS": str(args.max_jobs)}
    if args.runner:
        env["DLLAB_RUNNER"] = args.runner
    env.update(item.split("=", 1) for item in args.env)
    options = {"runner.postScriptGC": "true" if args.gc == "on" else "false"} if args.gc else {}
    subset_text = "all" if args.subset == 0 else f"{args.subset:,}"
    print(f"{args.runs} runs of {args.epochs} epochs on {subset_text} training images, one session; "
          f"postScriptGC {args.gc or 'as in .streamlit/config.toml'}; "
          f"DLLAB_RUNNER={args.runner or '(app default)'}; app {args.app_dir}; home {home}")

    server = Server(args.app_dir, env=env, options=options)
    browser = Browser()
    rows: list[tuple[int, float, str, int, int, int, int]] = []
    base: tuple[int, int, int] | None = None  # (server rss, children rss, fragment reruns)
    last: tuple[int, int, int] | None = None
    lines: list[str] = []
    try:
        server.start()
        browser.start()
        session = browser.open_session(server.url)
        session.open()
        print(f"page open; server RSS {mb(server.rss())}")
        if args.subset != SUBSET_DEFAULT:
            session.set_and_settle("Training images", subset_text, "train.train_subset", args.subset,
                                   SUBSET_DEFAULT)
        if args.epochs != EPOCHS_DEFAULT:
            session.set_and_settle("Epochs", args.epochs, "train.epochs", args.epochs, EPOCHS_DEFAULT)
        session.wait_ready()

        cpu = CpuAccount()
        run, done = 0, False
        while not done:
            run += 1
            full_runs = session.full_runs
            pressed = session.press_train()
            # The click's own script run draws the new job's status; only then is a "Finished."
            # on the page this run's.
            session.wait_full_run(full_runs, args.run_timeout)
            session.page.wait_for_timeout(300)
            session.arm()
            deadline = time.monotonic() + args.run_timeout
            state = session.watch()
            while state["finishedAt"] is None and time.monotonic() < deadline and server.alive:
                session.page.wait_for_timeout(200)
                state = session.watch()
            if state["finishedAt"] is None:
                print(f"run {run}: NOT FINISHED after {args.run_timeout:.0f} s; last status: "
                      f"{state['status'][:110] or '(none shown)'}")
                break
            seconds = state["finishedAt"] - pressed
            session.wait_ready(args.run_timeout)  # the final rerun done, Train enabled again
            done = run >= args.max_runs or (run >= args.runs and session.fragment_runs >= args.min_reruns)
            measured = run == args.measure_at or done
            if measured:
                session.page.wait_for_timeout(args.settle * 1000)
            children, n_children = server.children_rss()
            rows.append((run, seconds, state["endedAs"], server.rss(), children, n_children,
                         session.fragment_runs))
            print(f"run {run:2d}: {state['endedAs']} in {seconds:5.1f} s; server RSS "
                  f"{mb(server.rss())}, children {mb(children)} ({n_children}); fragment reruns so far "
                  f"{session.fragment_runs}")
            if measured:
                point = (server.rss(), children, session.fragment_runs)
                base = point if run == args.measure_at else base
                last = point if done else last
        lines = [cpu.line(), *problems_report(server, [session])]
        requested = session.fragment_requests
    except gave_up_errors() as exc:
        return gave_up(exc, server, browser)
    finally:
        browser.close()
        server.stop()
    for line in lines:
        print(line)

    print()
    if base is None or last is None:
        print(f"no figure: only {len(rows)} of {args.runs} runs ended")
        return 1
    runs = rows[-1][0]
    print(f"fragment reruns counted: {last[2]} in all ({requested} asked for by the browser), "
          f"{last[2] - base[2]} between run {args.measure_at} and run {runs}")
    if last[2] < args.min_reruns:
        print(f"fewer than {args.min_reruns} fragment reruns even after {runs} runs: make the runs "
              "longer (--epochs, --subset)")
    change = 100 * (last[0] / base[0] - 1)
    print(f"server RSS after {args.measure_at} runs {base[0] / MB:.0f} MB, after {runs} runs "
          f"{last[0] / MB:.0f} MB ({change:+.1f}%); children {base[1] / MB:.0f} MB -> {last[1] / MB:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
