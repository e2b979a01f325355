"""Background training jobs: the thread, live snapshots, stop, the queue and the orphan reaper."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import dlcore.jobs as jobs_module
from dlcore.config import ConfigError, RunConfig
from dlcore.data import load_dataset
from dlcore.dataset import Dataset
from dlcore.jobs import JobManager, JobSnapshot, TrainingJob
from dlcore.store import RunStore
from dlcore.train import BatchProgress

SMALL = {"train.dataset": "digits", "model.hidden": (32,), "train.batch_size": 32,
         "train.epochs": 2, "train.device": "cpu"}
WAIT = 120.0  # generous: a busy 2-core machine can be very slow; nothing here asserts a speed


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture
def jobs_to_stop():
    """Jobs a test starts; whatever happens, they are stopped and joined at the end."""
    started: list[TrainingJob] = []
    yield started
    for job in started:
        job.stop()
    for job in started:
        job.wait(WAIT)


def config(**changes) -> RunConfig:
    return RunConfig().replace(**{**SMALL, **changes})


def until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def long_job(digits: Dataset, started: list[TrainingJob]) -> TrainingJob:
    """A job that trains until it is stopped (500 epochs)."""
    job = TrainingJob(config(**{"train.epochs": 500}), digits)
    started.append(job)
    return job


def test_a_job_trains_in_its_own_thread_and_finishes(digits: Dataset, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    store = RunStore(tmp_path)
    threads: set[str] = set()
    real = TrainingJob._on_event

    def on_event(self, event) -> None:
        threads.add(threading.current_thread().name)
        real(self, event)
    monkeypatch.setattr(TrainingJob, "_on_event", on_event)

    manager = JobManager(max_jobs=1)
    job = manager.submit(TrainingJob(config(), digits, store=store, name="thread test"))
    assert job.thread.daemon and job.thread is not threading.current_thread()
    assert job.wait(WAIT)
    snap = job.snapshot()
    assert snap.state == "finished" and not snap.active
    assert [m.epoch for m in snap.history] == [1, 2]
    assert snap.batch_losses and snap.result is not None and snap.result.status == "finished"
    assert snap.queue_position is None and snap.config == job.config
    assert snap.first_layer is not None and snap.first_layer.shape == (32, 64)
    assert threads == {"dllab-training"}
    assert manager.counts() == (0, 0)
    run = store.get_run(snap.run_id)
    assert (run["status"], run["name"]) == ("finished", "thread test")
    assert len(store.list_runs()) == 1


def test_a_second_job_waits_in_the_queue_until_the_first_ends(digits: Dataset, jobs_to_stop) -> None:
    manager = JobManager(max_jobs=1, orphan_seconds=600)
    first = manager.submit(long_job(digits, jobs_to_stop))
    assert until(lambda: first.snapshot().progress is not None)
    assert first.snapshot().state == "running"
    second = TrainingJob(config(), digits)
    jobs_to_stop.append(second)
    manager.submit(second)
    for _ in range(10):  # it stays queued, first in line, while the first job trains
        snap = second.snapshot()
        assert (snap.state, snap.queue_position, snap.active) == ("queued", 1, True)
        assert snap.progress is None and snap.history == ()
        time.sleep(0.05)
    assert manager.counts() == (1, 1)

    first.stop()
    assert first.wait(WAIT)
    assert first.snapshot().state == "stopped"
    assert second.wait(WAIT)
    snap = second.snapshot()
    assert snap.state == "finished" and snap.queue_position is None and len(snap.history) == 2
    assert manager.counts() == (0, 0)


def test_stopping_a_queued_job_removes_it_from_the_queue(digits: Dataset, jobs_to_stop) -> None:
    manager = JobManager(max_jobs=1, orphan_seconds=600)
    first = manager.submit(long_job(digits, jobs_to_stop))
    assert until(lambda: first.snapshot().state == "running")
    second, third = TrainingJob(config(), digits), TrainingJob(config(), digits)
    jobs_to_stop += [second, third]
    manager.submit(second)
    manager.submit(third)
    assert until(lambda: (second.snapshot().queue_position, third.snapshot().queue_position) == (1, 2))

    second.stop()
    assert second.wait(WAIT)
    snap = second.snapshot()
    assert snap.state == "stopped" and snap.queue_position is None and snap.result is None
    assert "before it started" in snap.message
    assert until(lambda: third.snapshot().queue_position == 1)
    assert manager.counts() == (1, 1)
    assert first.snapshot().state == "running"

    first.stop()
    assert third.wait(WAIT)
    assert third.snapshot().state == "finished"


def test_two_slots_run_two_jobs_at_once(digits: Dataset, jobs_to_stop) -> None:
    manager = JobManager(max_jobs=2, orphan_seconds=600)
    a = manager.submit(long_job(digits, jobs_to_stop))
    b = manager.submit(long_job(digits, jobs_to_stop))
    assert until(lambda: a.snapshot().state == b.snapshot().state == "running")
    assert manager.counts() == (2, 0)


def test_an_orphaned_job_is_stopped_by_the_manager(digits: Dataset, jobs_to_stop) -> None:
    manager = JobManager(max_jobs=1, orphan_seconds=1)
    job = manager.submit(long_job(digits, jobs_to_stop))
    # nobody calls snapshot(): within a few seconds the reaper stops it
    assert job.wait(WAIT)
    assert job.stop_event.is_set()
    snap = job.snapshot()
    assert snap.state == "stopped"
    assert len(snap.history) < 500


def test_an_orphaned_queued_job_leaves_the_queue(digits: Dataset, jobs_to_stop) -> None:
    manager = JobManager(max_jobs=1, orphan_seconds=1)
    first = manager.submit(long_job(digits, jobs_to_stop))
    waiting = TrainingJob(config(), digits)
    jobs_to_stop.append(waiting)
    manager.submit(waiting)
    stop_watching = threading.Event()

    def watch_first() -> None:  # the first job's page is still open; the second's is not
        while not stop_watching.is_set():
            first.snapshot()
            time.sleep(0.1)
    watcher = threading.Thread(target=watch_first, daemon=True)
    watcher.start()
    try:
        assert waiting.wait(WAIT)
        assert waiting.snapshot().state == "stopped"
        assert first.snapshot().state == "running"
    finally:
        stop_watching.set()
        watcher.join()


def test_snapshot_is_safe_from_other_threads_while_training(digits: Dataset) -> None:
    manager = JobManager(max_jobs=1, orphan_seconds=600)
    job = manager.submit(TrainingJob(config(**{"train.epochs": 4}), digits))
    seen: list[list[JobSnapshot]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def read(mine: list[JobSnapshot]) -> None:
        try:
            while not job.done.is_set():
                mine.append(job.snapshot())
                time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
    readers = [threading.Thread(target=read, args=(mine,)) for mine in seen[1:]]
    for reader in readers:
        reader.start()
    read(seen[0])  # and the test's own thread too
    for reader in readers:
        reader.join(WAIT)
    assert errors == []
    assert job.snapshot().state == "finished"

    order = ["queued", "running", "finished"]
    for mine in seen:
        states = [order.index(snap.state) for snap in mine]
        assert states == sorted(states)  # never back to an earlier state
        lengths = [len(snap.history) for snap in mine]
        assert lengths == sorted(lengths) and max(lengths, default=0) <= 4
        for snap in mine:
            steps = [s for s, _ in snap.batch_losses]
            assert steps == sorted(steps)
            assert [m.epoch for m in snap.history] == list(range(1, len(snap.history) + 1))
            assert snap.progress is None or isinstance(snap.progress, BatchProgress)
    running = [snap for mine in seen for snap in mine if snap.state == "running"]
    assert running, "no snapshot caught the job while it trained"
    assert any(snap.progress is not None for snap in running)


def test_a_watched_job_is_not_orphaned(digits: Dataset) -> None:
    manager = JobManager(max_jobs=1, orphan_seconds=1)
    job = manager.submit(TrainingJob(config(**{"train.epochs": 20}), digits))
    while not job.done.wait(0.1):
        job.snapshot()
    assert job.snapshot().state == "finished"


def test_a_crash_in_training_is_reported_and_frees_the_slot(digits: Dataset,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(jobs_module, "train_recorded", boom)
    manager = JobManager(max_jobs=1, orphan_seconds=600)
    job = manager.submit(TrainingJob(config(), digits))
    assert job.wait(WAIT)
    snap = job.snapshot()
    assert snap.state == "failed" and "RuntimeError: boom" in snap.message
    assert manager.counts() == (0, 0)
    monkeypatch.undo()
    after = manager.submit(TrainingJob(config(), digits))
    assert after.wait(WAIT) and after.snapshot().state == "finished"


def test_a_job_refuses_a_bad_config_at_once(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="train.lr"):
        TrainingJob(config(**{"train.lr": 0.0}), digits)


def test_default_manager_is_one_per_process() -> None:
    assert jobs_module.default_manager() is jobs_module.default_manager()
