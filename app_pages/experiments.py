"""Experiments: every recorded run (shared by all sessions), filters, overlaid curves, a config
scatter, a leaderboard, and per-run rename / tags / delete / downloads / Open."""

from __future__ import annotations

import streamlit as st

from app_pages import common
from dlcore.figures import config_scatter_figure, runs_overlay_figure
from dlcore.runs.roles import NotAllowed
from dlcore.runs.store import STATUSES, UNREADABLE, StoreError, unreadable_note
from dlcore.text import check_name, markdown_literal
from dlcore.views import experiments as history

S = st.session_state
KEEP = dict(persist_state="session")
PENDING_DELETE = "experiments._pending_delete"
SPLITS = {"test": "evaluation (test set)", "val": "validation split", "train": "training set"}


def flash(kind: str, text: str) -> None:
    common.flash("experiments", kind, text)


# Callbacks: they run before the script, so the table drawn afterwards already shows the change.
# Each checks again that this session may change the run: the buttons' disabled state is only
# what the page drew.

def allowed(run_id: int, action: str) -> None:
    """Raise NotAllowed unless this session's person may `action` the run (StoreError: no run)."""
    run = common.store().get_run(run_id)
    common.person().require(run.get("owner"), run.get("owner_name"), action)


def do_rename(run_id: int) -> None:
    try:
        allowed(run_id, "rename")
        name = check_name(S.get("experiments.name", ""))
        common.store().rename(run_id, name or None)
    except (ValueError, StoreError, NotAllowed) as exc:
        flash("error", f"Could not rename run {run_id}: {markdown_literal(exc)}.")
    else:
        flash("success", f"Run {run_id} renamed to “{markdown_literal(name)}”." if name
              else f"Run {run_id}'s name cleared.")


def do_tags(run_id: int) -> None:
    tags = history.split_tags(S.get("experiments.tags", ""))
    try:
        allowed(run_id, "tag")
        for tag in tags:
            check_name(tag, "tag")
        common.store().set_tags(run_id, tags)
    except (ValueError, StoreError, NotAllowed) as exc:
        flash("error", f"Could not tag run {run_id}: {markdown_literal(exc)}.")
    else:
        S["experiments.tags"] = ", ".join(tags)
        flash("success", f"Run {run_id} tagged: {markdown_literal(', '.join(tags))}." if tags
              else f"Run {run_id}'s tags cleared.")


def ask_delete(run_id: int) -> None:
    S[PENDING_DELETE] = run_id


def cancel_delete() -> None:
    S.pop(PENDING_DELETE, None)


def do_delete(run_id: int) -> None:
    S.pop(PENDING_DELETE, None)
    try:
        allowed(run_id, "delete")
        common.store().delete(run_id)
    except (StoreError, NotAllowed) as exc:
        flash("error", f"Could not delete run {run_id}: {markdown_literal(exc)}")
        return
    S["experiments.compare"] = [i for i in S.get("experiments.compare", []) if i != run_id]
    if S.get("opened_run") == run_id:
        S.pop("opened_run", None)
    flash("success", f"Run {run_id} deleted, with its epochs and weights.")


def do_mark_interrupted(run_id: int) -> None:
    try:
        allowed(run_id, "mark interrupted")
        common.store().mark_run_interrupted(run_id)
    except (StoreError, NotAllowed) as exc:
        flash("error", f"Could not mark run {run_id} interrupted: {markdown_literal(exc)}")
    else:
        flash("success", f"Run {run_id} marked interrupted; its epochs are kept.")


def do_open(run_id: int) -> None:
    S["opened_run"] = run_id
    flash("success", f"Run {run_id} is open: the Learned features, Errors and Baseline pages now "
                     "show it.")


def close_run() -> None:
    S.pop("opened_run", None)


def opened_line(labels: dict[int, str]) -> None:
    opened = S.get("opened_run")
    if opened is None:
        return
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    label = markdown_literal(labels.get(opened, f"#{opened}"))
    c1.info(f"Open: run **{label}**. The Learned features, Errors and Baseline pages show it instead "
            "of your latest training.")
    c2.button("Back to the latest training", key="experiments.close", on_click=close_run)


