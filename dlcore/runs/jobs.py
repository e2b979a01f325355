"""A training job as a page sees it, and the process-wide manager that queues jobs for a runner.

A job (config, dataset, owner) waits in the manager's fair queue (one waiting job per owner), then a
runner trains it somewhere (a worker process, a Ray task, a thread). Whatever the runner, its events
come back to `TrainingJob._apply`, which updates the lock-protected state a page reads with
`snapshot()` and records the run in the store. The manager stops jobs whose page has stopped asking
about them for `orphan_seconds`: a closed browser tab must not hold the device forever. A class's
rules (dlcore.runs.policy) are checked at submit, and a job that runs past the class's time cap is
stopped, its finished epochs kept.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dlcore.engine.config import RunConfig
from dlcore.engine.dataset import Dataset
from dlcore.engine.duration import DurationLimitError, check_duration, estimate_run_seconds
from dlcore.engine.memory import MemoryLimitError, check_memory, estimate_memory, memory_limit
from dlcore.engine.train import BatchProgress, EpochEnd, EpochMetrics, TrainResult
from dlcore.runs.curve import LossCurve
from dlcore.runs.policy import ClassPolicy, PolicyError
from dlcore.runs.recording import RunRecorder
from dlcore.runs.roles import Person
from dlcore.runs.runner import DatasetSource, JobSpec, RunEvent, RunFailed, Runner, Started
from dlcore.runs.runners import make_runner
from dlcore.runs.store import RunStore

ACTIVE_STATES = ("queued", "running")
# How often a page redraws a running job (at least once a second), and a queued one (only its place).
REDRAW_SECONDS = 0.9
QUEUED_REDRAW_SECONDS = 3.0
# After a run's last step: the final test pass, the result's trip from the worker and its recording.
END_ALLOWANCE_SECONDS = 0.5


class JobRefused(Exception):
    """A job the manager will not queue; the message is for the learner."""


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state for drawing. `version` changes whenever anything in it
    does, so a page can skip rebuilding what it drew last time. `diverged` is (step, raw loss)
    where the run blew up, from its last live event and then its result: the loss curve
    (`batch_losses`) stops at the step before, so a figure marks the blow-up from this."""

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
    expected_wait_s: float | None = None
    place: str = ""
    owner: str = ""
    owner_name: str = ""
    version: int = 0
    diverged: tuple[int, float] | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def redraw_seconds(self) -> float | None:
        """How often a page redraws this job: often while it runs, slowly while it waits (only its
        place in line), not at all once it has ended."""
        return {"running": REDRAW_SECONDS, "queued": QUEUED_REDRAW_SECONDS}.get(self.state)

    @property
    def summary(self) -> str:
        """The job in a few words, for the sidebar: 'waiting, place 2 in the queue', 'training,
        epoch 3/10', 'starting', 'finished, test accuracy 97.80%'."""
        if self.state == "queued":
            return f"waiting, place {self.queue_position} in the queue"
        if self.state == "running":
            p = self.progress
            return f"training, epoch {p.epoch}/{p.epochs}" if p else "starting"
        final = self.result.final if self.result else None
        return self.state + (f", test accuracy {final.test_acc:.2%}" if final else "")

    @property
    def epochs_shown(self) -> tuple[int, bool] | None:
        """What a page's per-epoch figure shows of this job: nothing while it waits, else its
        epochs so far and whether it still runs. The page builds that figure again only when this
        changes."""
        return None if self.state == "queued" else (len(self.history), self.result is None)

    @property
    def done_fraction(self) -> float:
        """How much of the run's steps are done, 0 to 1 (0 before its first reading)."""
        if self.progress is None or self.state == "queued":
            return 0.0
        return self.progress.fraction_done

    def end_wait(self) -> float:
        """Seconds a redraw should wait for the run to end before drawing: its expected time left
        when that is shorter than one redraw, so "Finished" shows when the run ends rather than up
        to a redraw later; 0 otherwise."""
        p = self.progress
        if self.redraw_seconds != REDRAW_SECONDS or p is None or p.epoch < p.epochs:
            return 0.0
        left = p.eta_s + END_ALLOWANCE_SECONDS
        return left if left <= REDRAW_SECONDS else 0.0


@dataclass
class _JobState:
    state: str = "queued"
    progress: BatchProgress | None = None
    history: list[EpochMetrics] = field(default_factory=list)
    message: str = ""
    run_id: int | None = None
    result: TrainResult | None = None
    first_layer: np.ndarray | None = None
    place: str = ""
    version: int = 0
    diverged: tuple[int, float] | None = None


_job_ids = itertools.count(1)


