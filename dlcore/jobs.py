"""A training job in a background thread, and the process-wide manager that queues jobs for a device.

The thread never touches any UI; it writes only into the job's lock-protected state, which a page
reads with `snapshot()`. The manager lets at most `max_jobs` jobs train at once (one GPU serves a
class: the rest wait in line and see their place), and stops jobs whose page has stopped asking
about them for `orphan_seconds` (a closed browser tab must not hold the device forever).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from dlcore.config import RunConfig
from dlcore.dataset import Dataset
from dlcore.recording import train_recorded
from dlcore.store import RunStore
from dlcore.train import BatchProgress, EpochEnd, EpochMetrics, Event, TrainResult

ACTIVE_STATES = ("queued", "running")
# How often a page redraws a running job: at least once a second, and no more, since each redraw
# takes the interpreter away from the training thread.
REDRAW_SECONDS = 0.9


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state for drawing."""

    state: str  # queued | running | finished | stopped | diverged | failed
    config: RunConfig
    queue_position: int | None
    progress: BatchProgress | None
    history: tuple[EpochMetrics, ...]
    batch_losses: tuple[tuple[int, float], ...]
    message: str
    run_id: int | None
    result: TrainResult | None
    first_layer: np.ndarray | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass
class _JobState:
    state: str = "queued"
    progress: BatchProgress | None = None
    history: list[EpochMetrics] = field(default_factory=list)
    batch_losses: list[tuple[int, float]] = field(default_factory=list)
    message: str = ""
    run_id: int | None = None
    result: TrainResult | None = None
    first_layer: np.ndarray | None = None


class TrainingJob:
    """One run of `dlcore.train` in its own thread, started by `JobManager.submit`."""

    def __init__(self, config: RunConfig, dataset: Dataset, *, store: RunStore | None = None,
                 name: str | None = None) -> None:
        self.config = config.validate()
        self.dataset = dataset
        self.store = store
        self.name = name
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.last_seen = time.monotonic()
        self._lock = threading.Lock()
        self._state = _JobState()
        self._manager: JobManager | None = None
        self.thread = threading.Thread(target=self._run, name="dllab-training", daemon=True)

    def snapshot(self) -> JobSnapshot:
        self.last_seen = time.monotonic()
        position = self._manager.position(self) if self._manager else None
        with self._lock:
            s = self._state
            return JobSnapshot(s.state, self.config, position, s.progress, tuple(s.history),
                               tuple(s.batch_losses), s.message, s.run_id, s.result, s.first_layer)

    def stop(self) -> None:
        """Ask the run to end after the current step (or leave the queue, if still waiting)."""
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def _on_event(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, BatchProgress):
                self._state.progress = event
                self._state.batch_losses.append((event.step, event.loss))
            elif isinstance(event, EpochEnd):
                self._state.history.append(event.metrics)
                self._state.first_layer = event.first_layer

    def _set(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._state, key, value)

    def _run(self) -> None:
        manager = self._manager
        try:
            if manager is not None and not manager.acquire(self):
                self._set(state="stopped", message="Stopped before it started.")
                return
            self._set(state="running")
            result, run_id = train_recorded(
                self.config, self.dataset, store=self.store, on_event=self._on_event,
                stop=self.stop_event, name=self.name,
                on_start=lambda run_id: self._set(run_id=run_id))
            self._set(state=result.status, result=result, run_id=run_id, message=result.message,
                      batch_losses=result.batch_losses, history=list(result.history))
        except Exception as exc:  # shown on the page; the thread must not die silently
            self._set(state="failed", message=f"{type(exc).__name__}: {exc}")
        finally:
            if manager is not None:
                manager.release(self)
            self.done.set()


class JobManager:
    """Process-wide: a first-come queue in front of `max_jobs` training slots."""

    def __init__(self, max_jobs: int | None = None, orphan_seconds: float | None = None) -> None:
        self.max_jobs = max(1, max_jobs or int(os.environ.get("DLLAB_MAX_JOBS", "1")))
        self.orphan_seconds = orphan_seconds or float(os.environ.get("DLLAB_ORPHAN_SECONDS", "300"))
        self._cond = threading.Condition()
        self._waiting: list[TrainingJob] = []
        self._running: list[TrainingJob] = []
        self._reaper: threading.Thread | None = None

    def submit(self, job: TrainingJob) -> TrainingJob:
        job._manager = self
        with self._cond:
            self._waiting.append(job)
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap_forever, daemon=True,
                                                name="dllab-reaper")
                self._reaper.start()
        job.thread.start()
        return job

    def _reap_forever(self) -> None:
        while True:
            time.sleep(min(5.0, self.orphan_seconds / 2))
            with self._cond:
                self._reap_orphans()

    def position(self, job: TrainingJob) -> int | None:
        """1 for the next in line; None once running or done."""
        with self._cond:
            return self._waiting.index(job) + 1 if job in self._waiting else None

    def counts(self) -> tuple[int, int]:
        """(running, waiting)"""
        with self._cond:
            return len(self._running), len(self._waiting)

    def acquire(self, job: TrainingJob) -> bool:
        """Block until `job` may train; False if it was stopped or orphaned while waiting."""
        with self._cond:
            while True:
                self._reap_orphans()
                if job.stop_event.is_set():
                    self._waiting.remove(job)
                    self._cond.notify_all()
                    return False
                if self._waiting[0] is job and len(self._running) < self.max_jobs:
                    self._waiting.remove(job)
                    self._running.append(job)
                    return True
                self._cond.wait(timeout=0.5)

    def release(self, job: TrainingJob) -> None:
        with self._cond:
            if job in self._running:
                self._running.remove(job)
            self._cond.notify_all()

    def _reap_orphans(self) -> None:
        now = time.monotonic()
        for other in self._running + self._waiting:
            if now - other.last_seen > self.orphan_seconds and not other.stop_event.is_set():
                other.stop_event.set()


_default_manager: JobManager | None = None
_default_lock = threading.Lock()


def default_manager() -> JobManager:
    """The one manager of this process (all browser sessions of a server share it)."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = JobManager()
        return _default_manager
