"""Train: every setting of the model and its training, the layer table, Train/Stop, live curves.

Every setting lives in the URL's query parameters (dlcore.views.form): a link opens the page with
its settings and dataset, and `hide=` names controls it shows fixed. The class's rules (set by the
teacher on the Class page, kept on the server) show a student's fixed settings disabled and cap the
others; a link cannot undo them, and the job manager refuses a run that breaks them.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import common
from dlcore import numbers
from dlcore.engine.config import ConfigError, RunConfig, Setting
from dlcore.engine.devices import resolve_device
from dlcore.engine.duration import (
    DurationLimitError,
    check_duration,
    estimate_run_seconds,
    format_duration,
    format_limit,
)
from dlcore.engine.memory import estimate_memory, format_bytes, memory_limit
from dlcore.engine.models import describe_layers
from dlcore.figures import batch_loss_figure, epoch_curves_figure
from dlcore.runs.jobs import JobRefused, JobSnapshot, TrainingJob, runs_of_session
from dlcore.runs.policy import ClassPolicy
from dlcore.runs.store import StoreError
from dlcore.views.form import (
    config_from_query,
    config_from_widgets,
    config_to_query,
    dataset_from_query,
    dataset_options,
    flat_values,
    formatter,
    hidden_from_query,
    link_params,
    link_url,
    page_settings,
    should_apply,
    widget_values,
    with_value,
)

S = st.session_state
# A warm worker reports its first step within a few hundredths of a second: wait that long for it
# after Train, so this run of the page already draws the curve's first point.
FIRST_POINT_WAIT_SECONDS = 0.5
KEEP = dict(persist_state="session")


def name_given() -> None:
    S["display_name"] = S.get("name_prompt", "")
    S["name_asked"] = True


def name_skipped() -> None:
    S["name_asked"] = True


def name_prompt(person) -> None:
    """Ask a student's name once (skipped: they stay "Student N"); the Class page can change it."""
    if person.teacher or S.get("name_asked") or S.get("display_name"):
        return
    with st.container(border=True):
        st.markdown("**What is your name?** Your teacher sees it beside your runs. You can change "
                    "it later on the **Class** page.")
        c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="bottom")
        c1.text_input("Your name", key="name_prompt", max_chars=80, label_visibility="collapsed",
                      placeholder=person.name)
        c2.button("OK", key="name_ok", on_click=name_given, type="primary")
        c3.button("Skip", key="name_skip", on_click=name_skipped, help=f"You stay {person.name}.")


def apply_link() -> None:
    """A link's settings (and its hidden controls) into the widgets' state, before they are drawn."""
    params = st.query_params.to_dict()
    first_visit = not S.get("_link_checked")
    S["_link_checked"] = True
    if not should_apply(params, first_visit):
        return
    config, notes = config_from_query(params)
    hidden, hide_notes = hidden_from_query(params)
    _, dataset_notes = dataset_from_query(params)  # the sidebar took a good one (app.py)
    S["config"] = config
    S.update(widget_values(config))
    S["classroom.hide"] = hidden
    S["_link_notes"] = (config_to_query(config), notes + hide_notes + dataset_notes)


def fixed_by_link(key: str) -> bool:
    return key in S.get("classroom.hide", ())


def rules() -> ClassPolicy:
    """The class's rules as they bind this session (none for the teacher)."""
    return S.get("_rules") or ClassPolicy()


def apply_rules(bound: ClassPolicy) -> None:
    """Set the widgets a student's class rules fix or cap, before they are drawn."""
    S["_rules"] = bound
    if not bound.binds_students:
        return
    values = {k: S[k] for k in widget_values(common.current_config())}
    try:
        config = config_from_widgets(values)
    except ConfigError:
        config = common.current_config()
    S.update({k: v for k, v in widget_values(bound.apply(config)).items() if S.get(k) != v})


def control(widget, label: str, *args, key: str, **kwargs) -> None:
    """Draw the widget, disabled where the class's rules or a classroom link fix it."""
    if key in rules().fixed_widgets():
        kwargs.update(disabled=True, help="Fixed by your teacher for the class.")
    elif fixed_by_link(key):
        kwargs.update(disabled=True, help="Fixed by the link this page was opened with.")
    widget(label, *args, key=key, **KEEP, **kwargs)


def init_widgets() -> None:
    """Give every widget its value from the current config the first time it is drawn."""
    for key, value in widget_values(common.current_config()).items():
        if key not in S:
            S[key] = value