def filters(runs) -> None:
    c1, c2, c3 = st.columns([2, 2, 2])
    c1.text_input("Filter by name, tags or dataset", key="experiments.filter", max_chars=200,
                  placeholder="e.g. dropout, mnist, #12", **KEEP)
    c2.multiselect("Status", STATUSES, key="experiments.status", placeholder="any status", **KEEP)
    tags = history.all_tags(runs)
    S["experiments.tag_filter"] = [t for t in S.get("experiments.tag_filter", []) if t in tags]
    c3.multiselect("Tags (runs with all of them)", tags, key="experiments.tag_filter",
                   placeholder="any tags", **KEEP)


def leaderboard_panel(runs) -> None:
    board = history.leaderboard(runs)
    st.subheader("Leaderboard")
    st.caption("Best final test accuracy per dataset, over every run on this server.")
    if board.empty:
        st.caption("No finished run yet.")
        return
    # A table, not a data grid: in this narrow column its text wraps, so no column is cut off.
    st.table(history.leaderboard_rows(board), hide_index=True)


def overlay_section(selected: list[int], labels: dict[int, str]) -> None:
    st.subheader("Curves of the selected runs")
    if not selected:
        st.caption("Select runs in the table (tick their rows) or under **Compare** to overlay their "
                   "curves here.")
        return
    st.radio("Curves of", list(SPLITS), key="experiments.split", format_func=SPLITS.get,
             horizontal=True, **KEEP)
    split = S.get("experiments.split", "test")
    overlay = history.overlay_frame(common.store(), selected)
    if overlay[[f"{split}_acc", f"{split}_loss"]].isna().all().all():
        st.caption(f"The selected runs recorded no {SPLITS[split]} metrics yet"
                   + (" (a validation split needs early stopping)." if split == "val" else "."))
        return
    st.plotly_chart(runs_overlay_figure(overlay, {i: labels[i] for i in selected}, split),
                    key="experiments.overlay")


def scatter_dataset_picker(shown) -> tuple[str | None, bool]:
    """The dataset the scatter shows, and whether the shown runs span several (then a "Dataset"
    box picks it, the most recent run's dataset at first)."""
    datasets, dataset = history.scatter_dataset(shown, S.get("experiments.scatter_dataset"))
    several = len(datasets) > 1
    if several:
        if S.get("experiments.scatter_dataset") != dataset:
            S["experiments.scatter_dataset"] = dataset
        dataset = st.selectbox("Dataset", datasets, key="experiments.scatter_dataset", **KEEP)
    return dataset, several


def scatter_caption(dataset: str | None, several: bool, unused: int) -> str:
    """What the scatter shows: which runs are points, which dataset, which runs are left out."""
    on = f" on **{markdown_literal(dataset)}**" if dataset else ""
    text = f"Every shown run{on} with a final test accuracy is a point; the selected runs are red."
    if several:
        text += " Accuracies on different datasets do not compare: pick the dataset above."
    if unused:
        runs = "1 run" if unused == 1 else f"{unused} runs"
        text += (f" Left out: {runs} that did not use this setting (a CNN has no hidden layer "
                 "widths, an MLP no conv channels).")
    return text


def scatter_section(shown, selected: list[int]) -> None:
    st.subheader("A setting against final test accuracy")
    dataset, several = scatter_dataset_picker(shown)
    runs = history.runs_on(shown, dataset)
    fields = history.scatter_fields(runs)
    if not fields:
        st.caption("No run with a config to plot.")
        return
    differing = history.differing_config_columns(runs)
    default = next((f for f in (*differing, "train.lr") if f in fields), fields[0])
    if S.get("experiments.x") not in fields:
        S["experiments.x"] = default
    st.selectbox("Setting on the x axis", fields, key="experiments.x",
                 format_func=history.field_label, **KEEP)
    data = history.scatter_data(runs, S["experiments.x"], selected)
    if data.frame.empty:
        st.caption("No shown run has a final test accuracy yet.")
    st.plotly_chart(config_scatter_figure(data.frame, history.field_label(data.field), data.numeric,
                                          data.log_x), key="experiments.scatter")
    st.caption(scatter_caption(dataset, several, data.unused))


