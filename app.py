"""DL Lab: `streamlit run app.py`. Page config, navigation over app_pages/, and the sidebar status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from app_pages import common
from dlcore.engine.data import DATASETS, choice_label, download_dataset
from dlcore.engine.dataset import DatasetError
from dlcore.engine.devices import available_devices, describe_device
from dlcore.text import markdown_literal
from dlcore.views.form import dataset_from_query


def app_icon() -> Image.Image:
    """The tab's icon: a 4x4 grid of red and blue weights, like the Learned features page. Drawn
    here, not a :material/...: icon or an emoji: those the browser fetches from Google's or
    Twemoji's servers, and a classroom may have no internet."""
    cells = np.array([[1, -1, 1, 1], [-1, 1, -1, 1], [1, 1, -1, -1], [-1, 1, 1, -1]])
    colours = np.where(cells[..., None] > 0, (33, 102, 172), (178, 24, 43)).astype(np.uint8)
    return Image.fromarray(np.kron(colours, np.ones((8, 8, 1), dtype=np.uint8)))  # 32x32 RGB


st.set_page_config(page_title="DL Lab", page_icon=app_icon(), layout="wide")

HERE = Path(__file__).resolve().parent
PAGE_FILES = [
    ("app_pages/train.py", "Train", ":material/model_training:"),
    ("app_pages/features.py", "Learned features", ":material/visibility:"),
    ("app_pages/errors.py", "Errors", ":material/error:"),
    ("app_pages/baseline.py", "Random Forest baseline", ":material/forest:"),
    ("app_pages/experiments.py", "Experiments", ":material/science:"),
    ("app_pages/lessons.py", "Lessons", ":material/school:"),
    ("app_pages/draw.py", "Try it yourself", ":material/draw:"),
    ("app_pages/classroom.py", "Class", ":material/groups:"),
]
PAGES = [st.Page(path, title=title, icon=icon, default=i == 0)
         for i, (path, title, icon) in enumerate(PAGE_FILES) if (HERE / path).exists()]


def person_panel(person) -> None:
    role = "teacher" if person.teacher else "student"
    who = markdown_literal(person.name) + ("" if person.name.lower() == role else f" ({role})")
    st.sidebar.caption(f"**You:** {who} · your name and the teacher key are on the **Class** page")


def apply_dataset_link() -> None:
    """A link's dataset into the sidebar's selector on the session's first run, before it is drawn
    (the Train page reads the link's other settings, and says if the dataset was not one)."""
    if st.session_state.get("_dataset_link_checked"):
        return
    st.session_state["_dataset_link_checked"] = True
    name, _ = dataset_from_query(st.query_params.to_dict())
    if name is not None:
        st.session_state["dataset"] = name


def dataset_panel(person) -> None:
    data_dir = common.classroom().data_dir
    st.sidebar.selectbox("Dataset", common.DATASET_CHOICES, key="dataset",
                         format_func=lambda name: choice_label(name, data_dir),
                         persist_state="session")
    dataset, note = common.current_dataset()
    st.sidebar.caption(f"**In use:** {common.dataset_title(dataset.name)} — "
                       f"{len(dataset.train_y):,} train / {len(dataset.test_y):,} test images; "
                       f"source: {common.for_this_person(dataset.source)}")
    wanted = st.session_state.get("dataset", "mnist")
    info = DATASETS.get(wanted)
    if note:
        hint = (" Press **Download** below, or set the class's data folder on the **Class** page."
                if person.teacher else " Your teacher can download it or set the class's data folder.")
        st.sidebar.warning(common.for_this_person(note) + hint)
    if dataset.name != wanted and getattr(info, "downloadable", False) and not person.teacher:
        st.sidebar.caption("Only the teacher can download a dataset or choose the data folder.")
    elif dataset.name != wanted and getattr(info, "downloadable", False):
        if st.sidebar.button(f"Download {common.dataset_title(wanted)}", key="download"):
            bar = st.sidebar.progress(0.0, text="Downloading…")
            try:
                download_dataset(wanted, progress=lambda f: bar.progress(min(max(f, 0.0), 1.0)))
            except DatasetError as exc:
                bar.empty()  # not "Downloading…" over an empty bar after it failed
                st.sidebar.error(common.for_this_person(exc))
            else:
                common.cached_dataset.clear()
                st.rerun()


def device_panel() -> None:
    choices = ["auto", *available_devices()]
    st.sidebar.selectbox("Device", choices, key="device", persist_state="session",
                         format_func=lambda d: "best available" if d == "auto" else d)
    device = describe_device(st.session_state.get("device", "auto"))
    manager = common.manager()
    runner = f", in {manager.runner.describe()}" if manager is not None else ""
    st.sidebar.caption(f"**Training on:** {device}{runner}")


def job_panel() -> None:
    job = common.current_job()
    if job is None:
        st.sidebar.caption("**Job:** none yet")
        return
    snap = job.snapshot()
    # The Train page's live panel runs the whole page again when the job has moved on since.
    st.session_state["_job_drawn"] = (job.id, snap.state)
    st.sidebar.caption(f"**Job:** {snap.summary}")


navigation = st.navigation(PAGES)
me = common.person()
person_panel(me)
apply_dataset_link()
dataset_panel(me)
device_panel()
job_panel()
navigation.run()