class TrainingJob:
    """One run, from the queue to its outcome, started by `JobManager.submit`."""

    def __init__(self, config: RunConfig, dataset: Dataset, *, store: RunStore | None = None,
                 name: str | None = None, owner: str = "local", owner_name: str = "",
                 data_dir: str | None = None) -> None:
        self.id = next(_job_ids)
        self.config = config.validate()
        self.dataset = dataset
        self.source = DatasetSource.of(dataset, data_dir)
        self.owner, self.owner_name = owner, owner_name
        self.max_seconds: float | None = None  # the class's time cap, set at submit
        self.started_at: float | None = None  # monotonic time of the runner's first report
        self.memory = estimate_memory(self.config, dataset.shape, dataset.num_classes,
                                      len(dataset.train_y), len(dataset.test_y))
        self.params = self.memory.params
        self.recorder = RunRecorder(store, self.config, dataset.name, name, owner=owner,
                                    owner_name=owner_name or None)
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.progressed = threading.Event()  # the first live reading arrived (or the job ended)
        self.last_seen = time.monotonic()
        self._lock = threading.Lock()
        self._state = _JobState()
        self._curve = LossCurve()
        self._manager: JobManager | None = None
        self.thread = threading.Thread(target=self._run, name=f"dllab-job-{self.id}", daemon=True)

    def snapshot(self) -> JobSnapshot:
        self.last_seen = time.monotonic()
        position = wait_s = None
        if self._manager is not None:
            position, wait_s = self._manager.place_in_line(self)
        with self._lock:
            s = self._state
            return JobSnapshot(s.state, self.config, position, s.progress, tuple(s.history),
                               self._curve.points(), s.message, s.run_id, s.result, s.first_layer,
                               wait_s, s.place, self.owner, self.owner_name, s.version,
                               s.diverged)

    def stop(self) -> None:
        """Ask the run to end after the current step (or leave the queue, if still waiting)."""
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def wait_for_progress(self, timeout: float) -> bool:
        """Until the first live reading (so a page can draw the curve's first point at once)."""
        return self.progressed.wait(timeout)

    def estimate_seconds(self) -> float:
        """Seconds this run should train here, worked out before it starts (dlcore.engine.duration:
        the first call in a process times a short step, about 0.4 s)."""
        d = self.dataset
        return estimate_run_seconds(self.config, d.shape, d.num_classes, len(d.train_y), len(d.test_y))

    def duration_estimate(self, rate: float | None) -> float | None:
        """Seconds this job should train, given a throughput in parameter-samples per second."""
        if not rate:
            return None
        cfg = self.config.train
        images = min(cfg.train_subset or self.source.num_train, self.source.num_train)
        return cfg.epochs * images * self.params / rate

    def _apply(self, event: RunEvent) -> None:
        """One event from the runner (in the runner's thread): into the state and the store."""
        if isinstance(event, Started):
            self.started_at = time.monotonic()
            run_id = self.recorder.start(event.device)
            self._set(state="running", run_id=run_id, place=f"{event.device} on {event.place}")
            return
        self.recorder.event(event)
        with self._lock:
            if isinstance(event, BatchProgress):
                self._state.progress = event
                self.progressed.set()
                self._curve.extend(_curve_points(event))
                self._state.diverged = event.diverged or self._state.diverged
            elif isinstance(event, EpochEnd):
                self._state.history.append(event.metrics)
                self._state.first_layer = event.first_layer
            self._state.version += 1
        if isinstance(event, BatchProgress) and self._manager is not None:
            self._manager.observe_rate(event.samples_per_s * self.params)

    def _set(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._state, key, value)
            self._state.version += 1

    def _run(self) -> None:
        manager = self._manager
        assert manager is not None, "a job runs through JobManager.submit"
        try:
            if not manager.acquire(self):
                self._set(state="stopped", message="Stopped before it started.")
                return
            self._set(state="running")  # "Starting…" until the runner reports its first step
            spec = JobSpec(self.id, self.config, self.source, manager.threads_for_next())
            handle = manager.runner.start(spec, self.dataset, self._apply)
            overran = False
            while not handle.wait(0.05):
                if self.stop_event.is_set():
                    handle.stop()
                elif self._overran():
                    overran = True
                    handle.stop()
            result = handle.outcome()
            if overran and result.status == "stopped":
                result.message = (f"Stopped at the class's time limit of {self.max_seconds:,.0f} s; "
                                  f"its {len(result.history)} finished epoch(s) are kept.")
            self.recorder.finish(result)
            with self._lock:
                self._curve = LossCurve(result.batch_losses)
            self._set(state=result.status, result=result, run_id=self.recorder.run_id,
                      message=result.message, history=list(result.history),
                      diverged=result.divergence)
        except RunFailed as exc:
            self._fail(str(exc))
        except Exception as exc:  # shown on the page; the job must not die silently
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            manager.release(self)
            self.done.set()
            self.progressed.set()

    def _overran(self) -> bool:
        return (self.max_seconds is not None and self.started_at is not None
                and time.monotonic() - self.started_at > self.max_seconds)

    def _fail(self, message: str) -> None:
        try:
            self.recorder.fail(message)
        finally:
            self._set(state="failed", message=message)


def runs_of_session(earlier: Sequence[int], job: TrainingJob | None) -> list[int]:
    """The run ids a browser session has trained: `earlier` (its earlier jobs' runs) and its job's
    run, once that is recorded. The Train page keeps the list; the Lessons page reads it."""
    run_id = job.snapshot().run_id if job is not None else None
    return [*earlier, run_id] if run_id is not None and run_id not in earlier else list(earlier)