def choice_slider(label: str, key: str, options: tuple, fmt=str, **kwargs) -> None:
    cap = rules().widget_cap(key)
    if cap is not None:
        options = tuple(o for o in options if o <= cap) or options[:1]
    control(st.select_slider, label, with_value(options, S[key]), key=key, format_func=fmt, **kwargs)


def draw_setting(s: Setting, num_train: int) -> None:
    """One setting's widget (a list's count and layer widgets), as its description says
    (dlcore.engine.config): hidden while a run would not use it, or drawn disabled saying why."""
    extra: dict = {"help": s.help} if s.help else {}
    if not s.is_used(flat_values(S)):
        if not s.idle_help:
            return
        extra = dict(disabled=True, help=s.idle_help)
    key, label, fmt = s.key, s.page_label, formatter(s, num_train)
    if s.layers is not None:
        count = s.layers.count_key
        control(st.slider, s.layers.count_label, *rules().slider_range(count, *s.slider_range), key=count)
        for i in range(S[count]):
            choice_slider(s.layers.item_label.format(n=i + 1), s.layers.item(i), s.stops, fmt)
    elif s.widget == "radio":
        control(st.radio, label, list(s.options), key=key, horizontal=True, format_func=fmt,
                **extra)
    elif s.widget == "selectbox":
        control(st.selectbox, label, s.options, key=key, format_func=fmt, **extra)
    elif s.widget == "slider":
        step = {} if s.step is None else {"step": s.step}
        control(st.slider, label, *rules().slider_range(key, *s.slider_range), key=key, **step, **extra)
    elif s.widget == "choice_slider":
        if s.sized_by_dataset and S[key] >= num_train:  # a link's or preset's size it cannot fill
            S[key] = 0
        choice_slider(label, key, dataset_options(s, num_train), fmt, **extra)
    elif s.widget in ("toggle", "checkbox"):
        control(getattr(st, s.widget), label, key=key, **extra)
    elif s.widget == "number":
        control(st.number_input, label, *s.range, key=key, **extra)


def model_controls(num_train: int) -> None:
    st.subheader("Model")
    for s in page_settings("model"):
        draw_setting(s, num_train)


def training_controls(num_train: int) -> None:
    st.subheader("Training")
    for s in page_settings("train"):
        draw_setting(s, num_train)


def notes_panel(config) -> None:
    """Classroom mode, a link's ignored parameters and a loaded lesson, while its settings stand."""
    lines = rules().describe()
    if lines:
        st.info("Your teacher has set these for the class:"
                + "".join(f"\n- {line}" for line in lines))
    elif S.get("classroom.hide"):
        st.info("Classroom link: the greyed-out settings are fixed at the link's values.")
    query = config_to_query(config) if config is not None else None
    link_query, link_notes = S.get("_link_notes", (None, []))
    if link_notes and link_query == query:
        st.warning("Some settings in the link were ignored; the defaults are used for them:\n"
                   + "".join(f"\n- {note}" for note in link_notes))
    lesson_title, look_for, lesson_query = S.get("lessons.loaded", (None, None, None))
    if lesson_title and lesson_query == query:
        st.info(f"**{lesson_title}.** What to look for: {look_for}")


def link_panel(config) -> None:
    """Keep the URL in step with the settings, and show it to copy."""
    params = link_params(config, S.get("classroom.hide", ()), S.get("dataset"))
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)
    st.caption("Copy link to these settings")
    st.code(link_url(st.context.url, params), language=None, wrap_lines=True)


def layer_table(config, dataset) -> None:
    rows = describe_layers(config.model, dataset.shape, dataset.num_classes)
    total = sum(r.params for r in rows)
    memory = estimate_memory(config, dataset.shape, dataset.num_classes, len(dataset.train_y),
                             len(dataset.test_y))
    manager = common.manager(say_why=False)  # the sidebar says why when there is none
    try:
        limit = memory_limit(config.train.device, manager.max_jobs if manager else None)
    except ValueError as exc:
        limit, limit_text = None, str(exc)
    else:
        limit_text = f"one run may use {format_bytes(limit)} here"
    params_col, memory_col, time_col = st.columns(3)
    params_col.metric("Parameters", numbers.count(total))
    memory_col.metric("Memory (estimate)", format_bytes(memory.total), help=memory.describe())
    time_panel(time_col, config, dataset)
    if limit is not None and memory.total > limit:
        st.warning(f"Too big to train here: about {format_bytes(memory.total)} of memory, and "
                   f"{limit_text}. A smaller batch size, narrower layers or fewer channels, or "
                   "pooling make it fit.")
    else:
        st.caption(f"Memory: {memory.describe()}; {limit_text}.")
    frame = pd.DataFrame({"layer": [r.name for r in rows],
                          "output shape": [" × ".join(map(str, r.output_shape)) for r in rows],
                          "parameters": [numbers.count(r.params) for r in rows]})
    st.dataframe(frame, hide_index=True, key="layer_table",
                 column_config={"parameters": st.column_config.TextColumn(alignment="right")})


