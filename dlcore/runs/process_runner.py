"""The `process` runner (the default): a warm pool of worker processes, one run at a time in each.

Workers are started with the spawn context (so CUDA works in them) on first use and kept, so a job
does not pay the torch import again. Each has a pipe for tasks, a pipe for events and a shared stop
word; a worker loads the dataset itself (cached), trains, and sends back events and the result.
One reader thread in the server waits on every worker's event pipe and process sentinel, applies
events to their jobs, and, when a worker dies (SIGKILL, a segfault, the OOM killer), fails its job
with a clear message and starts a replacement, so the server and the next job carry on.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import spawn
from multiprocessing.connection import Connection, wait

from dlcore.engine.dataset import Dataset
from dlcore.runs.runner import (
    DIED_MESSAGE,
    JobSpec,
    Outcome,
    RunEvent,
    RunFailed,
    failure_text,
    from_wire,
    load_source,
    run_training,
    to_wire,
)

_FINISHED, _FAILED = "finished", "failed"


_main_lock = threading.Lock()


@contextmanager
def _launch_without_main() -> Iterator[None]:
    """A spawned process first re-imports the parent's `__main__`. Under Streamlit that is the app
    script (each session's script runner installs it as `__main__`, from its own thread), which
    would run the whole app in the worker, where it fails starting a worker of its own. Swapping
    `__main__` out while launching is not enough: another session's script run can put it back in
    between (seen with 8 sessions opening at once). So while a worker is launched, the data a spawned
    child is prepared from names no main module at all; the worker needs none."""
    with _main_lock:
        prepare = spawn.get_preparation_data

        def without_main(name: str) -> dict:
            data = prepare(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        spawn.get_preparation_data = without_main
        try:
            yield
        finally:
            spawn.get_preparation_data = prepare


class _SharedStop:
    """The worker's view of the stop word: set when it holds this job's id. Read without a lock, so
    a worker killed mid-read can never leave a lock held for the server."""

    def __init__(self, word, job_id: int) -> None:
        self.word, self.job_id = word, job_id

    def is_set(self) -> bool:
        return self.word.value == self.job_id


def _worker_main(tasks: Connection, events: Connection, stop_word, threads: int) -> None:
    """A worker's life: take a task, train, send events and the outcome; end when the server does."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal is the server's
    if threads > 0:
        torch.set_num_threads(threads)
    _warm_up()
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        spec: JobSpec = task
        torch.set_num_threads(spec.threads or threads or torch.get_num_threads())

        def emit(event: RunEvent, job_id: int = spec.job_id) -> None:
            events.send((job_id, event))
        try:
            dataset = load_source(spec.source)
            result = run_training(spec, dataset, emit, _SharedStop(stop_word, spec.job_id))
            events.send((spec.job_id, (_FINISHED, to_wire(result))))
        except (BrokenPipeError, EOFError):
            return  # the server is gone
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the page in words
            try:
                events.send((spec.job_id, (_FAILED, failure_text(exc))))
            except OSError:
                return


def _warm_up() -> None:
    """A few steps of a tiny MLP and CNN, so the kernels and thread pools a first run would set up
    are ready before a learner presses Train (measured: the first step of a fresh worker took 1 s)."""
    import torch

    from dlcore.engine.config import ModelSpec
    from dlcore.engine.models import build_model

    for spec in (ModelSpec(hidden=(8,)), ModelSpec(kind="cnn", conv_channels=(4,), dense=8)):
        model = build_model(spec, (1, 28, 28), 10)
        optimizer = torch.optim.Adam(model.parameters(), fused=True)
        for _ in range(2):
            loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 28, 28)),
                                                     torch.zeros(4, dtype=torch.long))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()


class ProcessHandle(Outcome):
    def __init__(self, worker: _Worker, job_id: int, on_event: Callable[[RunEvent], None]) -> None:
        super().__init__()
        self.worker, self.job_id, self.on_event = worker, job_id, on_event

    def stop(self) -> None:
        self.worker.stop_word.value = self.job_id


