"""The Class page's logic: the teacher's table of every job, and the class rules from its form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from dlcore.engine.config import RunConfig
from dlcore.runs.jobs import JobSnapshot, TrainingJob
from dlcore.runs.policy import CAPS, ClassPolicy
from dlcore.views.shared import model_summary

JOB_COLUMNS = ("job", "who", "model", "settings", "state", "place in line", "progress", "ETA (s)")


def settings_summary(config: RunConfig) -> str:
    t = config.train
    return f"{t.optimizer} lr {t.lr:g}, batch {t.batch_size}, {t.epochs} epochs"


def _progress(snap: JobSnapshot) -> tuple[str, float | None]:
    p = snap.progress
    if snap.state != "running" or p is None:
        return "", None
    return f"epoch {p.epoch}/{p.epochs}, step {p.epoch_step}/{p.steps_per_epoch}", round(p.eta_s)


def job_rows(jobs: Iterable[TrainingJob]) -> pd.DataFrame:
    """One row per job (running ones first, then the queue in order), for the teacher."""
    rows = []
    for job in jobs:
        snap = job.snapshot()
        progress, eta = _progress(snap)
        rows.append({"job": job.id, "who": job.owner_name or job.owner[:8],
                     "model": model_summary(job.config), "settings": settings_summary(job.config),
                     "state": snap.state, "place in line": snap.queue_position,
                     "progress": progress, "ETA (s)": eta})
    return pd.DataFrame(rows, columns=list(JOB_COLUMNS))


def policy_from_form(fixed: Iterable[str], teacher_config: RunConfig, caps: Mapping[str, float],
                     max_job_seconds: float) -> ClassPolicy:
    """The rules the teacher's form describes: the chosen settings fixed at the values of the
    teacher's own Train page, caps where a number above 0 was given, a time cap above 0 seconds.
    Validated (PolicyError says what cannot hold)."""
    values = teacher_config.flat()
    return ClassPolicy(
        fixed={key: values[key] for key in fixed},
        caps={key: cap for key, cap in caps.items() if key in CAPS and cap and cap > 0},
        max_job_seconds=float(max_job_seconds) if max_job_seconds and max_job_seconds > 0 else None,
    ).validate()
