"""The `ray` runner: jobs as Ray tasks, on a simulated two-node cluster and on a local instance.

Ray is optional (requirements-ray.txt). Without it these tests skip, except under CI (the CI
variable set), whose test command installs it: there they fail instead. Ray is kept small (1-2
CPUs, no GPUs even where there are some, a 100 MB object store per node) and never left running:
the two-node cluster is built and shut down inside its test, which runs first; the local instance
is started by the runner itself for the rest of the module and ended by its `close()`.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from dlcore.engine.config import RunConfig
from dlcore.engine.data import load_dataset
from dlcore.engine.dataset import Dataset
from dlcore.engine.models import build_model
from dlcore.runs.jobs import JobManager, JobSnapshot, TrainingJob
from dlcore.runs.runner import DatasetSource, JobSpec, RunFailed
from dlcore.runs.runners import RAY_INSTALL, RunnerError, make_runner
from dlcore.runs.store import RunStore

try:
    import ray
except ImportError:
    ray = None

SMALL = {"train.dataset": "digits", "model.hidden": (32,), "train.batch_size": 32,
         "train.epochs": 2, "train.device": "cpu"}
WAIT = 120.0  # generous: a busy 2-core machine can be very slow; nothing here asserts a speed
STORE = 100 * 1024**2  # object store bytes per node


def need_ray() -> None:
    if ray is None:
        reason = f"Ray is not installed ({RAY_INSTALL})"
        if os.environ.get("CI"):
            pytest.fail(f"the Ray runner cannot be tested in CI: {reason}")
        pytest.skip(reason)


def config(**changes) -> RunConfig:
    return RunConfig().replace(**{**SMALL, **changes})


def until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def node_of(snap: JobSnapshot) -> str:
    """The short Ray node id in a job's place ('CPU (1 thread) on Ray node IP (id), pid N')."""
    found = re.search(r"Ray node \S+ \((\w+)\)", snap.place)
    assert found, f"no Ray node in {snap.place!r}"
    return found.group(1)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def no_ray_address():
    saved = os.environ.pop("RAY_ADDRESS", None)
    yield
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved


