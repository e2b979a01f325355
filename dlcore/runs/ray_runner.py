"""The `ray` runner: each job is a Ray task, for when a class or a sweep outgrows one machine.

`RAY_ADDRESS` (or `address`) picks the cluster; with neither, a local Ray instance starts on first
use (small object store, no dashboard). If the program already called `ray.init`, that Ray is used.

- **A task, not an actor.** A job is one call of `run_training` with a result: exactly a task. Ray
  places each task on any node with a free CPU (and `DLLAB_RAY_GPUS` of a GPU, asked for only when
  the cluster has GPUs, or the job would wait forever), runs it in a warm worker process, and
  `ray.cancel` can interrupt it, which an actor method could not. Tasks are never retried: a run
  that killed its worker (out of memory) would only do it again. GPU tasks get a fresh worker
  each (`max_calls=1`), so a process never keeps a CUDA context on a GPU it no longer holds.
- **The dataset** the page trained on goes to the object store once per `DatasetSource`; a node
  without the data folder trains on that copy.
- **Events** come back through one hub actor per runner: a task sends its events in batches every
  `FLUSH_S` (one small thread in the task), and one reader thread in the server takes them all from
  the hub and calls each job's `on_event`. Batches travel pickled and the hub never opens them (it
  would first have to import torch: seconds, and memory). The hub's reply to a batch says whether
  Stop was pressed, so the same thread stops the run within a step, keeping its epochs. A task
  that has not ended `stop_grace_s` after Stop is cancelled. The result is the task's return value
  (weights as numpy); the reader ends a handle only after taking the hub's events, so none come late.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import threading
import time
from collections.abc import Callable

import ray
import torch
from ray.exceptions import (
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    RayError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dlcore.engine.dataset import Dataset
from dlcore.engine.train import TrainResult
from dlcore.runs.runner import (
    DIED_MESSAGE,
    DatasetSource,
    JobSpec,
    Outcome,
    RunEvent,
    RunFailed,
    failure_text,
    from_wire,
    run_training,
    to_wire,
)
from dlcore.runs.runners import RunnerError

LOCAL_OBJECT_STORE = 200 * 1024**2  # bytes: a local instance holds a dataset or two, not a cache
FLUSH_S = 0.2  # how often a task sends its events (and hears about Stop)
POLL_S = 0.1  # how long the reader waits on the hub when nothing is there
STOPPED_MESSAGE = "Stopped: the run did not end by itself, so Ray cancelled it."
_FINISHED, _FAILED = "finished", "failed"


def parse_gpus(raw: str | float | None) -> float:
    """The share of a GPU each job asks for: `DLLAB_RAY_GPUS` (0 when unset), checked."""
    text = str(raw).strip() if raw is not None else ""
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value > 1 and not value.is_integer()):
        raise RunnerError(f"DLLAB_RAY_GPUS={text!r} is not a share of a GPU: use a number from 0 "
                          "to 1 (0.25 lets four jobs share one GPU) or a whole number of GPUs")
    return value


@ray.remote(num_cpus=0)
class _Hub:
    """Where tasks leave their events and the reader takes them; it also keeps who was stopped."""

    def __init__(self) -> None:
        self.events: list[tuple[int, bytes]] = []
        self.stopped: set[int] = set()
        self.arrived = asyncio.Event()

    async def put(self, job_id: int, events: bytes) -> bool:
        """Leave `events` (a pickled list); the answer is whether the job's Stop was pressed."""
        if events:
            self.events.append((job_id, events))
            self.arrived.set()
        return job_id in self.stopped

    async def take(self, timeout: float) -> list[tuple[int, bytes]]:
        """Every event left so far, waiting up to `timeout` seconds for one if there are none."""
        if not self.events and timeout > 0:
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout)
            except TimeoutError:
                pass
        self.arrived.clear()
        events, self.events = self.events, []
        return events

    async def stop(self, job_id: int) -> None:
        self.stopped.add(job_id)

    async def forget(self, job_id: int) -> None:
        self.stopped.discard(job_id)


class _Outbox:
    """A task's side of the hub: events batched by one thread, which also hears about Stop."""

    def __init__(self, hub, job_id: int) -> None:
        self.hub, self.job_id = hub, job_id
        self.stop = threading.Event()  # the flag run_training checks every step
        self._pending: list[RunEvent] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._send_forever, name="dllab-outbox", daemon=True)
        self._thread.start()

    def emit(self, event: RunEvent) -> None:
        with self._lock:
            self._pending.append(event)

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            if ray.get(self.hub.put.remote(self.job_id, pickle.dumps(batch) if batch else b"")):
                self.stop.set()
        except RayError:
            pass  # the hub is gone (the server went away): train on; the result still comes back

    def _send_forever(self) -> None:
        while not self._closed.wait(FLUSH_S):
            self._flush()

    def close(self) -> None:
        """Send what is left; after this returns, every event of the run is in the hub."""
        self._closed.set()
        self._thread.join()
        self._flush()