def time_panel(column, config, dataset) -> None:
    """Where the class has a time cap: the run's estimated time, and a warning when it is over."""
    cap = rules().max_job_seconds
    if cap is None:
        return
    seconds = estimate_run_seconds(config, dataset.shape, dataset.num_classes, len(dataset.train_y),
                                   len(dataset.test_y))
    column.metric("Time (estimate)", format_duration(seconds).removeprefix("about "),
                  help=f"Measured on this server's device; a run may take at most "
                       f"{format_limit(cap)} in this class.")
    try:
        check_duration(seconds, cap)
    except DurationLimitError as exc:
        st.warning(f"Too long for this class: {exc}")


def form_config(dataset) -> RunConfig:
    """The config the widgets describe, for `dataset` on the sidebar's device (ConfigError if a
    value is refused)."""
    values = {k: S[k] for k in widget_values(common.current_config())}
    values["train.dataset"] = dataset.name
    values["train.device"] = S.get("device", "auto")
    return config_from_widgets(values)


def train_clicked() -> None:
    """Train's callback. It runs before the page's script, so the job is queued at once rather
    than once the page above the button has been drawn again: when a class presses Train together,
    every session's script shares the server and its cores (measured with 8 sessions: the first
    run showed training 5 to 6.5 s after the clicks)."""
    dataset, _ = common.current_dataset()
    try:
        config = form_config(dataset)
    except ConfigError:
        return  # the page says why; Train is disabled then
    S["_cannot_start"] = start_training(config, dataset)


def start_training(config, dataset) -> str | None:
    """Queue a job for `config`; why it cannot start, in words, or None."""
    manager = common.manager(say_why=False)  # the sidebar says why when there is none
    if manager is None:
        return None
    try:
        resolve_device(config.train.device)
        person = common.person()
        job = TrainingJob(config, dataset, store=common.store(), owner=person.owner,
                          owner_name=person.name, data_dir=common.classroom().data_dir or None)
        manager.submit(job, common.classroom().policy, person)
    except (ConfigError, JobRefused) as exc:
        return str(exc)
    except StoreError as exc:
        return common.for_this_person(exc)
    job.wait_for_progress(FIRST_POINT_WAIT_SECONDS)
    S["session_runs"] = runs_of_session(S.get("session_runs", []), common.current_job())
    S["job"] = job
    S.pop("opened_run", None)
    return None


def draw_status(snap: JobSnapshot) -> None:
    final = snap.result.final if snap.result else None
    acc = f" Test accuracy {final.test_acc:.2%}." if final else ""
    if snap.state == "queued":
        wait = ("" if snap.expected_wait_s is None
                else f" Expected wait about {max(1, round(snap.expected_wait_s)):,} s.")
        st.info(f"Waiting for the device: place {snap.queue_position} in the queue.{wait} "
                "Your curves appear here once your run starts.")
    elif snap.state == "running":
        p = snap.progress
        if p is None:
            st.progress(0.0, text="Starting…")
        else:
            st.progress(snap.done_fraction, text=(
                f"Epoch {p.epoch}/{p.epochs} · step {p.epoch_step}/{p.steps_per_epoch} · "
                f"{p.samples_per_s:,.0f} samples/s · ETA {p.eta_s:,.0f} s"))
    elif snap.state == "finished":
        st.success(f"Finished.{acc} {common.for_this_person(snap.message)}")
    elif snap.state == "stopped":
        st.warning(f"Stopped after {len(snap.history)} epoch(s).{acc}")
    elif snap.state == "diverged":
        st.error(f"Diverged: the training blew up. {common.for_this_person(snap.message)}")
    else:
        st.error(f"Training failed: {common.for_this_person(snap.message)}")


def cached_figure(name: str, key: tuple, build):
    """The figure built for `key` last time, or a new one: nothing is rebuilt when nothing changed."""
    cached = S.get(name)
    if cached is None or cached[0] != key:
        cached = (key, build())
        S[name] = cached
    return cached[1]


