"""The `thread` runner: trains in a thread of this process, on the page's own dataset object.

For tests and debugging: a run here shares the server's interpreter, memory and fate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dlcore.dataset import Dataset
from dlcore.runs.runner import JobSpec, RunEvent, RunFailed, failure_text, run_training
from dlcore.train import TrainResult


class ThreadHandle:
    def __init__(self, spec: JobSpec, dataset: Dataset, on_event: Callable[[RunEvent], None]) -> None:
        self._stop = threading.Event()
        self._done = threading.Event()
        self._result: TrainResult | None = None
        self._error = ""
        self.thread = threading.Thread(target=self._run, args=(spec, dataset, on_event),
                                       name="dllab-training", daemon=True)
        self.thread.start()

    def _run(self, spec: JobSpec, dataset: Dataset, on_event: Callable[[RunEvent], None]) -> None:
        try:
            self._result = run_training(spec, dataset, on_event, self._stop)
        except Exception as exc:  # reported through outcome(); the thread must not die silently
            self._error = failure_text(exc)
        finally:
            self._done.set()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def outcome(self) -> TrainResult:
        self._done.wait()
        if self._result is None:
            raise RunFailed(self._error or "the run ended without a result")
        return self._result


class ThreadRunner:
    name = "thread"

    def __init__(self, slots: int = 1) -> None:
        self.slots = max(1, slots)

    def start(self, spec: JobSpec, dataset: Dataset,
              on_event: Callable[[RunEvent], None]) -> ThreadHandle:
        return ThreadHandle(spec, dataset, on_event)

    def describe(self) -> str:
        return f"threads of the server ({self.slots} at once)"

    def warm(self) -> None:
        pass

    def close(self) -> None:
        pass