def _curve_points(event: BatchProgress) -> tuple[tuple[int, float], ...]:
    """The loss-curve points an event adds: those it carries, else its own reading, but never the
    reading of the event that reports a blow-up (that loss is marked, not drawn as a point)."""
    if event.points or event.diverged is not None:
        return event.points
    return ((event.step, event.loss),)


def expected_wait(slot_free_s: list[float | None], ahead_s: list[float | None], slots: int
                  ) -> float | None:
    """Seconds until a job behind `ahead_s` (durations of the queued jobs before it) gets one of
    `slots`, when the running jobs free theirs after `slot_free_s`; None where a time is unknown."""
    if any(s is None for s in slot_free_s) or any(s is None for s in ahead_s):
        return None
    free = sorted([max(0.0, s) for s in slot_free_s] + [0.0] * max(0, slots - len(slot_free_s)))
    heapq.heapify(free)
    for duration in ahead_s:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return free[0] if free else 0.0


class JobManager:
    """Process-wide: a fair queue in front of the runner's slots, and the orphan reaper."""

    def __init__(self, max_jobs: int | None = None, orphan_seconds: float | None = None,
                 runner: Runner | None = None) -> None:
        self.runner = runner if runner is not None else make_runner(slots=max_jobs)
        self.max_jobs = min(max_jobs or self.runner.slots, self.runner.slots)
        self.orphan_seconds = orphan_seconds or float(os.environ.get("DLLAB_ORPHAN_SECONDS", "300"))
        self._cond = threading.Condition()
        self._waiting: list[TrainingJob] = []
        self._running: list[TrainingJob] = []
        self._reaper: threading.Thread | None = None
        self._rate: float | None = None  # parameter-samples per second, recent runs

    def check_memory(self, job: TrainingJob) -> None:
        """Refuse a job whose estimated memory is above what one job may use here."""
        try:
            check_memory(job.memory, memory_limit(job.config.train.device, self.max_jobs))
        except (MemoryLimitError, ValueError) as exc:
            raise JobRefused(str(exc)) from None

    def submit(self, job: TrainingJob, policy: ClassPolicy | None = None,
               by: Person | None = None) -> TrainingJob:
        """Queue `job`; refused when it breaks the class's `policy` (its fixed settings and caps
        bind everyone but the teacher), would need more memory than one job may use, is expected
        to take longer than the policy's time cap, or while its owner already has one waiting (one
        each keeps the queue fair). The time cap binds every job: one that runs longer is stopped,
        its finished epochs kept."""
        if policy is not None:
            if by is None or not by.teacher:
                try:
                    policy.check(job.config)
                except PolicyError as exc:
                    raise JobRefused(str(exc)) from None
            job.max_seconds = policy.max_job_seconds
        self.check_memory(job)
        if job.max_seconds is not None:
            try:
                check_duration(job.estimate_seconds(), job.max_seconds)
            except DurationLimitError as exc:
                raise JobRefused(str(exc)) from None
        with self._cond:
            if any(other.owner == job.owner for other in self._waiting):
                raise JobRefused("You already have a run waiting for the device; one waiting run "
                                 "per person keeps the queue fair. Stop it or let it start first.")
            job._manager = self
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

    def threads_for_next(self) -> int:
        """CPU threads for the job starting now: the runner's share while nobody waits; one while a
        queue is waiting. On a crowded CPU (a class's browsers on the same cores) a run with two
        threads stalls whenever one is descheduled: measured on the 2-core machine with 8 sessions,
        a 3-epoch run took 6.5 s with two threads against 1.2 s headless."""
        raw = os.environ.get("DLLAB_WORKER_THREADS", "").strip()
        if raw.isdigit() and int(raw) > 0:
            return int(raw)
        with self._cond:
            crowded = bool(self._waiting)
        return 1 if crowded else 0

    def observe_rate(self, rate: float) -> None:
        if rate > 0:
            self._rate = rate if self._rate is None else 0.8 * self._rate + 0.2 * rate

    def place_in_line(self, job: TrainingJob) -> tuple[int | None, float | None]:
        """(1 for the next in line, expected seconds until it starts); (None, None) once running."""
        with self._cond:
            if job not in self._waiting:
                return None, None
            index = self._waiting.index(job)
            ahead = self._waiting[:index]
            running = list(self._running)
        rate = self._rate
        free = []
        for other in running:
            progress = other._state.progress
            free.append(progress.eta_s if progress is not None else other.duration_estimate(rate))
        return index + 1, expected_wait(free, [o.duration_estimate(rate) for o in ahead], self.max_jobs)

    def counts(self) -> tuple[int, int]:
        """(running, waiting)"""
        with self._cond:
            return len(self._running), len(self._waiting)

    def jobs(self) -> list[TrainingJob]:
        """Running jobs, then waiting ones in their order."""
        with self._cond:
            return [*self._running, *self._waiting]

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

    def close(self) -> None:
        self.runner.close()


_default_manager: JobManager | None = None
_default_lock = threading.Lock()


def default_manager() -> JobManager:
    """The one manager of this process (all browser sessions of a server share it)."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = JobManager()
        return _default_manager
