"""Training that writes itself into the run history as it goes: a row at start, one per epoch."""

from __future__ import annotations

import threading
from collections.abc import Callable

from dlcore.config import RunConfig
from dlcore.dataset import Dataset
from dlcore.devices import describe_device
from dlcore.store import RunStore
from dlcore.train import EpochEnd, Event, TrainResult, train


def train_recorded(
    config: RunConfig,
    dataset: Dataset,
    *,
    store: RunStore | None,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    name: str | None = None,
    on_start: Callable[[int], None] | None = None,
) -> tuple[TrainResult, int | None]:
    """Train, recording the run in `store` (when given) so a crash loses at most one epoch."""
    if store is None:
        return train(config, dataset, on_event=on_event, stop=stop), None
    config.validate()
    run_id = store.start_run(config.to_dict(), dataset=dataset.name,
                             device=describe_device(config.train.device),
                             name=name)
    if on_start is not None:
        on_start(run_id)

    def forward(event: Event) -> None:
        if isinstance(event, EpochEnd):
            store.add_epoch(run_id, event.metrics.as_dict())
        if on_event is not None:
            on_event(event)

    try:
        result = train(config, dataset, on_event=forward, stop=stop)
    except BaseException as exc:
        store.finish_run(run_id, "failed", message=f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, result.status,
                     metrics={**result.final_metrics(), "params": result.params},
                     duration_s=result.seconds, message=result.message,
                     state_dict=result.state_dict)
    return result, run_id
