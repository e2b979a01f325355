"""Which runner serves this server: `DLLAB_RUNNER` (process | thread | ray) and `DLLAB_MAX_JOBS`."""

from __future__ import annotations

import os
from collections.abc import Mapping

from dlcore.runs.runner import Runner

RUNNERS = ("process", "thread", "ray")
# Jobs at once when DLLAB_MAX_JOBS is not set. CPU: one, since a run already uses every core
# (two runs at once on the 2-core machine each take twice as long). CUDA: four small runs share a
# GPU, one process each (README, "Serving a class").
DEFAULT_JOBS_CPU = 1
DEFAULT_JOBS_CUDA = 4
RAY_INSTALL = "pip install -r requirements-ray.txt"


class RunnerError(ValueError):
    """A runner that cannot be had; the message says what to set or install."""


def max_jobs_from_env(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get("DLLAB_MAX_JOBS", "").strip()
    if not raw:
        from dlcore.engine.devices import available_devices

        return DEFAULT_JOBS_CUDA if "cuda" in available_devices() else DEFAULT_JOBS_CPU
    try:
        value = int(raw)
    except ValueError:
        raise RunnerError(f"DLLAB_MAX_JOBS={raw!r} is not a whole number (jobs at once, 1 or more)") from None
    if value < 1:
        raise RunnerError(f"DLLAB_MAX_JOBS={value} is out of range: 1 or more jobs at once")
    return value


def make_runner(name: str | None = None, slots: int | None = None) -> Runner:
    """The runner `name` (default: DLLAB_RUNNER, else process) with `slots` jobs at once."""
    name = (name or os.environ.get("DLLAB_RUNNER", "") or "process").strip().lower()
    slots = slots or max_jobs_from_env()
    if name == "process":
        from dlcore.runs.process_runner import ProcessRunner

        return ProcessRunner(slots)
    if name == "thread":
        from dlcore.runs.thread_runner import ThreadRunner

        return ThreadRunner(slots)
    if name == "ray":
        try:
            from dlcore.runs.ray_runner import RayRunner
        except ImportError as exc:
            raise RunnerError(f"DLLAB_RUNNER=ray needs Ray, which is not installed ({exc}): "
                              f"{RAY_INSTALL}") from None
        return RayRunner(slots)
    raise RunnerError(f"DLLAB_RUNNER={name!r} is not a runner; choose one of {', '.join(RUNNERS)}")
