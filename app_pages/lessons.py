"""Lessons: the lesson's networks, its exercises and the beginners' mistakes, each loaded into the Train
page in one click, each with this session's runs of it; and one training step at a time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages import common
from dlcore import numbers
from dlcore.engine.train import DIVERGE_FACTOR
from dlcore.runs.jobs import runs_of_session
from dlcore.views.form import config_to_query, widget_values
from dlcore.views.lessons import LESSONS, Lesson, LessonRun, epochs_note, lesson_run_table
from dlcore.views.stepthrough import Stepper, StepReport, settings_text, step_table

S = st.session_state
EXPERIMENTS = "app_pages/experiments.py"
HAVE_EXPERIMENTS = (Path(__file__).resolve().parent / "experiments.py").exists()
RUN_TABLE_FORMATS = {"epochs": numbers.count, "train accuracy": numbers.percent,
                     "test accuracy": numbers.percent, "seconds": numbers.seconds}
SECTIONS = {"network": "The lesson's networks", "exercise": "Exercises",
            "mistake": "Beginners' mistakes"}


def load_run(lesson: Lesson, run: LessonRun) -> None:
    """Callback: the run's settings become the Train page's; its widgets refill from them."""
    for key in widget_values(run.config):
        S.pop(key, None)
    S["config"] = run.config
    S["lessons.loaded"] = (f"{lesson.title}: {run.label.removeprefix('Load: ')}", run.look_for,
                           config_to_query(run.config))


def compare(run_ids: list[int]) -> None:
    """Callback: the Experiments page opens with these runs chosen for comparison."""
    S["experiments.compare"] = run_ids


def runs_table(lesson: Lesson, runs: pd.DataFrame) -> None:
    mine = runs_of_session(S.get("session_runs", []), common.current_job())
    table = lesson_run_table(runs, lesson, set(mine))
    if table.empty:
        st.caption("No runs of this yet in this session: load one, train it, and it appears here.")
    else:
        st.caption("Your runs of this in this session")
        shown = numbers.as_text(table, RUN_TABLE_FORMATS)
        st.dataframe(shown, hide_index=True, key=f"lessons.runs.{lesson.id}", column_config={
            c: st.column_config.TextColumn(alignment="right") for c in RUN_TABLE_FORMATS})
        if note := epochs_note(table):
            st.warning(note)
    if lesson.kind == "exercise" and HAVE_EXPERIMENTS:
        ids = table["run"].astype(int).tolist()
        if st.button("Compare these runs on the Experiments page", key=f"lessons.compare.{lesson.id}",
                     on_click=compare, args=(ids,), disabled=not ids):
            st.switch_page(EXPERIMENTS)


def lesson_card(lesson: Lesson, runs: pd.DataFrame) -> None:
    with st.container(border=True):
        st.subheader(lesson.title)
        st.markdown(lesson.text)
        for run in lesson.runs:
            left, right = st.columns([1, 2])
            if left.button(run.label, key=lesson.button_key(run), on_click=load_run,
                           args=(lesson, run)):
                st.switch_page("app_pages/train.py")
            right.markdown(f"*{run.look_for}*")
        st.markdown(f"**What to look for:** {lesson.look_for}")
        runs_table(lesson, runs)


def step_section() -> None:
    st.subheader("The training loop, one step at a time")
    st.markdown(
        "Every step of training does four things to one batch of images: the **forward pass** "
        "(the network's guesses), the **loss** (how wrong they are), the **backward pass** (for every "
        "weight, which way makes the loss smaller: its gradient) and the **update** (the optimiser "
        "moves each weight a little that way). Here one batch of 32 training images gets those four, "
        "one step per click, with the Train page's settings.")
    config = common.current_config()
    dataset, _ = common.current_dataset()
    stepper = S.get("lessons.stepper")
    a, b, _ = st.columns([1, 1, 3])
    reset = b.button("Start again", key="lessons.step_reset", help="Fresh weights, the same batch")
    if reset or (stepper is not None and not stepper.matches(config, dataset.name)):
        stepper = S["lessons.stepper"] = None  # new settings: fresh weights on the next step
        S["lessons.step_reports"] = []
    if a.button("Take one step", key="lessons.step", type="primary"):
        if stepper is None:
            stepper = S["lessons.stepper"] = Stepper(config, dataset)
        S["lessons.step_reports"] = [*S.get("lessons.step_reports", []), stepper.step()]
    reports: list[StepReport] = S.get("lessons.step_reports", [])
    st.caption(f"Settings from the Train page: {settings_text(config)}, "
               f"Dataset: {common.dataset_title(dataset.name)}.")
    if not reports:
        st.info("Press **Take one step** to run the first step.")
        return
    report = reports[-1]
    m1, m2, m3 = st.columns(3)
    m1.metric("Step", report.step)
    m2.metric("Loss before the update", numbers.loss(report.loss_before))
    # Green (a down arrow, "inverse") only for a loss that went down and is still a sane number;
    # a huge loss a little lower than a huger one is no good news: its change is grey.
    m3.metric("Loss after (same batch)", numbers.loss(report.loss_after),
              delta=numbers.change(report.loss_before, report.loss_after),
              delta_color="off" if report.diverged else "inverse")
    st.caption(f"Batch accuracy {numbers.percent(report.acc_before, 0)} before, "
               f"{numbers.percent(report.acc_after, 0)} after.")
    too_high = ("The learning rate is too high for these settings"
                + ("" if config.train.normalize else ", and the inputs are not normalised") + ".")
    if not report.finite:
        st.error("The loss is no longer a finite number: the update threw the weights so far that "
                 f"the numbers overflowed. {too_high}")
    elif report.diverged:
        st.error(f"The loss is {numbers.loss(max(report.loss_before, report.loss_after))}, more "
                 f"than {DIVERGE_FACTOR:g} times where it started: the weights blew up, and training "
                 f"would stop here as diverged. {too_high}")
    elif report.loss_after > report.loss_before:
        st.warning("The loss went up: this step overshot. A smaller learning rate takes smaller steps.")
    st.markdown("**Each layer:** how big its gradient was and how far the update moved its weights. "
                "For plain SGD the move is exactly learning rate × gradient; Adam scales each weight's "
                "step by its own history.")
    table = step_table(report)
    st.dataframe(table, hide_index=True, key="lessons.step_table", column_config={
        c: st.column_config.TextColumn(alignment="right") for c in table.columns[2:]})
    if len(reports) > 1:
        curve = pd.DataFrame({"step": [r.step for r in reports],
                              "loss before": [r.loss_before for r in reports],
                              "loss after": [r.loss_after for r in reports]}).set_index("step")
        st.line_chart(curve)


st.title("Lessons")
st.markdown("Each lesson loads its settings into the **Train** page in one click. Train it there, "
            "then come back: the lesson lists your runs of it, side by side.")
st.page_link("app_pages/classroom.py", icon=":material/groups:",
             label="Teaching a class? The Class page fixes settings for every student, caps epochs "
                   "and run time, and makes a link that opens the Train page with your settings.")
try:
    all_runs = common.store().list_runs()
except Exception as exc:  # an unreadable history must not hide the lessons
    st.warning(f"The run history cannot be read: {common.for_this_person(exc)}")
    all_runs = pd.DataFrame()
tabs = st.tabs([*SECTIONS.values(), "One training step"])
for tab, kind in zip(tabs, SECTIONS, strict=False):
    with tab:
        for lesson in LESSONS:
            if lesson.kind == kind:
                lesson_card(lesson, all_runs)
with tabs[-1]:
    step_section()
