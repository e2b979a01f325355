"""Training jobs through each runner (thread, process, ray): live snapshots, stop, the fair queue,
the orphan reaper, failures, and a worker process that dies."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import dlcore.runs.jobs as jobs_module
import dlcore.runs.thread_runner as thread_runner_module
from dlcore.engine.config import ConfigError, RunConfig
from dlcore.engine.data import load_dataset
from dlcore.engine.dataset import Dataset
from dlcore.engine.train import BatchProgress
from dlcore.runs.jobs import JobManager, JobRefused, JobSnapshot, TrainingJob, expected_wait
from dlcore.runs.policy import ClassPolicy
from dlcore.runs.roles import Person
from dlcore.runs.runner import DatasetSource
from dlcore.runs.store import RunStore

SMALL = {"train.dataset": "digits", "model.hidden": (32,), "train.batch_size": 32,
         "train.epochs": 2, "train.device": "cpu"}
WAIT = 120.0  # generous: a busy 2-core machine can be very slow; nothing here asserts a speed


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _ray_runner():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the ray runner cannot be tested in CI: ray is not installed")
        pytest.skip("ray is not installed (pip install -r requirements-ray.txt)")
    from dlcore.runs.ray_runner import RayRunner

    ray.init(num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False,
             log_to_driver=False, ignore_reinit_error=True)
    return RayRunner(2)


@pytest.fixture(scope="module", params=["thread", "process", "ray"])
def runner(request):
    """One runner of each kind with two slots, shared by a module's tests (a process pool or a Ray
    instance takes seconds to start); each test's manager uses as many slots as it asks for."""
    if request.param == "ray":
        made = _ray_runner()
    else:
        from dlcore.runs.runners import make_runner

        made = make_runner(request.param, 2)
    made.warm()
    yield made
    made.close()
    if request.param == "ray":
        import ray

        ray.shutdown()


@pytest.fixture
def manager_of(runner):
    def make(max_jobs: int = 1, orphan_seconds: float = 600) -> JobManager:
        return JobManager(max_jobs=max_jobs, orphan_seconds=orphan_seconds, runner=runner)
    return make


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


def long_job(digits: Dataset, started: list[TrainingJob], owner: str = "long") -> TrainingJob:
    """A job that trains until it is stopped (500 epochs)."""
    job = TrainingJob(config(**{"train.epochs": 500}), digits, owner=owner)
    started.append(job)
    return job


def test_a_job_trains_through_the_runner_and_finishes(digits: Dataset, tmp_path: Path, runner,
                                                      manager_of) -> None:
    store = RunStore(tmp_path)
    manager = manager_of(1)
    job = manager.submit(TrainingJob(config(), digits, store=store, name="runner test"))
    assert job.wait(WAIT)
    snap = job.snapshot()
    assert snap.state == "finished" and not snap.active, snap.message
    assert [m.epoch for m in snap.history] == [1, 2]
    assert snap.batch_losses and snap.result is not None and snap.result.status == "finished"
    assert snap.queue_position is None and snap.config == job.config
    assert snap.first_layer is not None and snap.first_layer.shape == (32, 64)
    assert snap.place  # where it trained, in words
    if runner.name == "process":  # trained in a worker, not in this process
        assert f"pid {os.getpid()}" not in snap.place and "pid" in snap.place
    assert manager.counts() == (0, 0)
    run = store.get_run(snap.run_id)
    assert (run["status"], run["name"]) == ("finished", "runner test")
    assert len(store.epochs(snap.run_id)) == 2
    weights = store.load_weights(snap.run_id)
    assert set(weights) == set(snap.result.state_dict)
    assert len(store.list_runs()) == 1


def test_the_live_curve_is_the_finished_runs_curve(digits: Dataset, manager_of) -> None:
    job = manager_of(1).submit(TrainingJob(config(**{"train.epochs": 5, "train.batch_size": 8}), digits))
    live = []
    while not job.wait(0.05):
        live.append(job.snapshot().batch_losses)
    final = job.snapshot()
    steps = len(final.result.batch_losses)
    assert steps > 400 and len(final.batch_losses) <= 401  # downsampled, however long the run
    assert final.batch_losses[-1] == final.result.batch_losses[-1]
    grown = [points for points in live if points]
    assert grown, "no live points while it trained"
    for points in grown:  # the same curve, finer while it is shorter: nothing moves or reshapes
        last_step = points[-1][0]
        assert set(p for p in final.batch_losses if p[0] <= last_step) <= set(points)


