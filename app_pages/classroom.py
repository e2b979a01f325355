"""Class: your name and the teacher key; the class's rules for everyone to read; and, for the
teacher, the rules editor, a link to share, every job on the server (stop any) and the class's data
folder."""

from __future__ import annotations

import time

import streamlit as st

from app_pages import common
from dlcore.engine.config import setting_label
from dlcore.runs.policy import CAPS, FIXABLE, PolicyError
from dlcore.runs.roles import NotAllowed
from dlcore.text import markdown_literal
from dlcore.views.classroom import job_rows, policy_from_form
from dlcore.views.form import (
    HIDE,
    HIDE_CHOICES,
    hidden_from_query,
    link_params,
    link_url,
    train_page_url,
)
from dlcore.views.shared import model_summary

S = st.session_state
KEEP = dict(persist_state="session")
STOP_NOTE = "class._stop_note"  # (kind, text, when): drawn inside the jobs fragment
STOP_NOTE_SECONDS = 15.0


def flash(kind: str, text: str) -> None:
    common.flash("class", kind, text)


# Callbacks: they run before the script, so what is drawn afterwards shows the change.

def unlock() -> None:
    given = S.get("class.key", "")
    S["class.key"] = ""  # the key never stays in the page's state
    if common.classroom().unlock(given):
        S["teacher"] = True
        flash("success", "You are the teacher now.")
    else:
        flash("error", "That is not the teacher key.")


def leave_teacher() -> None:
    S["teacher"] = False


def save_rules() -> None:
    caps = {key: S.get(f"class.cap.{key}", 0) for key in CAPS}
    try:
        rules = policy_from_form(S.get("class.fixed", []), common.current_config(), caps,
                                 S.get("class.max_seconds", 0))
        common.classroom().set_policy(rules, common.person())
    except (PolicyError, NotAllowed) as exc:
        flash("error", f"The rules were not saved: {markdown_literal(exc)}")
    else:
        flash("success", "The class's rules are saved; students' Train pages follow them now.")


def clear_rules() -> None:
    S["class.fixed"] = []
    for key in CAPS:
        S[f"class.cap.{key}"] = 0
    S["class.max_seconds"] = 0.0
    save_rules()


def set_data_dir() -> None:
    try:
        common.classroom().set_data_dir(S.get("class.data_dir", ""), common.person())
    except NotAllowed as exc:
        flash("error", markdown_literal(exc))


def stop_note(kind: str, text: str) -> None:
    """A message about Stop: the button is in the jobs fragment, whose click reruns only the
    fragment, so the message is drawn there (for a few seconds), not at the top of the page."""
    S[STOP_NOTE] = (kind, text, time.monotonic())


def show_stop_note() -> None:
    kind, text, when = S.get(STOP_NOTE, (None, None, 0.0))
    if kind is not None and time.monotonic() - when < STOP_NOTE_SECONDS:
        getattr(st, kind)(text)


def stop_job() -> None:
    wanted = S.get("class.stop_target")
    manager = common.manager(say_why=False)
    job = next((j for j in manager.jobs() if j.id == wanted), None) if manager else None
    person = common.person()
    if job is None:
        stop_note("info", f"Job {wanted} has already ended.")
        return
    try:
        person.require(job.owner, job.owner_name, "stop")
    except NotAllowed as exc:
        stop_note("error", markdown_literal(exc))
        return
    job.stop()
    stop_note("success", f"Job {job.id} of {markdown_literal(job.owner_name or 'a student')} is "
                         "stopping; its finished epochs are kept.")


def you_section(person, room) -> None:
    st.subheader("You")
    st.text_input("Your name (your teacher sees it beside your runs)", key="display_name",
                  max_chars=80, placeholder=person.name, **KEEP)
    if person.teacher and S.get("teacher"):
        st.caption("You are the **teacher** (unlocked with the teacher key).")
        st.button("Leave the teacher role", key="class.leave", on_click=leave_teacher)
    elif person.teacher:
        st.caption("You are the **teacher**: this server has no teacher key and you are on its "
                   "machine.")
    elif room.has_key:
        st.caption("You are a **student**. A teacher unlocks their role with the key the server "
                   "was started with.")
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.text_input("Teacher key", key="class.key", type="password")
        c2.button("Unlock", key="class.unlock", on_click=unlock)
    else:
        st.caption("You are a **student**. This server was started without a teacher key "
                   "(DLLAB_TEACHER_KEY), so the teacher is whoever uses the app on the server's "
                   "own machine.")


