"""The `thread` runner: trains in a thread of this process, on the page's own dataset object.

For tests and debugging: a run here shares the server's interpreter, memory and fate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dlcore.engine.dataset import Dataset
from dlcore.runs.runner import JobSpec, Outcome, RunEvent, failure_text, run_training


class ThreadHandle(Outcome):
    def __init__(self, spec: JobSpec, dataset: Dataset, on_event: Callable[[RunEvent], None]) -> None:
        super().__init__()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(spec, dataset, on_event),
                                       name="dllab-training", daemon=True)
        self.thread.start()

    def _run(self, spec: JobSpec, dataset: Dataset, on_event: Callable[[RunEvent], None]) -> None:
        try:
            self._end(run_training(spec, dataset, on_event, self._stop))
        except Exception as exc:  # reported through outcome(); the thread must not die silently
            self._end(None, failure_text(exc))

    def stop(self) -> None:
        self._stop.set()


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