def test_a_diverged_jobs_snapshot_carries_its_blow_up(digits: Dataset, manager_of) -> None:
    job = manager_of(1).submit(TrainingJob(config(**{"train.lr": 10.0, "train.epochs": 5,
                                                     "model.hidden": (512, 256)}), digits))
    live = []
    while not job.wait(0.01):
        live.append(job.snapshot())
    snap = job.snapshot()
    assert snap.state == "diverged" and snap.result is not None, snap.message
    assert snap.diverged is not None and snap.diverged == snap.result.divergence
    step = snap.diverged[0]
    assert snap.batch_losses and [s for s, _ in snap.batch_losses] == list(range(1, step))
    for seen in live:  # while it ran: never the blow-up as a point of the curve
        assert all(s < step for s, _ in seen.batch_losses)
        assert seen.diverged in (None, snap.diverged)


def test_the_live_event_of_a_blow_up_reaches_the_snapshot_before_the_result(digits: Dataset) -> None:
    job = TrainingJob(config(), digits)
    job._apply(BatchProgress(1, 2, 1, 1, 56, 2.3, 100.0, 1.0, ((1, 2.3),)))
    assert job.snapshot().diverged is None
    before = job.snapshot().version
    job._apply(BatchProgress(1, 2, 2, 2, 56, 2.3, 100.0, 1.0, (), (2, float("nan"))))
    snap = job.snapshot()
    assert snap.result is None and snap.version > before
    assert snap.batch_losses == ((1, 2.3),)  # the blow-up is marked, not drawn as a point
    assert snap.diverged[0] == 2 and snap.diverged[1] != snap.diverged[1]  # nan


def test_a_second_job_waits_in_the_queue_until_the_first_ends(digits: Dataset, jobs_to_stop,
                                                              manager_of) -> None:
    manager = manager_of(1)
    first = manager.submit(long_job(digits, jobs_to_stop))
    assert until(lambda: first.snapshot().progress is not None)
    assert first.snapshot().state == "running"
    second = TrainingJob(config(), digits, owner="second")
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


def test_one_waiting_job_per_owner(digits: Dataset, jobs_to_stop, manager_of) -> None:
    manager = manager_of(1)
    manager.submit(long_job(digits, jobs_to_stop, owner="ana"))
    waiting = TrainingJob(config(), digits, owner="ana")
    jobs_to_stop.append(waiting)
    manager.submit(waiting)  # ana's first job runs, so one may wait
    with pytest.raises(JobRefused, match="one waiting run"):
        manager.submit(TrainingJob(config(), digits, owner="ana"))
    other = TrainingJob(config(), digits, owner="ben")
    jobs_to_stop.append(other)
    manager.submit(other)  # someone else still gets in line, behind ana's
    assert until(lambda: (waiting.snapshot().queue_position, other.snapshot().queue_position) == (1, 2))
    assert manager.counts() == (1, 2)


def test_stopping_a_queued_job_removes_it_from_the_queue(digits: Dataset, jobs_to_stop,
                                                         manager_of) -> None:
    manager = manager_of(1)
    first = manager.submit(long_job(digits, jobs_to_stop))
    assert until(lambda: first.snapshot().state == "running")
    second = TrainingJob(config(), digits, owner="second")
    third = TrainingJob(config(), digits, owner="third")
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


def test_two_slots_run_two_jobs_at_once(digits: Dataset, jobs_to_stop, manager_of) -> None:
    manager = manager_of(2)
    a = manager.submit(long_job(digits, jobs_to_stop, owner="a"))
    b = manager.submit(long_job(digits, jobs_to_stop, owner="b"))
    assert until(lambda: a.snapshot().state == b.snapshot().state == "running")
    assert manager.counts() == (2, 0)
    assert until(lambda: a.snapshot().progress is not None and b.snapshot().progress is not None)


