"""What every page shares: the cached dataset, the one run store, the job manager, session state.

Session state keys: "dataset", "device" (sidebar widgets), "config" (the RunConfig the Train page's
widgets describe), "job" (this session's TrainingJob), "owner" (this session's id: it owns the
session's jobs and runs), "display_name" and "student_name" (the name typed, and the one given when
none is), "teacher" (True once the teacher key was given), "opened_run" (a run id from the history
that the inspection pages show instead of the last job). The data folder is the class's
(`classroom().data_dir`), set by the teacher.
"""

from __future__ import annotations

import os
import uuid

import streamlit as st

from dlcore.engine.config import PRESETS, RunConfig, setting
from dlcore.engine.data import DATASETS, load_dataset, load_with_fallback
from dlcore.engine.dataset import Dataset, DatasetError
from dlcore.engine.paths import home_dir
from dlcore.runs.classroom import Classroom
from dlcore.runs.jobs import JobManager, TrainingJob, default_manager
from dlcore.runs.roles import Person, display_name, teacher_key
from dlcore.runs.run_view import RunView, view_from_result, view_from_store
from dlcore.runs.runners import RunnerError
from dlcore.runs.store import RunStore
from dlcore.text import hide_paths, markdown_literal
from dlcore.views.shared import describe_view

DATASET_CHOICES: tuple[str, ...] = setting("train.dataset").options  # the sidebar's selector


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def cached_dataset(name: str, data_dir: str) -> tuple[Dataset, str | None]:
    """Read-only, shared by all sessions. A named folder that cannot be read raises DatasetError."""
    if data_dir:
        return load_dataset(name, data_dir), None
    return load_with_fallback(name)


@st.cache_resource
def run_store(home: str) -> RunStore:
    return RunStore(home or None)


def store() -> RunStore:
    return run_store(os.environ.get("DLLAB_HOME", ""))


def manager(say_why: bool = True) -> JobManager | None:
    """The server's job manager, its runner warming up in the background; None when the runner
    that DLLAB_RUNNER names cannot be had (the reason shown, unless `say_why` is False because
    another part of the page says it)."""
    try:
        found = default_manager()
        found.runner.warm()
    except (RunnerError, OSError) as exc:
        if say_why:
            st.error(f"Training is not available on this server: {for_this_person(exc)}")
        return None
    return found


def owner() -> str:
    """This browser session's id: it owns the session's jobs and runs (one waiting job each)."""
    return st.session_state.setdefault("owner", uuid.uuid4().hex)


@st.cache_resource
def cached_classroom(key: str | None, home: str) -> Classroom:
    return Classroom(key=key)


def classroom() -> Classroom:
    """The server's one classroom: its teacher key (from DLLAB_TEACHER_KEY or the secrets'
    teacher_key), the class's rules and its data folder."""
    secrets = st.secrets if st.secrets.load_if_toml_exists() else None
    return cached_classroom(teacher_key(secrets), os.environ.get("DLLAB_HOME", ""))


def person() -> Person:
    """Who uses this session: their name, their owner id, and whether they are the teacher."""
    room = classroom()
    address = st.context.ip_address  # None on localhost; AppTest gives a stand-in object
    teacher = bool(st.session_state.get("teacher")) or room.teacher_by_default(
        address if isinstance(address, str) else None)
    fallback = st.session_state.get("student_name")
    if fallback is None:
        fallback = st.session_state["student_name"] = room.names.next_name()
    try:
        name = display_name(st.session_state.get("display_name", ""), "Teacher" if teacher else fallback)
    except ValueError:  # too long: the name boxes allow 80 characters, so only a crafted request
        name = fallback
    return Person(owner(), name, teacher)


def server_folders() -> tuple[str, ...]:
    """The folders a message may name that a student must not see: the class's data folder and
    the app's home (which holds the run history and the caches of data and baselines)."""
    return classroom().data_dir, str(home_dir())


def for_this_person(text: object) -> str:
    """A message about the server as this session may read it, as markdown: whole for the
    teacher, without server paths for a student."""
    text = str(text)
    return markdown_literal(text if person().teacher else hide_paths(text, server_folders()))


def current_dataset() -> tuple[Dataset, str | None]:
    """The dataset the sidebar names, falling back to the bundled sample with a note."""
    name = st.session_state.get("dataset", "mnist")
    data_dir = classroom().data_dir
    try:
        return cached_dataset(name, data_dir)
    except DatasetError as exc:
        dataset, _ = cached_dataset("mnist-sample", "")
        return dataset, f"{exc} Using the bundled MNIST sample instead."


def dataset_title(name: str) -> str:
    info = DATASETS.get(name)
    return getattr(info, "title", name)


def current_config() -> RunConfig:
    return st.session_state.get("config", PRESETS["seed"])


def current_job() -> TrainingJob | None:
    return st.session_state.get("job")


def current_view() -> RunView | None:
    """The run the inspection pages show: an opened past run, else this session's last job."""
    opened = st.session_state.get("opened_run")
    if opened is not None:
        cache = st.session_state.setdefault("_opened_views", {})
        if opened not in cache:
            try:
                run = store().get_run(opened)
                dataset, _ = cached_dataset(run["dataset"], classroom().data_dir)
                cache.clear()
                cache[opened] = view_from_store(store(), opened, dataset)
            except Exception as exc:  # a deleted run, missing weights, unreadable data
                st.warning(f"Run {opened} cannot be opened: {for_this_person(exc)}")
                st.session_state.pop("opened_run", None)
                return _job_view()
        return cache[opened]
    return _job_view()


def _job_view() -> RunView | None:
    job = current_job()
    if job is None:
        return None
    snap = job.snapshot()
    if snap.result is None or snap.result.test_pred is None:
        return None
    return view_from_result(snap.result, job.dataset, snap.run_id)


def no_run_message() -> None:
    job = current_job()
    snap = job.snapshot() if job is not None else None
    if snap is not None and snap.active:
        st.info("Training is under way: this page shows the model once the run ends. The curves "
                "are on the **Train** page.")
    elif snap is not None and snap.state == "diverged":
        st.warning("The last run diverged (its weights blew up), so there is no model worth looking "
                   "at. Train again with a smaller learning rate, or open a past run on the "
                   "**Experiments** page.")
    elif snap is not None and snap.state in ("stopped", "failed"):
        st.warning(f"The last run {snap.state} before finishing an epoch, so there is no trained "
                   "model to look at. Train again on the **Train** page, or open a past run on the "
                   "**Experiments** page.")
    else:
        st.info("No trained model yet. Train one on the **Train** page, or open a past run on the "
                "**Experiments** page.")


def view_or_stop() -> RunView:
    """The run an inspection page shows, captioned with which run it is; where there is none, why,
    and the page stops there."""
    view = current_view()
    if view is None:
        no_run_message()
        st.stop()
    st.caption(describe_view(view))
    return view


def flash(page: str, kind: str, text: str) -> None:
    """A message for the next run of `page` (st.success, st.error...: `kind`), set by a callback;
    `text` is markdown (escape what users typed)."""
    st.session_state[f"{page}._flash"] = (kind, text)


def show_flash(page: str) -> None:
    kind, text = st.session_state.pop(f"{page}._flash", (None, None))
    if kind is not None:
        getattr(st, kind)(text)