def rules_text(room) -> None:
    lines = room.policy.describe()
    if lines:
        st.info("The class's rules (students' Train pages show these settings fixed):\n"
                + "".join(f"\n- {line}" for line in lines))
    else:
        st.caption("No class rules: every setting is free and runs have no time limit.")


def rules_editor(room) -> None:
    rules = room.policy
    if "class.fixed" not in S:
        S["class.fixed"] = list(rules.fixed)
        for key in CAPS:
            S[f"class.cap.{key}"] = int(rules.caps.get(key, 0))
        S["class.max_seconds"] = float(rules.max_job_seconds or 0)
    st.multiselect("Settings fixed for every student", FIXABLE, key="class.fixed",
                   format_func=setting_label, placeholder="none",
                   help="Each takes the value your own Train page has when you save.")
    config = common.current_config()
    if S["class.fixed"]:
        values = config.flat()
        st.caption("They will be fixed at your Train page's values: " + "; ".join(
            f"{markdown_literal(setting_label(k))} {markdown_literal(values[k])}"
            for k in S["class.fixed"]))
    columns = st.columns(len(CAPS))
    for column, (key, label) in zip(columns, CAPS.items(), strict=True):
        column.number_input(f"Most {label.lower()} (0: no cap)", min_value=0, step=1,
                            key=f"class.cap.{key}")
    st.number_input("Longest run, in seconds (0: no limit)", min_value=0.0, step=30.0,
                    format="%g", key="class.max_seconds",
                    help="A run expected to take longer is refused before it starts; a run that "
                         "takes longer is stopped with its finished epochs kept. It binds your "
                         "runs too.")
    b1, b2, _ = st.columns([1, 1, 3])
    b1.button("Save the class's rules", key="class.save", type="primary", on_click=save_rules)
    b2.button("Clear all rules", key="class.clear", on_click=clear_rules)


def link_section() -> None:
    st.subheader("A link for the class")
    st.caption("The address of the Train page with your Train page's settings and the sidebar's "
               "dataset: students who open it start from them. Settings picked here are shown "
               "greyed out at their values. A student can still edit an address: to bind everyone, "
               "use the rules above.")
    st.multiselect("Settings the link shows fixed", HIDE_CHOICES, key="class.link_fixed",
                   format_func=setting_label, placeholder="none", **KEEP)
    fixed, _ = hidden_from_query({HIDE: ",".join(S.get("class.link_fixed", []))})
    params = link_params(common.current_config(), fixed, S.get("dataset"))
    st.code(link_url(train_page_url(st.context.url), params), language=None, wrap_lines=True)


def jobs_section() -> None:
    st.subheader("Every job on this server")
    show_stop_note()
    manager = common.manager()
    if manager is None:
        return
    jobs = manager.jobs()
    if not jobs:
        st.caption("No job is running or waiting.")
        return
    st.dataframe(job_rows(jobs), hide_index=True, key="class.jobs")
    labels = {j.id: f"#{j.id} · {j.owner_name or j.owner[:8]} · {model_summary(j.config)}"
              for j in jobs}
    if S.get("class.stop_target") not in labels:
        S["class.stop_target"] = jobs[0].id
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.selectbox("Job", list(labels), key="class.stop_target", format_func=labels.get)
    c2.button("Stop this job", key="class.stop", on_click=stop_job)


def data_section(room) -> None:
    st.subheader("The class's data folder")
    if "class.data_dir" not in S:
        S["class.data_dir"] = room.data_dir
    st.text_input("Data folder (empty: the cache, then the bundled sample)", key="class.data_dir",
                  on_change=set_data_dir,
                  help="A folder on this server holding the dataset's files (IDX files for the "
                       "MNIST family, cifar-10-batches-py for CIFAR-10). Every session uses it; "
                       "students never see its path.")


def page() -> None:
    st.title("Class")
    common.show_flash("class")
    room = common.classroom()
    person = common.person()
    you_section(person, room)
    st.subheader("The class's rules")
    rules_text(room)
    if not person.teacher:
        return
    rules_editor(room)
    link_section()
    st.fragment(run_every=2.0)(jobs_section)()
    data_section(room)


page()