def test_stop_ends_a_running_job_and_keeps_its_epochs(digits: Dataset, tmp_path: Path,
                                                      manager_of) -> None:
    store = RunStore(tmp_path)
    job = manager_of(1).submit(TrainingJob(config(**{"train.epochs": 500}), digits, store=store))
    assert until(lambda: len(job.snapshot().history) >= 1)
    job.stop()
    assert job.wait(WAIT)
    snap = job.snapshot()
    assert snap.state == "stopped" and 1 <= len(snap.history) < 500
    assert snap.result is not None and snap.result.state_dict
    assert store.get_run(snap.run_id)["status"] == "stopped"


def test_an_orphaned_job_is_stopped_by_the_manager(digits: Dataset, jobs_to_stop, manager_of) -> None:
    manager = manager_of(1, orphan_seconds=1)
    job = manager.submit(long_job(digits, jobs_to_stop))
    # nobody calls snapshot(): within a few seconds the reaper stops it
    assert job.wait(WAIT)
    assert job.stop_event.is_set()
    snap = job.snapshot()
    assert snap.state == "stopped"
    assert len(snap.history) < 500


def test_an_orphaned_queued_job_leaves_the_queue(digits: Dataset, jobs_to_stop, manager_of) -> None:
    manager = manager_of(1, orphan_seconds=1)
    first = manager.submit(long_job(digits, jobs_to_stop))
    waiting = TrainingJob(config(), digits, owner="waiting")
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


def test_snapshot_is_safe_from_other_threads_while_training(digits: Dataset, manager_of) -> None:
    job = manager_of(1).submit(TrainingJob(config(**{"train.epochs": 4}), digits))
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
        versions = [snap.version for snap in mine]
        assert versions == sorted(versions)
        lengths = [len(snap.history) for snap in mine]
        assert lengths == sorted(lengths) and max(lengths, default=0) <= 4
        for snap in mine:
            steps = [s for s, _ in snap.batch_losses]
            assert steps == sorted(steps)
            assert [m.epoch for m in snap.history] == list(range(1, len(snap.history) + 1))
            assert snap.progress is None or isinstance(snap.progress, BatchProgress)
    running = [snap for mine in seen for snap in mine if snap.state == "running"]
    assert running, "no snapshot caught the job while it trained"


def test_a_watched_job_is_not_orphaned(digits: Dataset, manager_of) -> None:
    job = manager_of(1, orphan_seconds=1).submit(TrainingJob(config(**{"train.epochs": 20}), digits))
    while not job.done.wait(0.1):
        job.snapshot()
    assert job.snapshot().state == "finished"


def test_a_failure_in_training_is_reported_and_frees_the_slot(
        digits: Dataset, tmp_path: Path, runner, manager_of, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path)
    manager = manager_of(1)
    job = TrainingJob(config(), digits, store=store)
    if runner.name == "thread":
        def boom(*args, **kwargs):
            raise RuntimeError("boom")
        monkeypatch.setattr(thread_runner_module, "run_training", boom)
        expected = "RuntimeError: boom"
    elif runner.name == "process":  # the worker reads the dataset itself: point it at nothing
        job.source = DatasetSource("mnist", str(tmp_path / "nowhere"), 60000, 10000)
        expected = "No MNIST files found"
    else:  # a Ray task trains on the server's dataset from the object store: a broken label
        labels = digits.train_y.clone()
        labels[0] = 99
        job = TrainingJob(config(), replace(digits, name="digits-broken", train_y=labels), store=store)
        expected = "99 is out of bounds"
    manager.submit(job)
    assert job.wait(WAIT)
    snap = job.snapshot()
    assert snap.state == "failed" and expected in snap.message
    assert manager.counts() == (0, 0)
    monkeypatch.undo()
    after = manager.submit(TrainingJob(config(), digits))
    assert after.wait(WAIT) and after.snapshot().state == "finished"