def _place() -> str:
    """This Ray node and process, in words a test (or a teacher) can match to `ray.nodes()`."""
    node = ray.get_runtime_context().get_node_id()
    return f"Ray node {ray.util.get_node_ip_address()} ({node[:8]}), pid {os.getpid()}"


def _train_job(spec: JobSpec, dataset: Dataset, hub) -> tuple[str, bytes | str]:
    """The task: `run_training` with this task's CPUs as torch threads and events to the hub."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    outbox = _Outbox(hub, spec.job_id)
    try:
        result = run_training(spec, dataset, outbox.emit, outbox.stop, place=_place())
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the page in words
        return _FAILED, failure_text(exc)
    finally:
        outbox.close()
    # Pickled here, so the server's copy owns its arrays and pins nothing in the object store.
    return _FINISHED, pickle.dumps(to_wire(result))


def _preload() -> None:
    """Import the training code in a worker, so the first job there does not wait for it."""
    import dlcore.engine.train  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo: seconds


class RayHandle(Outcome):
    def __init__(self, runner: RayRunner, job_id: int, ref: ray.ObjectRef,
                 on_event: Callable[[RunEvent], None]) -> None:
        super().__init__()
        self.runner, self.job_id, self.ref, self.on_event = runner, job_id, ref, on_event
        self.stop_asked: float | None = None  # time.monotonic() of the first Stop
        self.cancelled = False

    def stop(self) -> None:
        if self.stop_asked is None and not self._done.is_set():
            self.stop_asked = time.monotonic()
            self.runner._hub.stop.remote(self.job_id)


def _ending(ref: ray.ObjectRef, stopped: bool) -> tuple[TrainResult | None, str]:
    """A finished task's (result, error message)."""
    try:
        status, payload = ray.get(ref)
    except TaskCancelledError:
        return None, STOPPED_MESSAGE if stopped else "The Ray cluster cancelled the run."
    except OutOfMemoryError:
        return None, DIED_MESSAGE.format(how="Ray's memory monitor ended it")
    except WorkerCrashedError:
        return None, DIED_MESSAGE.format(how="its Ray worker process crashed or was killed")
    except (NodeDiedError, ObjectLostError):
        return None, DIED_MESSAGE.format(how="its Ray node was lost")
    except RayTaskError as exc:  # something outside run_training (e.g. the task's arguments)
        return None, failure_text(exc.cause or exc)
    except RayError as exc:
        return None, f"The Ray cluster could not run the job: {type(exc).__name__}: {exc}"
    if status == _FINISHED:
        return from_wire(pickle.loads(payload)), ""
    return None, str(payload)


