"""Training that writes itself into the run history as it goes: a row at start, one per epoch.

`RunRecorder` is the one rule for what goes into the store and when; the CLI uses it around an
in-process `train`, and a job applies it to the events a runner sends back from wherever it trains.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dlcore.engine.config import RunConfig
from dlcore.engine.dataset import Dataset
from dlcore.engine.devices import describe_device
from dlcore.engine.train import EpochEnd, Event, TrainResult, train
from dlcore.runs.store import RunStore


class RunRecorder:
    """Records one run in `store`: `start` adds its row, `event` each finished epoch, then `finish`
    or `fail`. With no store every call does nothing and `run_id` stays None."""

    def __init__(self, store: RunStore | None, config: RunConfig, dataset: str,
                 name: str | None = None, owner: str | None = None,
                 owner_name: str | None = None) -> None:
        self.store, self.config, self.dataset, self.name = store, config, dataset, name
        self.owner, self.owner_name = owner, owner_name
        self.run_id: int | None = None

    def start(self, device: str) -> int | None:
        if self.store is not None and self.run_id is None:
            self.run_id = self.store.start_run(self.config.to_dict(), dataset=self.dataset,
                                               device=device, name=self.name,
                                               owner=self.owner, owner_name=self.owner_name)
        return self.run_id

    def event(self, event: Event) -> None:
        if self.run_id is not None and isinstance(event, EpochEnd):
            self.store.add_epoch(self.run_id, event.metrics.as_dict())

    def finish(self, result: TrainResult) -> None:
        if self.run_id is not None:
            self.store.finish_run(self.run_id, result.status,
                                  metrics={**result.final_metrics(), "params": result.params},
                                  duration_s=result.seconds, message=result.message,
                                  state_dict=result.state_dict)

    def fail(self, message: str) -> None:
        if self.run_id is not None:
            self.store.finish_run(self.run_id, "failed", message=message)

    def interrupted(self) -> None:
        """An interrupt (Ctrl-C) ended the run between its epochs' records: stopped, as the user
        meant, its finished epochs kept."""
        if self.run_id is not None:
            self.store.finish_run(self.run_id, "stopped",
                                  message="interrupted (Ctrl-C); its finished epochs are kept")


def train_recorded(
    config: RunConfig,
    dataset: Dataset,
    *,
    store: RunStore | None,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    name: str | None = None,
) -> tuple[TrainResult, int | None]:
    """Train in this process, recording the run in `store` (when given) so a crash loses at most
    one epoch."""
    config.validate()
    recorder = RunRecorder(store, config, dataset.name, name)
    recorder.start(describe_device(config.train.device))

    def forward(event: Event) -> None:
        recorder.event(event)
        if on_event is not None:
            on_event(event)

    try:
        result = train(config, dataset, on_event=forward, stop=stop)
    except KeyboardInterrupt:
        recorder.interrupted()
        raise
    except BaseException as exc:
        recorder.fail(f"{type(exc).__name__}: {exc}")
        raise
    recorder.finish(result)
    return result, recorder.run_id