def test_a_killed_worker_fails_its_job_and_the_next_job_finishes(
        digits: Dataset, tmp_path: Path, runner, manager_of) -> None:
    if runner.name != "process":
        pytest.skip("only the process runner has worker processes to kill")
    store = RunStore(tmp_path)
    manager = manager_of(1)
    job = manager.submit(TrainingJob(config(**{"train.epochs": 500}), digits, store=store))
    assert until(lambda: job.snapshot().progress is not None)
    pid = runner.busy_pid(job.id)
    assert pid is not None and pid != os.getpid()
    deaths = runner.deaths
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    assert job.wait(WAIT)
    snap = job.snapshot()
    assert snap.state == "failed"
    assert "The training process died (killed by SIGKILL): out of memory?" in snap.message
    assert runner.deaths == deaths + 1
    assert store.get_run(snap.run_id)["status"] == "failed"
    after = manager.submit(TrainingJob(config(), digits, store=store))
    assert after.wait(WAIT)
    assert after.snapshot().state == "finished", after.snapshot().message
    assert pid not in runner.pids()


def test_a_run_over_the_memory_limit_is_refused_before_it_starts(
        digits: Dataset, manager_of, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = manager_of(1)
    monkeypatch.setenv("DLLAB_MAX_JOB_MEMORY", "800M")
    big = TrainingJob(config(**{"model.hidden": (4096, 4096, 4096)}), digits, owner="big")
    assert big.memory.total > 800e6
    with pytest.raises(JobRefused, match=r"about \d.* GB of memory.*more than the 800 MB"):
        manager.submit(big)
    assert manager.counts() == (0, 0) and not big.thread.is_alive()
    small = manager.submit(TrainingJob(config(), digits, owner="small"))  # under the limit
    assert small.memory.total < 800e6
    assert small.wait(WAIT) and small.snapshot().state == "finished"
    monkeypatch.setenv("DLLAB_MAX_JOB_MEMORY", "lots")
    with pytest.raises(JobRefused, match="DLLAB_MAX_JOB_MEMORY"):
        manager.submit(TrainingJob(config(), digits, owner="small"))


def test_a_job_refuses_a_bad_config_at_once(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="train.lr"):
        TrainingJob(config(**{"train.lr": 0.0}), digits)


def test_expected_wait_fills_the_slots_in_order() -> None:
    assert expected_wait([], [], 1) == 0.0
    assert expected_wait([30.0], [], 1) == 30.0
    assert expected_wait([30.0], [10.0, 20.0], 1) == 60.0
    assert expected_wait([30.0, 5.0], [10.0], 2) == 15.0  # the job ahead takes the slot free at 5
    assert expected_wait([30.0], [10.0], 2) == 10.0  # a free slot takes the job ahead at once
    assert expected_wait([None], [], 1) is None and expected_wait([3.0], [None], 1) is None


def test_a_queued_job_sees_its_expected_wait(digits: Dataset, jobs_to_stop, manager_of) -> None:
    manager = manager_of(1)
    first = manager.submit(long_job(digits, jobs_to_stop))
    assert until(lambda: first.snapshot().progress is not None)
    second = TrainingJob(config(), digits, owner="second")
    jobs_to_stop.append(second)
    manager.submit(second)
    snap = second.snapshot()
    assert snap.queue_position == 1
    assert snap.expected_wait_s == pytest.approx(first.snapshot().progress.eta_s, rel=0.5)


def test_default_manager_is_one_per_process() -> None:
    assert jobs_module.default_manager() is jobs_module.default_manager()


def test_a_workers_stop_word_ends_its_run_within_one_step(digits: Dataset) -> None:
    """What a worker process trains with: the shared stop word, read every step, meant for one job."""
    import multiprocessing as mp

    from dlcore.engine.train import train
    from dlcore.runs.process_runner import _SharedStop

    word = mp.get_context("spawn").RawValue("q", 0)
    seen: list[int] = []

    def on_event(event) -> None:
        if isinstance(event, BatchProgress) and not seen:
            seen.append(event.step)
            word.value = 7  # what ProcessHandle.stop writes for job 7, from the server's side
    result = train(config(**{"train.epochs": 50}), digits, on_event=on_event,
                   stop=_SharedStop(word, 7), sync_every=1)
    assert result.status == "stopped"
    assert result.batch_losses[-1][0] <= seen[0] + 1
    other = train(config(**{"train.epochs": 1}), digits, stop=_SharedStop(word, 8))
    assert other.status == "finished"  # a stop meant for job 7 does not stop job 8


def test_a_run_gets_one_thread_while_others_wait(digits: Dataset, jobs_to_stop,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from dlcore.runs.thread_runner import ThreadRunner

    manager = JobManager(max_jobs=1, orphan_seconds=600, runner=ThreadRunner(1))
    assert manager.threads_for_next() == 0  # nobody waiting: the runner's share of the cores
    first = manager.submit(long_job(digits, jobs_to_stop))
    assert until(lambda: first.snapshot().state == "running")
    waiting = TrainingJob(config(), digits, owner="second")
    jobs_to_stop.append(waiting)
    manager.submit(waiting)
    assert manager.threads_for_next() == 1
    monkeypatch.setenv("DLLAB_WORKER_THREADS", "3")
    assert manager.threads_for_next() == 3


def test_the_class_rules_bind_students_at_submit_and_not_the_teacher(digits: Dataset, manager_of,
                                                                      jobs_to_stop) -> None:
    manager = manager_of(1)
    rules = ClassPolicy(fixed={"train.lr": 0.01}, caps={"train.epochs": 3})
    student, teacher = Person("s1", "Ada"), Person("t", "Teacher", teacher=True)
    for changes, broken in (({"train.lr": 0.1}, "Learning rate is fixed at 0.01"),
                            ({"train.lr": 0.01, "train.epochs": 4}, "epochs may be at most 3")):
        with pytest.raises(JobRefused, match=broken):
            manager.submit(TrainingJob(config(**changes), digits, owner="s1"), rules, student)
    allowed = TrainingJob(config(**{"train.lr": 0.01, "train.epochs": 3}), digits, owner="s1")
    jobs_to_stop.append(manager.submit(allowed, rules, student))
    assert allowed.wait(WAIT) and allowed.snapshot().state == "finished"
    teachers = TrainingJob(config(**{"train.lr": 0.1, "train.epochs": 4}), digits, owner="t")
    jobs_to_stop.append(manager.submit(teachers, rules, teacher))
    assert teachers.wait(WAIT) and teachers.snapshot().state == "finished"


def test_a_job_expected_to_take_too_long_is_refused_before_it_starts(digits: Dataset,
                                                                     manager_of) -> None:
    job = TrainingJob(config(**{"train.epochs": 500}), digits, owner="s1")
    assert job.estimate_seconds() > 1.0  # 500 epochs of 1,437 images
    with pytest.raises(JobRefused, match=r"would take about .* \(estimate\), and a run may take at "
                                         r"most 1 s"):
        manager_of(1).submit(job, ClassPolicy(max_job_seconds=1.0), Person("s1", "Ada"))
    assert not job.thread.is_alive() and job.snapshot().state == "queued"
    teacher = Person("t", "Teacher", teacher=True)  # the time cap binds the teacher too
    with pytest.raises(JobRefused, match="at most 1 s"):
        manager_of(1).submit(TrainingJob(config(**{"train.epochs": 500}), digits, owner="t"),
                             ClassPolicy(max_job_seconds=1.0), teacher)


def test_a_job_past_the_time_limit_is_stopped_with_its_epochs_kept(digits: Dataset, tmp_path: Path,
                                                                   manager_of, jobs_to_stop,
                                                                   monkeypatch) -> None:
    # An estimate can be short (a busy machine): the cap still holds, by the clock.
    monkeypatch.setattr(TrainingJob, "estimate_seconds", lambda self: 0.5)
    store = RunStore(tmp_path)
    job = TrainingJob(config(**{"train.epochs": 500}), digits, store=store, owner="s1",
                      owner_name="Ada")
    jobs_to_stop.append(job)
    manager_of(1).submit(job, ClassPolicy(max_job_seconds=2.0), Person("s1", "Ada"))
    assert job.wait(WAIT)
    snap = job.snapshot()
    assert snap.state == "stopped" and "time limit of 2 s" in snap.message
    assert 1 <= len(snap.history) < 500 and f"its {len(snap.history)} finished" in snap.message
    run = store.get_run(snap.run_id)
    assert run["status"] == "stopped" and "time limit" in run["message"]
    assert (run["owner"], run["owner_name"]) == ("s1", "Ada")
    assert len(store.epochs(snap.run_id)) == len(snap.history)


def _snapshot(state: str, epoch: int = 3, eta: float = 0.2, step: int = 150) -> JobSnapshot:
    progress = BatchProgress(epoch=epoch, epochs=3, step=step, epoch_step=step - 100 * (epoch - 1),
                             steps_per_epoch=100, loss=0.3, samples_per_s=1000.0, eta_s=eta)
    return JobSnapshot(state=state, config=RunConfig(), queue_position=None, progress=progress,
                       history=(), batch_losses=(), message="", run_id=None, result=None)


def test_the_redraw_pace_follows_the_state() -> None:
    assert _snapshot("running").redraw_seconds == jobs_module.REDRAW_SECONDS
    assert _snapshot("queued").redraw_seconds == jobs_module.QUEUED_REDRAW_SECONDS
    assert _snapshot("finished").redraw_seconds is None


def test_the_done_fraction_counts_steps_of_every_epoch() -> None:
    assert _snapshot("running", epoch=2, step=150).done_fraction == pytest.approx(0.5)
    assert _snapshot("queued").done_fraction == 0.0
    assert replace(_snapshot("running"), progress=None).done_fraction == 0.0


def test_a_redraw_waits_for_the_end_only_when_it_comes_within_one_redraw() -> None:
    assert _snapshot("running", eta=0.2).end_wait() == pytest.approx(
        0.2 + jobs_module.END_ALLOWANCE_SECONDS)
    assert _snapshot("running", eta=5.0).end_wait() == 0.0  # later than one redraw
    assert _snapshot("running", epoch=2, eta=0.1).end_wait() == 0.0  # an epoch's test pass first
    assert _snapshot("queued", eta=0.1).end_wait() == 0.0
    assert _snapshot("finished", eta=0.1).end_wait() == 0.0



def test_the_per_epoch_figure_changes_with_each_epoch_and_the_end_only() -> None:
    running = _snapshot("running")
    assert _snapshot("queued").epochs_shown is None
    assert running.epochs_shown == (0, True)
    assert replace(running, history=(object(),)).epochs_shown == (1, True)
    assert replace(running, progress=None).epochs_shown == running.epochs_shown  # a step is not an epoch


def test_the_sidebar_summary_says_where_the_job_is() -> None:
    assert replace(_snapshot("queued"), queue_position=2).summary == "waiting, place 2 in the queue"
    assert _snapshot("running").summary == "training, epoch 3/3"
    assert replace(_snapshot("running"), progress=None).summary == "starting"
    assert _snapshot("stopped").summary == "stopped"


class _JobWithRun:
    def __init__(self, run_id: int | None) -> None:
        self.run_id = run_id

    def snapshot(self) -> JobSnapshot:
        return replace(_snapshot("finished"), run_id=self.run_id)


def test_a_sessions_runs_are_its_earlier_runs_and_its_jobs_once_recorded() -> None:
    from dlcore.runs.jobs import runs_of_session

    assert runs_of_session([], None) == []
    assert runs_of_session([3], _JobWithRun(None)) == [3]  # not recorded yet
    assert runs_of_session([3], _JobWithRun(7)) == [3, 7]
    assert runs_of_session([3, 7], _JobWithRun(7)) == [3, 7]  # counted once


def test_a_worker_never_runs_the_servers_main_script(digits: Dataset, tmp_path: Path) -> None:
    """Each Streamlit session's script runner installs the app script as `__main__` from its own
    thread; a worker launched meanwhile must not re-import it (the app would run in the worker)."""
    import sys
    import types

    from dlcore.runs.process_runner import ProcessRunner

    marker = tmp_path / "the app ran"
    app = tmp_path / "app.py"
    app.write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit('the app ran in a worker')\n")
    fake = types.ModuleType("__main__")
    fake.__file__ = str(app)
    real, stop = sys.modules["__main__"], threading.Event()

    def install() -> None:  # what a session's script runner does, over and over
        while not stop.is_set():
            sys.modules["__main__"] = fake
            time.sleep(0)

    installer = threading.Thread(target=install, daemon=True)
    installer.start()
    runner = ProcessRunner(slots=1, threads=1)
    try:
        runner.warm()
        job = JobManager(runner=runner).submit(TrainingJob(config(), digits))
        assert job.wait(120)
    finally:
        stop.set()
        installer.join()
        sys.modules["__main__"] = real
        runner.close()
    assert not marker.exists()
    assert job.snapshot().state == "finished", job.snapshot().message