def table_column_config(columns: list[str]) -> dict:
    """The table's headers in words and widths that fit typical values; the frame keeps its
    column names (the config keys), so selection and sorting work on them."""
    text = st.column_config.TextColumn
    config = {
        "id": st.column_config.NumberColumn("run", format="#%d"),
        "name": text("name", width="medium"),
        "owner_name": text("by"),
        "tags": text("tags", width="medium"),
        "test_acc": st.column_config.NumberColumn("test acc", format="percent"),
        "train_acc": st.column_config.NumberColumn("train acc", format="percent"),
        "test_loss": st.column_config.NumberColumn("test loss", format="%.4f"),
        "duration_s": st.column_config.NumberColumn("seconds", format="%.1f"),
    }
    for c in columns:
        config[c] = st.column_config.Column(history.field_label(c), width="medium")
    return config


def sync_run_inputs(run: dict) -> None:
    """The name and tags inputs start from the chosen run's values: again when the run changes,
    and when the inputs' state is gone (Streamlit drops a widget's state on a page it left)."""
    if (S.get("experiments._inputs_for") != run["id"] or "experiments.name" not in S
            or "experiments.tags" not in S):
        S["experiments._inputs_for"] = run["id"]
        S["experiments.name"] = run.get("name") or ""
        S["experiments.tags"] = ", ".join(run.get("tags") or [])


def actions_section(selected: list[int], labels: dict[int, str]) -> None:
    st.subheader("Manage a run")
    choices, picked = history.pick_run(selected, S.get("experiments._last_selected", []),
                                       S.get("experiments.target"), labels)
    S["experiments._last_selected"] = list(selected)
    if picked is None:
        st.caption("Select a run to rename, tag, delete, download or open it.")
        return
    if S.get("experiments.target") != picked:
        S["experiments.target"] = picked
    target = st.selectbox("Run", choices, key="experiments.target", format_func=labels.get, **KEEP)
    store = common.store()
    try:
        run = store.get_run(target)
    except StoreError as exc:
        st.warning(f"Run {target} is no longer in the history ({markdown_literal(exc)}).")
        return
    sync_run_inputs(run)
    mine = common.person().may_change(run.get("owner"))
    if not mine:
        whose = (f"{markdown_literal(run['owner_name'])}'s run" if run.get("owner_name")
                 else "not your run")
        st.caption(f"This is {whose}: only its owner or the teacher may rename, tag or delete it.")
    running = run["status"] == "running"
    if running and store.recorder_alive(target):
        st.caption(":material/hourglass_top: This run is still training (in this or another session).")
    elif running:  # recorded on another machine or by an older DL Lab: cannot be checked here
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.caption(":material/hourglass_top: This run is marked running, but its recorder cannot be "
                   "checked from here (another machine, or an older DL Lab). If it is stuck, mark it "
                   "interrupted.")
        c2.button("Mark interrupted", key="experiments.mark_interrupted", disabled=not mine,
                  on_click=do_mark_interrupted, args=(target,))
    elif run.get("message"):
        st.caption(f"Status **{run['status']}**: {common.for_this_person(run['message'])}")

    c1, c2 = st.columns(2)
    with c1:
        st.text_input("Name", key="experiments.name", max_chars=80)
        st.button("Rename", key="experiments.rename", on_click=do_rename, args=(target,),
                  disabled=not mine)
    with c2:
        st.text_input("Tags (comma-separated)", key="experiments.tags", max_chars=300)
        st.button("Save tags", key="experiments.set_tags", on_click=do_tags, args=(target,),
                  disabled=not mine)

    weights = store.weights_path(target)
    d1, d2, d3, d4 = st.columns(4)
    d1.button("Open", key="experiments.open", on_click=do_open, args=(target,), type="primary",
              disabled=weights is None or S.get("opened_run") == target,
              help="Show this run on the Learned features, Errors and Baseline pages."
              if weights is not None else "This run has no saved weights to open.")
    if weights is not None:
        d2.download_button("Weights (.pt)", data=lambda: weights.read_bytes(),
                           file_name=f"run-{target}.pt", mime="application/octet-stream",
                           key="experiments.weights", on_click="ignore")
    else:
        d2.caption("No weights saved" + (" yet." if running else "."))
    d3.download_button("Config (JSON)", data=history.config_json(store, target),
                       file_name=f"run-{target}-config.json", mime="application/json",
                       key="experiments.config_json", on_click="ignore")
    d4.button("Delete…", key="experiments.delete", on_click=ask_delete, args=(target,),
              disabled=running or not mine, help="A running run cannot be deleted; stop it first."
              if running else "Delete this run, its epochs and its weights (asks first).")
    if S.get(PENDING_DELETE) == target and not running and mine:
        st.warning(f"Delete run **{markdown_literal(labels[target])}** with all its epochs and "
                   "weights? This cannot be undone.")
        y, n, _ = st.columns([1, 1, 3])
        y.button("Yes, delete it", key="experiments.confirm_delete", type="primary",
                 on_click=do_delete, args=(target,))
        n.button("Cancel", key="experiments.cancel_delete", on_click=cancel_delete)


