"""What every runner shares: a job's spec, the messages it sends back, and the training function.

A runner takes a `JobSpec` and returns a `RunHandle` (the small interface: events back through
`on_event`, `stop`, `wait`, `outcome`). Wherever it trains (a thread, a worker process, a Ray task),
it calls `run_training`, which loads the dataset from its `DatasetSource` (cached per process),
announces where it runs with `Started` and emits the training loop's events.
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch

from dlcore.engine.config import RunConfig
from dlcore.engine.dataset import Dataset, DatasetError
from dlcore.engine.devices import describe_device
from dlcore.engine.train import BatchProgress, EpochEnd, TrainResult, train

DIED_MESSAGE = ("The training process died ({how}): out of memory? Try a smaller batch size or "
                "network; the other runs carry on.")


class RunFailed(Exception):
    """A run that ended without a result: the message says why, for the learner."""


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class DatasetSource:
    """Where a worker finds the dataset the page trained on: its name and the sidebar's folder, and
    its sizes, so a worker that read something else refuses to train on it."""

    name: str
    data_dir: str | None
    num_train: int
    num_test: int

    @classmethod
    def of(cls, dataset: Dataset, data_dir: str | None = None) -> DatasetSource:
        return cls(dataset.name, data_dir or None, len(dataset.train_y), len(dataset.test_y))


@dataclass(frozen=True)
class JobSpec:
    """A job as a runner receives it. `threads` > 0 asks for that many CPU threads for this run
    (0: the runner's own share of the cores)."""

    job_id: int
    config: RunConfig
    source: DatasetSource
    threads: int = 0


@dataclass(frozen=True)
class Started:
    """The run has its dataset and a device: `device` in words, `place` the process or node."""

    device: str
    place: str


RunEvent = Started | BatchProgress | EpochEnd


class RunHandle(Protocol):
    def stop(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def outcome(self) -> TrainResult: ...  # raises RunFailed


class Outcome:
    """What every runner's handle shares: the run's end, once, as a result or a reason."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: TrainResult | None = None
        self._error = ""

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def outcome(self) -> TrainResult:
        self._done.wait()
        if self._result is None:
            raise RunFailed(self._error or "the run ended without a result")
        return self._result

    def _end(self, result: TrainResult | None, error: str = "") -> None:
        if self._done.is_set():
            return
        self._result, self._error = result, error
        self._done.set()


class Runner(Protocol):
    name: str
    slots: int

    def start(self, spec: JobSpec, dataset: Dataset,
              on_event: Callable[[RunEvent], None]) -> RunHandle: ...
    def describe(self) -> str: ...
    def warm(self) -> None: ...
    def close(self) -> None: ...


_datasets: dict[DatasetSource, Dataset] = {}
_datasets_lock = threading.Lock()


def load_source(source: DatasetSource) -> Dataset:
    """The dataset `source` names, read once per process (the two most recent are kept)."""
    from dlcore.engine.data import load_dataset

    with _datasets_lock:
        if source in _datasets:
            return _datasets[source]
        dataset = load_dataset(source.name, source.data_dir)
        if (len(dataset.train_y), len(dataset.test_y)) != (source.num_train, source.num_test):
            raise DatasetError(
                f"The training process read {len(dataset.train_y):,}/{len(dataset.test_y):,} "
                f"images of {source.name}, the page {source.num_train:,}/{source.num_test:,}: "
                "the files changed; reload the page.")
        while len(_datasets) >= 2:
            _datasets.pop(next(iter(_datasets)))
        _datasets[source] = dataset
        return dataset


def here() -> str:
    return f"{platform.node()} pid {os.getpid()}"


def run_training(spec: JobSpec, dataset: Dataset, emit: Callable[[RunEvent], None],
                 stop: StopFlag, place: str | None = None) -> TrainResult:
    """The one training function every runner calls."""
    emit(Started(describe_device(spec.config.train.device), place or here()))
    return train(spec.config, dataset, on_event=emit, stop=stop)


def failure_text(exc: BaseException) -> str:
    """An exception from a training run in words a learner can act on."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return f"Out of memory: {text}. Try a smaller batch size or network."
    return text


def to_wire(result: TrainResult) -> TrainResult:
    """The result with its weights as numpy arrays: pickles by value across processes, without
    torch's shared-memory handles (which need the sending process alive)."""
    return replace(result, state_dict={k: v.numpy() for k, v in result.state_dict.items()})


def from_wire(result: TrainResult) -> TrainResult:
    return replace(result, state_dict={k: torch.from_numpy(np.asarray(v))
                                       for k, v in result.state_dict.items()})