class RayRunner:
    name = "ray"
    stop_grace_s = 10.0  # seconds after Stop before a task that has not ended is cancelled

    def __init__(self, slots: int = 1, address: str | None = None,
                 gpus_per_job: float | None = None, init_kwargs: dict | None = None) -> None:
        self.slots = max(1, slots)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.gpus = parse_gpus(gpus_per_job if gpus_per_job is not None
                               else os.environ.get("DLLAB_RAY_GPUS"))
        self.init_kwargs = dict(init_kwargs or {})
        self._lock = threading.Lock()
        self._hub = None
        self._task = None  # the remote function, with this cluster's resource requests
        self._gpus_asked = 0.0
        self._datasets: dict[DatasetSource, ray.ObjectRef] = {}
        self._handles: dict[int, RayHandle] = {}
        self._reader: threading.Thread | None = None  # also the thread that joins Ray
        self._ready = threading.Event()
        self._connect_error = ""
        self._closing = threading.Event()
        self._owns_ray = False
        self._warmed = False
        self._described = (0.0, "")  # (when, text): pages ask on every rerun; the cluster is asked every 10 s

    # -- connecting ---------------------------------------------------------------------------

    def _connect(self) -> None:
        """Start the reader thread, which joins (or starts) Ray and the hub, and wait until it has."""
        with self._lock:
            if self._closing.is_set():
                raise RunFailed("the Ray runner has been closed")
            if self._reader is None:
                self._ready.clear()
                self._reader = threading.Thread(target=self._serve, name="dllab-ray-reader",
                                                daemon=True)
                self._reader.start()
            reader = self._reader
        self._ready.wait()
        if self._hub is None:
            with self._lock:
                if self._reader is reader:
                    self._reader = None  # the next job tries again
            raise RunFailed(self._connect_error)

    def _serve(self) -> None:
        """The reader thread's life. Ray started from Python dies with the *thread* that started it
        (its processes get a parent-death signal), so Ray starts here, in a thread that lasts as long
        as the runner, not in the job or page thread that happened to need it first."""
        try:
            self._join_ray()
        except Exception as exc:  # noqa: BLE001 - shown to whoever pressed Train
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            self._connect_error = f"Could not start or reach {where}: {type(exc).__name__}: {exc}"
            return
        finally:
            self._ready.set()
        try:
            self._read_forever()
        finally:
            if self._owns_ray:
                ray.shutdown()
                self._owns_ray = False

    def _join_ray(self) -> None:
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False,
                       "ignore_reinit_error": True}
            if self.address is None:
                options["object_store_memory"] = LOCAL_OBJECT_STORE
            ray.init(address=self.address, **{**options, **self.init_kwargs})
            self._owns_ray = True
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        self._gpus_asked = self.gpus if has_gpus else 0.0
        self._task = ray.remote(num_cpus=1, num_gpus=self._gpus_asked, max_retries=0,
                                max_calls=1 if self._gpus_asked else 0)(_train_job)
        here = ray.get_runtime_context().get_node_id()  # the hub lives by the server if it can
        hub = _Hub.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True)
                           ).remote()
        ray.get(hub.take.remote(0))  # up now (a new process), not with the first job's events
        self._hub = hub

    def warm(self) -> None:
        """Connect now, and have workers import torch, so the first Train does not wait. Pages call
        this on every rerun: only the first call does anything."""
        self._connect()
        with self._lock:
            if self._warmed:
                return
            self._warmed = True
        if not self._gpus_asked:
            for _ in range(self.slots):
                ray.remote(num_cpus=1)(_preload).remote()

    def describe(self) -> str:
        when, text = self._described
        if time.monotonic() - when < 10.0 and text:
            return text
        text = self._describe()
        self._described = (time.monotonic(), text)
        return text

    def _describe(self) -> str:
        if not ray.is_initialized():
            where = f"at {self.address}" if self.address else "(a local instance)"
            return f"Ray cluster {where}, connecting on first use"
        nodes = sum(1 for node in ray.nodes() if node["Alive"])
        res = ray.cluster_resources()
        what = (f"{nodes} node{'s' * (nodes != 1)}, {res.get('CPU', 0):g} CPUs, "
                f"{res.get('GPU', 0):g} GPUs")
        if self._gpus_asked:
            what += f"; {self._gpus_asked:g} GPU per job"
        if self._owns_ray and self.address is None:
            return f"local Ray instance ({what})"
        return f"Ray cluster at {ray.get_runtime_context().gcs_address} ({what})"

    # -- jobs ---------------------------------------------------------------------------------

    def start(self, spec: JobSpec, dataset: Dataset,
              on_event: Callable[[RunEvent], None]) -> RayHandle:
        self._connect()
        with self._lock:
            if self._closing.is_set():
                raise RunFailed("the Ray runner has been closed")
            ref = self._datasets.get(spec.source)
            if ref is None:
                while len(self._datasets) >= 2:  # Ray keeps a running task's copy until it ends
                    self._datasets.pop(next(iter(self._datasets)))
                ref = self._datasets[spec.source] = ray.put(dataset)
            handle = RayHandle(self, spec.job_id, self._task.remote(spec, ref, self._hub), on_event)
            self._handles[spec.job_id] = handle
        return handle

    def _read_forever(self) -> None:
        while not self._closing.is_set():
            try:
                self._read_once()
            except Exception:  # noqa: BLE001 - Ray unreachable for a moment: try again
                self._closing.wait(1.0)

    def _read_once(self) -> None:
        """Apply every event in the hub; end the handles of ended tasks; cancel unheeded Stops."""
        with self._lock:
            running = list(self._handles.values())
        ended: list[RayHandle] = []
        if running:
            ready, _ = ray.wait([h.ref for h in running], num_returns=len(running), timeout=0)
            ready_set = set(ready)
            ended = [h for h in running if h.ref in ready_set]
        try:  # after ray.wait: an ended task's last events are in the hub already
            batches = ray.get(self._hub.take.remote(0 if ended else POLL_S))
        except RayError:  # the hub is gone: runs still end, without their last events
            batches = []
            self._closing.wait(POLL_S)
        for job_id, blob in batches:
            with self._lock:
                handle = self._handles.get(job_id)
            for event in pickle.loads(blob) if handle is not None else ():
                try:
                    handle.on_event(event)
                except Exception:  # noqa: BLE001 - a broken listener must not stop the reader
                    pass
        for handle in ended:
            with self._lock:
                self._handles.pop(handle.job_id, None)
            handle._end(*_ending(handle.ref, handle.stop_asked is not None))
            self._hub.forget.remote(handle.job_id)
        now = time.monotonic()
        for handle in running:
            if (handle not in ended and handle.stop_asked is not None and not handle.cancelled
                    and now - handle.stop_asked > self.stop_grace_s):
                handle.cancelled = True
                ray.cancel(handle.ref, force=False)

    def close(self) -> None:
        """Cancel running tasks (their jobs fail), end the reader, and end Ray if this started it."""
        with self._lock:
            self._closing.set()
            handles, self._handles = list(self._handles.values()), {}
            reader, hub = self._reader, self._hub
        for handle in handles:
            handle._end(None, "The server stopped its Ray runs.")
        if ray.is_initialized():
            for handle in handles:
                ray.cancel(handle.ref, force=False)
            if hub is not None:
                ray.kill(hub)
        self._datasets.clear()
        if reader is not None:
            reader.join(30)  # the reader shuts Ray down if this runner started it