st.title("Experiments")
try:
    store = common.store()
    store.mark_interrupted()  # runs whose recorder died since the server started
    runs = store.list_runs()
except Exception as exc:  # a locked, unreadable or newer history: say so, change nothing
    st.error(f"The run history cannot be read: {common.for_this_person(exc)}")
    st.stop()
if store.notice:
    st.warning(common.for_this_person(store.notice))
damaged = unreadable_note(runs.attrs.get(UNREADABLE, []))
if damaged:
    st.warning(damaged)
common.show_flash("experiments")
labels = history.run_labels(runs)
opened_line(labels)
if runs.empty:
    st.info("No runs yet. Train a network on the **Train** page: every run is recorded here "
            "automatically, and all sessions on this server share the history.")
    st.stop()

main, side = st.columns([5, 2])
with side:
    leaderboard_panel(runs)
    st.download_button("Export all runs (CSV)", data=lambda: history.export_csv_bytes(store),
                       file_name="dllab-runs.csv", mime="text/csv", key="experiments.csv",
                       on_click="ignore", help="Every run and every epoch, one row per (run, epoch).")

with main:
    filters(runs)
    shown = history.filter_runs(runs, S.get("experiments.filter", ""),
                                S.get("experiments.status", []), S.get("experiments.tag_filter", []))
    table_state = S.get("experiments.table")
    rows = table_state.get("selection", {}).get("rows", []) if table_state else []
    table_ids = history.ids_from_table_rows(shown, rows)
    S["experiments.compare"] = [i for i in S.get("experiments.compare", []) if i in labels]
    selected = history.union_selection(table_ids, S["experiments.compare"], labels)
    columns = history.table_config_columns(runs, shown, selected)

    busy = history.running_count(runs)
    frame = history.table_frame(shown, columns)
    st.caption(f"{len(shown)} of {len(runs)} runs shown" + (f"; {busy} still training" if busy else "")
               + ", oldest first (click a column header to sort). Config columns: only the settings "
               + "that differ "
               + ("among the selected runs" if len(selected) >= 2 else "among the shown runs")
               + (f"; {history.NOT_APPLICABLE} where a run did not use the setting."
                  if history.shows_unused(frame, columns) else "."))
    if shown.empty:
        st.info("No run matches the filter.")
    st.dataframe(frame, hide_index=True, key="experiments.table", on_select="rerun",
                 selection_mode="multi-row", column_config=table_column_config(columns))
    st.multiselect("Compare (also selects runs, like ticking their rows)", list(labels),
                   key="experiments.compare", format_func=labels.get, placeholder="choose runs",
                   **KEEP)

left, right = st.columns(2)
with left:
    overlay_section(selected, labels)
with right:
    scatter_section(shown, selected)
actions_section(selected, labels)