def draw_loss_curve(job_id: int, snap: JobSnapshot) -> None:
    st.plotly_chart(cached_figure("_loss_figure", (job_id, snap.version),
                                  lambda: batch_loss_figure(snap.batch_losses, diverged=snap.diverged)),
                    key="curve_batch")


def epoch_panel(job_id: int, snap: JobSnapshot) -> None:
    """The per-epoch figure, drawn with the loss curve at every redraw. (Drawing it by full runs of
    the page when an epoch ended cost more: on the bundled sample an epoch is shorter than a redraw,
    so every redraw became a full run, the whole page rebuilt in the browser.)"""
    if snap.result is not None and not snap.history:
        st.caption(f"The run ended ({snap.state}) before its first epoch did, so there are no "
                   "per-epoch curves.")
        return
    st.plotly_chart(cached_figure("_epoch_figure", (job_id, snap.epochs_shown),
                                  lambda: epoch_curves_figure(
                                      [m.as_dict() for m in snap.history],
                                      snap.result.best_epoch if snap.result else None,
                                      snap.config.train.epochs)),
                    key="curve_epochs")


def live_panel() -> None:
    job = common.current_job()
    if job is None:
        st.caption("Press **Train** to start; the curves appear here while it runs.")
        # An empty loss curve now, so the browser loads and starts plotly.js while the learner
        # sets up, not when Train is pressed: about 1.4 s of a browser's CPU, measured in Chromium.
        st.plotly_chart(batch_loss_figure([]), key="curve_batch")
        return
    snap = job.snapshot()
    if (wait := snap.end_wait()) and job.wait(wait):
        snap = job.snapshot()
    draw_status(snap)
    if snap.state != "queued":  # a queued job's page draws only its place in line
        draw_loss_curve(job.id, snap)
        epoch_panel(job.id, snap)
    drawn = S.get("_job_drawn")  # what the sidebar showed (app.py), None if it showed nothing
    if S.get("_redraw_pace") != snap.redraw_seconds or drawn not in (None, (job.id, snap.state)):
        S["_redraw_pace"] = snap.redraw_seconds
        # Once per change of state (also one that came while the page ran: the sidebar and the
        # buttons were drawn before this panel): they, the redraw pace and other pages follow.
        st.rerun()


def page() -> None:
    """The page. Its names are locals, not the script module's globals: Streamlit gives every run a
    new module whose functions and globals form a reference cycle, and with runner.postScriptGC off
    a global `job` would keep each old run's result alive until a full collection."""
    st.title("Train a network")
    apply_link()
    init_widgets()
    person, room = common.person(), common.classroom()
    name_prompt(person)
    apply_rules(ClassPolicy(max_job_seconds=room.policy.max_job_seconds) if person.teacher
                else room.policy)
    notes_box = st.container()
    dataset, _ = common.current_dataset()
    left, right = st.columns([1, 2])
    with left:
        model_controls(len(dataset.train_y))
        training_controls(len(dataset.train_y))
    try:
        config = form_config(dataset)
        S["config"] = config
    except ConfigError as exc:
        config = None
        left.error(f"Setting refused: {exc}")
    else:
        with left:
            link_panel(config)
    with notes_box:
        notes_panel(config)

    with right:
        wanted = S.get("dataset", dataset.name)
        if wanted != dataset.name:  # said before Train is pressed, not found out after
            total = len(dataset.train_y)
            subset = config.train.train_subset if config is not None else 0
            images = (f"{numbers.count(subset)} of its {numbers.count(total)}" if 0 < subset < total
                      else numbers.count(total))
            text = (f"{common.dataset_title(wanted)} is not available here (see the sidebar): "
                    f"Train uses {common.dataset_title(dataset.name)}, {images} training images.")
            # The sample of the same dataset is a caption; another dataset altogether, a warning.
            (st.caption if dataset.name == f"{wanted}-sample" else st.warning)(text)
        job = common.current_job()
        snap = job.snapshot() if job is not None else None
        active = snap is not None and snap.active
        b1, b2, _ = st.columns([1, 1, 4])
        b1.button("Train", key="train_button", type="primary", disabled=active or config is None,
                  on_click=train_clicked)
        if b2.button("Stop", key="stop_button", disabled=not active):
            job.stop()
        if why := S.pop("_cannot_start", None):
            st.error(f"Cannot start: {why}")
        if active:
            st.caption("Changing settings now applies to the next run, not this one.")
        S["_redraw_pace"] = snap.redraw_seconds if snap else None
        st.fragment(run_every=S["_redraw_pace"])(live_panel)()
        if config is not None:
            with st.expander("Layer table", expanded=True):
                layer_table(config, dataset)


page()