def test_a_class_s_jobs_land_on_both_nodes_of_a_two_node_cluster(digits: Dataset,
                                                                 no_ray_address) -> None:
    """Two single-CPU nodes on this machine: two students' jobs train at once, one on each, and
    their events reach the server while they run. (First in the module: Ray is not running yet.)"""
    need_ray()
    from ray.cluster_utils import Cluster

    from dlcore.runs.ray_runner import RayRunner

    assert not ray.is_initialized(), "the cluster test must run before the local instance starts"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "object_store_memory": STORE, "include_dashboard": False})
    runner = None
    try:
        cluster.add_node(num_cpus=1, num_gpus=0, object_store_memory=STORE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        runner = RayRunner(slots=2, gpus_per_job=0)
        manager = JobManager(runner=runner)
        jobs = [manager.submit(TrainingJob(config(**{"train.epochs": 6, "train.batch_size": 8}),
                                                   digits, owner=owner))
                for owner in ("ada", "alan")]
        live: set[str] = set()  # owners whose progress arrived while their job was running
        deadline = time.monotonic() + WAIT
        while not all(job.done.is_set() for job in jobs) and time.monotonic() < deadline:
            for job in jobs:
                snap = job.snapshot()
                if snap.state == "running" and snap.progress is not None:
                    live.add(job.owner)
            time.sleep(0.05)
        snaps = [job.snapshot() for job in jobs]
        assert [s.state for s in snaps] == ["finished", "finished"], [s.message for s in snaps]
        assert all(len(s.history) == 6 for s in snaps)
        assert live == {"ada", "alan"}
        nodes = {node["NodeID"][:8] for node in ray.nodes()}
        assert len(nodes) == 2
        assert {node_of(s) for s in snaps} == nodes, [s.place for s in snaps]
        assert re.match(r"Ray cluster at \S+ \(2 nodes, 2 CPUs, 0 GPUs\)", runner.describe())
    finally:
        if runner is not None:
            runner.close()
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def runner(no_ray_address):
    """A runner that starts its own local Ray instance (small), and ends it on close(). Not warmed:
    the first job's thread connects, and ends long before Ray may."""
    need_ray()
    from dlcore.runs.ray_runner import RayRunner

    assert not ray.is_initialized()
    runner = RayRunner(slots=1, gpus_per_job=0,
                       init_kwargs={"num_cpus": 2, "num_gpus": 0, "object_store_memory": STORE})
    yield runner
    runner.close()
    left_running = ray.is_initialized()
    ray.shutdown()
    assert not left_running, "close() left running the Ray instance the runner started"


@pytest.fixture
def manager(runner) -> JobManager:
    return JobManager(runner=runner)


def test_a_job_trains_as_a_ray_task_and_is_recorded(runner, manager: JobManager, digits: Dataset,
                                                    tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    job = manager.submit(TrainingJob(config(), digits, store=store, name="ray test"))
    assert job.wait(WAIT)
    snap = job.snapshot()
    assert snap.state == "finished", snap.message
    assert [m.epoch for m in snap.history] == [1, 2]
    assert snap.batch_losses and snap.first_layer is not None
    assert f"pid {os.getpid()}" not in snap.place and "Ray node" in snap.place
    model = build_model(job.config.model, digits.shape, digits.num_classes)
    model.load_state_dict(snap.result.state_dict)
    run = store.get_run(snap.run_id)
    assert (run["status"], run["name"]) == ("finished", "ray test")
    assert len(store.epochs(snap.run_id)) == 2
    assert re.fullmatch(r"local Ray instance \(1 node, 2 CPUs, 0 GPUs\)", runner.describe())


def test_stop_ends_a_long_run_within_a_step_and_keeps_its_epochs(runner, manager: JobManager,
                                                                 digits: Dataset) -> None:
    job = manager.submit(TrainingJob(config(**{"train.epochs": 500}), digits))
    try:
        assert until(lambda: len(job.snapshot().history) >= 1)  # live epochs reach the server
    finally:
        asked = time.monotonic()
        job.stop()
        assert job.wait(WAIT)
    took = time.monotonic() - asked
    snap = job.snapshot()
    assert snap.state == "stopped", snap.message
    assert 1 <= len(snap.history) < 500
    assert took < runner.stop_grace_s  # the task heard Stop; a cancelled one would have failed


def test_a_training_error_fails_the_job_and_the_next_job_finishes(manager: JobManager,
                                                                  digits: Dataset) -> None:
    """A label out of range passes every check the server makes (shapes, memory) and fails in
    the worker's first step; the job fails with the error in words, and the next job trains."""
    labels = digits.train_y.clone()
    labels[0] = 99
    broken = replace(digits, name="digits-broken", train_y=labels)
    bad = manager.submit(TrainingJob(config(), broken))
    assert bad.wait(WAIT)
    snap = bad.snapshot()
    assert snap.state == "failed"
    assert "IndexError" in snap.message and "99 is out of bounds" in snap.message, snap.message
    good = manager.submit(TrainingJob(config(), digits))
    assert good.wait(WAIT) and good.snapshot().state == "finished", good.snapshot().message


def test_a_killed_worker_fails_its_job_with_a_clear_message(manager: JobManager,
                                                            digits: Dataset) -> None:
    job = manager.submit(TrainingJob(config(**{"train.epochs": 500}), digits))
    try:
        assert until(lambda: "pid" in job.snapshot().place)  # its Started event came back
        pid = int(re.search(r"pid (\d+)", job.snapshot().place).group(1))
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        assert job.wait(WAIT)
    finally:
        job.stop()
    snap = job.snapshot()
    assert snap.state == "failed"
    assert "The training process died" in snap.message and "Ray worker" in snap.message
    after = manager.submit(TrainingJob(config(), digits))
    assert after.wait(WAIT) and after.snapshot().state == "finished", after.snapshot().message


def test_stop_cancels_a_task_that_never_answers(runner, digits: Dataset,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A task still waiting for a CPU (here both are held by another task) cannot hear Stop:
    after the grace period the runner cancels it."""
    monkeypatch.setattr(runner, "stop_grace_s", 0.3)
    hog = ray.remote(num_cpus=2)(lambda: time.sleep(60)).remote()  # a lambda travels by value
    try:
        assert until(lambda: ray.available_resources().get("CPU", 0) == 0)
        spec = JobSpec(10**6, config(), DatasetSource.of(digits))
        handle = runner.start(spec, digits, lambda event: None)
        assert not handle.wait(0.5)  # waiting for the CPUs
        handle.stop()
        assert handle.wait(WAIT)
        with pytest.raises(RunFailed, match="Stopped: .*Ray cancelled it"):
            handle.outcome()
    finally:
        ray.cancel(hog, force=True)


def test_gpus_are_asked_for_only_where_the_cluster_has_them(runner, monkeypatch) -> None:
    from dlcore.runs.ray_runner import RayRunner, parse_gpus

    assert parse_gpus(None) == parse_gpus(" ") == 0.0 and parse_gpus("0.25") == 0.25
    for bad in ("lots", "-1", "1.5", "nan"):
        monkeypatch.setenv("DLLAB_RAY_GPUS", bad)
        with pytest.raises(RunnerError, match="DLLAB_RAY_GPUS"):
            RayRunner()
    monkeypatch.setenv("DLLAB_RAY_GPUS", "0.25")
    sharing = RayRunner()
    assert sharing.gpus == 0.25
    try:
        sharing.warm()  # joins the local instance (no GPUs): asks for none, or jobs would wait
        assert sharing._gpus_asked == 0.0
    finally:
        sharing.close()
    assert ray.is_initialized()  # not this runner's to end


def test_choosing_ray_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "dlcore.runs.ray_runner", raising=False)
    with pytest.raises(RunnerError, match=re.escape(RAY_INSTALL)):
        make_runner("ray", slots=1)