class _Worker:
    def __init__(self, ctx, threads: int) -> None:
        task_end, self.tasks = ctx.Pipe(duplex=False)  # (receiving end, sending end)
        self.events, event_end = ctx.Pipe(duplex=False)
        self.stop_word = ctx.RawValue("q", 0)
        self.process = ctx.Process(target=_worker_main, args=(task_end, event_end, self.stop_word,
                                                              threads),
                                   name="dllab-worker", daemon=True)
        with _launch_without_main():
            self.process.start()
        task_end.close()  # the worker's ends live in the worker now
        event_end.close()
        self.handle: ProcessHandle | None = None

    def describe_death(self) -> str:
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"


class ProcessRunner:
    name = "process"

    def __init__(self, slots: int = 1, threads: int | None = None) -> None:
        self.slots = max(1, slots)
        self.threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // self.slots)
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._next_id = 0
        self._reader: threading.Thread | None = None
        self._closed = False
        self.deaths = 0
        # Before multiprocessing's own exit handler kills the workers, or the reader would replace them.
        atexit.register(self.close)

    def describe(self) -> str:
        return f"worker processes ({self.slots} at once)"

    def warm(self) -> None:
        """Start the pool now (in the background), so the first Train does not wait for it."""
        with self._lock:
            self._fill()

    def _fill(self) -> None:
        if self._closed:
            raise RunFailed("the process runner has been closed")
        while len(self._workers) < self.slots:
            self._workers.append(_Worker(self._ctx, self.threads))
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_forever, name="dllab-runner-reader",
                                            daemon=True)
            self._reader.start()

    def start(self, spec: JobSpec, dataset: Dataset,
              on_event: Callable[[RunEvent], None]) -> ProcessHandle:
        with self._lock:
            self._fill()
            idle = [w for w in self._workers if w.handle is None and w.process.is_alive()]
            if not idle:
                raise RunFailed("no idle training process (more jobs started than slots)")
            worker = idle[0]
            handle = ProcessHandle(worker, spec.job_id, on_event)
            worker.handle = handle
            worker.stop_word.value = 0
            try:
                worker.tasks.send(spec)
            except OSError:
                worker.handle = None
                raise RunFailed("the training process could not take the job") from None
        return handle

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers]

    def busy_pid(self, job_id: int) -> int | None:
        """The pid of the worker training `job_id` (for tests that kill one)."""
        with self._lock:
            return next((w.process.pid for w in self._workers
                         if w.handle is not None and w.handle.job_id == job_id), None)

    def _read_forever(self) -> None:
        while not self._closed:
            with self._lock:
                workers = list(self._workers)
            by_wait = {w.events: w for w in workers} | {w.process.sentinel: w for w in workers}
            try:
                ready = wait(list(by_wait), timeout=0.2)
            except OSError:
                time.sleep(0.05)
                continue
            for obj in ready:
                worker = by_wait[obj]
                if obj is worker.events:
                    self._drain(worker)
                elif not worker.process.is_alive():
                    self._bury(worker)

    def _drain(self, worker: _Worker) -> None:
        try:
            while worker.events.poll():
                job_id, message = worker.events.recv()
                self._apply(worker, job_id, message)
        except (EOFError, OSError):
            pass  # the worker is gone: its sentinel reports it

    def _apply(self, worker: _Worker, job_id: int, message) -> None:
        handle = worker.handle
        if handle is None or handle.job_id != job_id:
            return  # a late event of a job already ended
        if isinstance(message, tuple) and message[0] in (_FINISHED, _FAILED):
            with self._lock:
                worker.handle = None
            if message[0] == _FINISHED:
                handle._end(from_wire(message[1]))
            else:
                handle._end(None, message[1])
            return
        try:
            handle.on_event(message)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the reader
            pass

    def _bury(self, worker: _Worker) -> None:
        self._drain(worker)  # what it said before dying, a finished result included
        with self._lock:
            if worker not in self._workers:
                return
            self._workers.remove(worker)
            handle, worker.handle = worker.handle, None
            self.deaths += 1
            for conn in (worker.tasks, worker.events):
                conn.close()
            if not self._closed:
                self._fill()
        if handle is not None:
            handle._end(None, DIED_MESSAGE.format(how=worker.describe_death()))

    def close(self) -> None:
        """Stop every worker (their runs end as failed) and the reader."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            try:
                worker.tasks.send(None)
            except OSError:
                pass
        for worker in workers:
            worker.process.join(2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(2)
            if worker.handle is not None:
                worker.handle._end(None, "The server stopped its training processes.")
        if self._reader is not None:
            self._reader.join(2)
