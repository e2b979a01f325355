"""The Random Forest baseline page's logic: the class's rules for the networks its learning curve
trains (in the server's process, not through the job queue), applied as `JobManager.submit`
applies them to a run."""

from __future__ import annotations

from collections.abc import Sequence

from dlcore.comparison import curve_runs
from dlcore.config import RunConfig
from dlcore.dataset import Dataset
from dlcore.engine.duration import check_duration, estimate_run_seconds
from dlcore.engine.memory import check_memory, estimate_memory
from dlcore.runs.policy import ClassPolicy

MAX_CURVE_EPOCHS = 20


def curve_epochs_limit(policy: ClassPolicy, teacher: bool) -> int:
    """The most network epochs this person's curve may take: MAX_CURVE_EPOCHS, or less where the
    class caps a student's epochs."""
    cap = None if teacher else policy.caps.get("train.epochs")
    return MAX_CURVE_EPOCHS if cap is None else max(1, min(MAX_CURVE_EPOCHS, int(cap)))


def check_curve(config: RunConfig, dataset: Dataset, sizes: Sequence[int | str], *,
                policy: ClassPolicy, teacher: bool, memory_limit: int) -> None:
    """Refuse a learning curve whose networks a run could not have: for a student, one that breaks
    the class's rules (PolicyError); for anyone, one whose largest network needs more memory than
    one run may use (MemoryLimitError) or whose networks together would take longer than the
    class's time cap (DurationLimitError)."""
    runs = curve_runs(config, sizes, len(dataset.train_y))
    if not runs:
        return
    if not teacher:
        for run in runs:
            policy.check(run)
    shape, classes, tests = dataset.shape, dataset.num_classes, len(dataset.test_y)
    check_memory(estimate_memory(runs[-1], shape, classes, len(dataset.train_y), tests),
                 memory_limit)
    if policy.max_job_seconds is not None:
        seconds = sum(estimate_run_seconds(run, shape, classes, len(dataset.train_y), tests)
                      for run in runs)
        check_duration(seconds, policy.max_job_seconds)
