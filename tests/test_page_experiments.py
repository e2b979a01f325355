"""AppTest: the Experiments page over runs recorded the way a learner makes them (Train page,
bundled MNIST sample), and over an empty history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from apphelpers import APP, click_train, plotly_array, shown_literally, start_app
from streamlit.testing.v1 import AppTest

from dlcore.engine.config import RunConfig
from dlcore.runs.store import RunStore
from dlcore.text import markdown_literal

ROOT = Path(__file__).resolve().parent.parent
PAGE = "app_pages/experiments.py"


def by_key(at: AppTest, kind: str, key: str):
    found = [e for e in at.get(kind) if getattr(e.proto, "id", "").endswith(f"-{key}")]
    assert len(found) == 1, f"no single {kind} with key {key}"
    return found[0]


def chart_data(at: AppTest, key: str) -> list[dict]:
    return json.loads(by_key(at, "plotly_chart", key).proto.spec)["data"]


def table(at: AppTest):
    return by_key(at, "dataframe", "experiments.table").value


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two runs recorded from the Train page: 1,000 images, 2 epochs, lr 0.001 then 0.01."""
    home = tmp_path_factory.mktemp("dllab")
    with pytest.MonkeyPatch.context() as mp:
        at = start_app(mp, home)
        at.select_slider(key="train.train_subset").set_value(1000)
        at.slider(key="train.epochs").set_value(2)
        click_train(at)
        at.select_slider(key="train.lr").set_value(0.01)
        click_train(at)
        at.switch_page(PAGE).run()
        assert not at.exception
        store = RunStore(home)
        ids = sorted(store.list_runs()["id"])
        assert len(ids) == 2
        yield at, store, ids


def test_empty_history_says_how_to_start(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(PAGE).run()
    assert not at.exception
    assert any("No runs yet" in i.value and "Train" in i.value for i in at.info)
    assert not at.get("plotly_chart") and not at.dataframe


def test_corrupt_history_is_moved_aside_with_a_warning(tmp_path, monkeypatch):
    (tmp_path / "runs.sqlite").write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(PAGE).run()
    assert not at.exception
    assert any("moved aside" in w.value for w in at.warning)
    assert list(tmp_path.glob("runs.sqlite.corrupt-*"))


def test_a_run_whose_config_is_not_json_is_listed_with_one_note(tmp_path, monkeypatch):
    import sqlite3

    store = RunStore(tmp_path)
    for name in ("good", "damaged"):
        run_id = store.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu",
                                 name=name)
        store.finish_run(run_id, "finished", metrics={"test_acc": 0.9})
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET config = 'not json' WHERE id = ?", (run_id,))
    at = start_app(monkeypatch, tmp_path)
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    notes = [w.value for w in at.main.warning if "cannot be read" in w.value]
    assert len(notes) == 1 and notes[0].startswith(f"Run {run_id} has settings or tags"), notes
    assert sorted(table(at)["name"]) == ["damaged", "good"]
    at.multiselect(key="experiments.compare").set_value([run_id]).run()
    assert not at.exception


def test_table_lists_both_runs_with_only_the_differing_config(recorded):
    at, store, (a, b) = recorded
    frame = table(at)
    assert sorted(frame["id"]) == [a, b]
    assert set(frame["status"]) == {"finished"}
    assert [c for c in frame.columns if c.startswith(("model.", "train."))] == ["train.lr"]


def test_selecting_both_overlays_their_stored_curves(recorded):
    at, store, (a, b) = recorded
    at.multiselect(key="experiments.compare").set_value([a, b]).run()
    assert not at.exception
    data = chart_data(at, "experiments.overlay")
    acc = [t for t in data if t.get("meta", [None, None])[1] == "acc"]
    assert sorted(t["meta"][0] for t in acc) == [a, b]
    for trace in acc:
        stored = store.epochs(trace["meta"][0])
        assert list(plotly_array(trace["x"])) == [1, 2]
        assert np.allclose(plotly_array(trace["y"]), stored["test_acc"].to_numpy())
        assert trace["name"].startswith(f"#{trace['meta'][0]}")
    assert len([t for t in data if t.get("meta", [None, None])[1] == "loss"]) == 2
    scatter = chart_data(at, "experiments.scatter")
    assert [t["name"] for t in scatter] == ["selected runs"]  # both runs are selected
    assert sorted(plotly_array(scatter[0]["x"])) == [0.001, 0.01]
    # the CSV export and the config download are there for one click
    assert by_key(at, "download_button", "experiments.csv")
    assert by_key(at, "download_button", "experiments.config_json")
    assert by_key(at, "download_button", "experiments.weights")


def test_the_leaderboard_shows_every_column_as_text_that_wraps(recorded):
    at, store, ids = recorded
    board = at.table[0].value  # st.table: wraps in the narrow column, nothing cut off
    assert list(board.columns) == ["dataset", "best test accuracy", "run", "runs"]
    assert list(board["runs"]) == [2]
    best = store.list_runs()["test_acc"].max()
    assert list(board["best test accuracy"]) == [f"{best:.1%}"]
    assert board["run"].iloc[0].startswith("#")


def test_filters_narrow_the_table(recorded):
    at, _, (a, b) = recorded
    at.text_input(key="experiments.filter").set_value(f"#{b}").run()
    assert list(table(at)["id"]) == [b]
    at.text_input(key="experiments.filter").set_value("").run()
    at.multiselect(key="experiments.status").set_value(["running"]).run()
    assert table(at).empty and any("No run matches" in i.value for i in at.info)
    at.multiselect(key="experiments.status").set_value([]).run()
    assert len(table(at)) == 2
    assert not at.exception


def test_rename_and_tags_show_in_the_table(recorded):
    at, store, (a, b) = recorded
    at.multiselect(key="experiments.compare").set_value([a]).run()
    at.text_input(key="experiments.name").set_value("  baseline lr 1e-3 ")
    at.button(key="experiments.rename").click().run()
    assert not at.exception
    frame = table(at)
    assert frame.loc[frame["id"] == a, "name"].item() == "baseline lr 1e-3"
    assert store.get_run(a)["name"] == "baseline lr 1e-3"
    assert at.multiselect(key="experiments.compare").value == [a]  # the relabelled run stays chosen
    at.text_input(key="experiments.tags").set_value("week1, ,sweep,week1")
    at.button(key="experiments.set_tags").click().run()
    assert store.get_run(a)["tags"] == ["week1", "sweep"]
    frame = table(at)
    assert frame.loc[frame["id"] == a, "tags"].item() == "week1, sweep"
    at.text_input(key="experiments.filter").set_value("SWEEP").run()
    assert list(table(at)["id"]) == [a]
    at.text_input(key="experiments.filter").set_value("").run()


def test_open_shows_the_run_on_the_errors_page(recorded):
    at, _, (a, b) = recorded
    at.multiselect(key="experiments.compare").set_value([b]).run()
    at.button(key="experiments.open").click().run()
    assert at.session_state["opened_run"] == b
    assert any(f"#{b}" in i.value for i in at.info)
    if (ROOT / "app_pages/errors.py").exists():
        at.switch_page("app_pages/errors.py").run()
        assert not at.exception
        assert any(c.value.startswith(f"Run {b} ·") for c in at.caption)
        at.switch_page(PAGE).run()
    at.button(key="experiments.close").click().run()
    assert "opened_run" not in at.session_state
    assert not at.exception


def test_delete_needs_the_confirmation(recorded):
    at, store, (a, b) = recorded
    extra = store.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu", name="junk")
    store.add_epoch(extra, {"epoch": 1, "test_acc": 0.1, "test_loss": 2.0})
    store.finish_run(extra, "stopped", metrics={"test_acc": 0.1})
    at.run()
    at.multiselect(key="experiments.compare").set_value([extra]).run()
    at.button(key="experiments.delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert extra in set(store.list_runs()["id"])  # asked, not deleted
    at.button(key="experiments.cancel_delete").click().run()
    assert extra in set(store.list_runs()["id"])
    assert not any(b.key == "experiments.confirm_delete" for b in at.button)
    at.button(key="experiments.delete").click().run()
    at.button(key="experiments.confirm_delete").click().run()
    assert not at.exception
    assert extra not in set(store.list_runs()["id"])
    assert extra not in set(table(at)["id"]) and set(table(at)["id"]) == {a, b}
    assert at.multiselect(key="experiments.compare").value == []
    assert sorted(store.list_runs()["id"]) == [a, b]


def test_a_running_run_shows_as_such_and_cannot_be_deleted(recorded):
    at, store, (a, b) = recorded
    live = store.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu")  # our pid: alive
    try:
        at.run()
        frame = table(at)
        assert frame.loc[frame["id"] == live, "status"].item() == "running"
        assert any("1 still training" in c.value for c in at.caption)
        at.multiselect(key="experiments.compare").set_value([live]).run()
        assert at.button(key="experiments.delete").disabled
        assert at.button(key="experiments.open").disabled
        assert not any(d.proto.id.endswith("-experiments.weights") for d in at.get("download_button"))
        assert not at.exception
    finally:
        store.finish_run(live, "failed", message="test over")
        store.delete(live)
    at.multiselect(key="experiments.compare").set_value([]).run()


def test_after_a_reset_no_old_weights_and_dead_or_stuck_runs_can_be_cleared(tmp_path, monkeypatch):
    import sqlite3

    import torch

    old = RunStore(tmp_path)
    first = old.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu")
    old.finish_run(first, "finished", metrics={"test_acc": 0.9306},
                   state_dict=torch.nn.Linear(2, 2).state_dict())
    (tmp_path / "runs.sqlite").write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(PAGE).run()
    assert any("moved aside" in w.value for w in at.warning)

    store = RunStore(tmp_path)
    new = store.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu")
    store.finish_run(new, "stopped")  # saved no weights
    dead = store.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu")
    stuck = store.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu")
    with sqlite3.connect(store.path) as conn:  # PID 1 (a container's init), not the recorder
        conn.execute("UPDATE runs SET pid = 1, pid_token = 'gone:1' WHERE id = ?", (dead,))
        conn.execute("UPDATE runs SET host = 'another-machine' WHERE id = ?", (stuck,))
    conn.close()
    at.run()
    assert new == first
    at.multiselect(key="experiments.compare").set_value([new]).run()
    assert at.button(key="experiments.open").disabled  # run 1's old weights are not this run's
    assert not any(d.proto.id.endswith("-experiments.weights") for d in at.get("download_button"))
    assert any(c.value == "No weights saved." for c in at.caption)

    frame = table(at)
    assert frame.loc[frame["id"] == dead, "status"].item() == "interrupted"
    at.multiselect(key="experiments.compare").set_value([dead]).run()
    assert not at.button(key="experiments.delete").disabled

    at.multiselect(key="experiments.compare").set_value([stuck]).run()
    assert at.button(key="experiments.delete").disabled
    at.button(key="experiments.mark_interrupted").click().run()
    assert store.get_run(stuck)["status"] == "interrupted"
    assert any("marked interrupted" in s.value for s in at.success)
    at.button(key="experiments.delete").click().run()
    at.button(key="experiments.confirm_delete").click().run()
    assert stuck not in set(store.list_runs()["id"])
    assert not at.exception


# ---------------------------------------------------------------- text is text

HOSTILE_NAMES = ("![x](http://host/x.png)", "[click](http://e.com)", "$$x^2$$",
                 '<a href="http://e.com">a</a>')


def test_markdown_and_html_in_run_names_show_as_typed(tmp_path, monkeypatch):
    import torch

    store = RunStore(tmp_path)
    ids = []
    for k, name in enumerate(HOSTILE_NAMES):
        run_id = store.start_run(RunConfig().replace(**{"train.lr": 10.0 ** -(k + 1)}).to_dict(),
                                 dataset="mnist-sample", device="cpu", name=name)
        for epoch in (1, 2):
            store.add_epoch(run_id, {"epoch": epoch, "test_acc": 0.5 + k / 10, "test_loss": 1.0})
        store.finish_run(run_id, "finished", metrics={"test_acc": 0.5 + k / 10, "test_loss": 1.0},
                         state_dict=torch.nn.Linear(2, 2).state_dict())
        ids.append(run_id)
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(PAGE).run()
    assert not at.exception

    at.multiselect(key="experiments.compare").set_value(ids).run()
    names = [t["name"] for t in chart_data(at, "experiments.overlay") if t.get("showlegend", True)]
    as_plotly_shows_them = ("![x](http://host/x.png)", "[click](http://e.com)",
                            "&#36;&#36;x^2&#36;&#36;", '&lt;a href="http://e.com"&gt;a&lt;/a&gt;')
    assert names == [f"#{i} {n}" for i, n in zip(ids, as_plotly_shows_them, strict=True)]
    assert not any("<a" in n or "$$" in n for n in names)
    hover = [t for trace in chart_data(at, "experiments.scatter") for t in trace["text"]]
    assert hover and not any("<a" in t or "$$" in t for t in hover)
    assert any("&lt;a href=" in t for t in hover)

    for run_id, name in zip(ids, HOSTILE_NAMES, strict=True):
        at.multiselect(key="experiments.compare").set_value([run_id]).run()
        at.button(key="experiments.delete").click().run()
        (asked,) = [w.value for w in at.warning if "cannot be undone" in w.value]
        assert shown_literally(asked, name), asked
        at.button(key="experiments.cancel_delete").click().run()
        at.button(key="experiments.open").click().run()
        (opened,) = [i.value for i in at.info if i.value.startswith("Open: run")]
        assert shown_literally(opened, name), opened
    assert sorted(store.list_runs()["id"]) == ids  # nothing deleted

    typed = "**Notice** [click](http://e.com) $$x$$"
    at.text_input(key="experiments.name").set_value(typed)
    at.button(key="experiments.rename").click().run()
    (said,) = [s.value for s in at.success if "renamed" in s.value]
    assert shown_literally(said, typed), said
    assert store.get_run(ids[-1])["name"] == typed
    assert not at.exception


def test_a_name_or_tag_over_80_characters_is_refused(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    run_id = store.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu",
                             name="short")
    store.finish_run(run_id, "stopped")
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(PAGE).run()
    at.multiselect(key="experiments.compare").set_value([run_id]).run()
    at.text_input(key="experiments.name").set_value("n" * 81)  # the box takes 80 (max_chars)
    at.button(key="experiments.rename").click().run()
    assert not at.exception
    assert store.get_run(run_id)["name"] in ("short", "n" * 80)
    at.text_input(key="experiments.tags").set_value("ok, " + "t" * 81)
    at.button(key="experiments.set_tags").click().run()
    assert any("at most 80 characters" in e.value for e in at.error)
    assert store.get_run(run_id)["tags"] == []
    at.text_input(key="experiments.name").set_value("n" * 80)
    at.button(key="experiments.rename").click().run()
    assert store.get_run(run_id)["name"] == "n" * 80


@pytest.fixture
def three_runs(tmp_path, monkeypatch):
    """Three finished runs, each with a name and tags, straight into the store."""
    store = RunStore(tmp_path)
    for n in (1, 2, 3):
        run_id = store.start_run(RunConfig().to_dict(), dataset="mnist-sample", device="cpu",
                                 name=f"run {n}")
        store.set_tags(run_id, [f"tag{n}"])
        store.finish_run(run_id, "finished", metrics={"test_acc": 0.9})
    at = start_app(monkeypatch, tmp_path)
    at.switch_page(PAGE).run()
    return at, store


def test_the_run_picker_keeps_its_run_when_the_tables_selection_changes(three_runs):
    at, store = three_runs
    at.multiselect(key="experiments.compare").set_value([1]).run()
    at.session_state["experiments.table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    at.selectbox(key="experiments.target").set_value(3).run()
    assert at.text_input(key="experiments.name").value == "run 3"
    at.text_input(key="experiments.name").input("renamed 3")
    # Renaming changes the table's data; the table may then report no selection.
    at.session_state["experiments.table"] = {"selection": {"rows": [], "columns": [], "cells": []}}
    at.button(key="experiments.rename").click().run()
    assert store.get_run(3)["name"] == "renamed 3" and store.get_run(1)["name"] == "run 1"
    assert at.selectbox(key="experiments.target").value == 3
    assert at.text_input(key="experiments.name").value == "renamed 3"
    assert "run 3" not in [t.value for t in at.text_input]  # not another run's inputs


def test_coming_back_to_the_page_shows_the_picked_runs_name_and_tags(three_runs):
    at, _ = three_runs
    at.multiselect(key="experiments.compare").set_value([2, 3]).run()
    at.selectbox(key="experiments.target").set_value(3).run()
    assert at.text_input(key="experiments.tags").value == "tag3"
    at.switch_page("app_pages/train.py").run()
    at.switch_page(PAGE).run()
    assert at.selectbox(key="experiments.target").value == 3
    assert at.text_input(key="experiments.name").value == "run 3"
    assert at.text_input(key="experiments.tags").value == "tag3"


# ------------------------------------------- headers in words, unused settings, one dataset a time

@pytest.fixture
def mixed_runs(tmp_path, monkeypatch):
    """An MLP on digits, then a CNN and an MLP on the MNIST sample, straight into the store."""
    store = RunStore(tmp_path)
    cnn = RunConfig().replace(**{"model.kind": "cnn", "model.conv_channels": (8, 16)})
    ids = {}
    for name, config, dataset, acc in (
            ("mlp digits", RunConfig().replace(**{"model.hidden": (512, 256, 128)}), "digits", 0.95),
            ("cnn sample", cnn, "mnist-sample", 0.9),
            ("mlp sample", RunConfig().replace(**{"train.lr": 0.01}), "mnist-sample", 0.8)):
        ids[name] = store.start_run(config.to_dict(), dataset=dataset, device="cpu", name=name)
        store.add_epoch(ids[name], {"epoch": 1, "test_acc": acc, "test_loss": 1.0})
        store.finish_run(ids[name], "finished", metrics={"test_acc": acc, "test_loss": 1.0})
    at = start_app(monkeypatch, tmp_path)
    at.switch_page(PAGE).run()
    assert not at.exception
    return at, ids


def scatter_points(at: AppTest) -> list[str]:
    """The scatter's points, by their runs' labels."""
    return sorted(t for trace in chart_data(at, "experiments.scatter") for t in trace["text"])


def test_table_headers_and_scatter_axis_are_in_words(mixed_runs):
    from dlcore.engine.config import setting_label

    at, _ = mixed_runs
    frame = table(at)
    config = [c for c in frame.columns if c.startswith(("model.", "train."))]
    assert {"model.hidden", "model.conv_channels", "train.lr"} <= set(config)  # keys stay keys
    shown = json.loads(by_key(at, "dataframe", "experiments.table").proto.columns)
    for column in config:
        assert shown[column]["label"] == setting_label(column) != column
        assert shown[column]["width"] == "medium"
    assert shown["model.hidden"]["label"] == "Hidden layer widths"
    assert shown["name"]["width"] == "medium"

    x = at.selectbox(key="experiments.x")
    assert "Learning rate" in x.options and "train.lr" not in x.options
    x.set_value("train.lr").run()
    layout = json.loads(by_key(at, "plotly_chart", "experiments.scatter").proto.spec)["layout"]
    assert layout["xaxis"]["title"]["text"] == "Learning rate"
    assert not at.exception


def test_a_cnn_shows_no_hidden_layer_widths(mixed_runs):
    at, ids = mixed_runs
    frame = table(at).set_index("id")
    assert frame.loc[ids["cnn sample"], "model.hidden"] == "—"
    assert frame.loc[ids["mlp digits"], "model.hidden"] == "512, 256, 128"
    assert frame.loc[ids["mlp sample"], "model.conv_channels"] == "—"
    assert frame.loc[ids["cnn sample"], "model.conv_channels"] == "8, 16"
    assert any("— where a run did not use the setting" in c.value for c in at.caption)

    at.selectbox(key="experiments.x").set_value("model.hidden").run()
    assert scatter_points(at) == [f"#{ids['mlp sample']} mlp sample"]  # not the CNN
    assert any("Left out: 1 run that did not use this setting" in c.value for c in at.caption)
    assert not at.exception


def test_the_scatter_shows_one_dataset_at_a_time(mixed_runs):
    at, ids = mixed_runs
    box = at.selectbox(key="experiments.scatter_dataset")
    assert box.options == ["digits", "mnist-sample"] and box.value == "mnist-sample"  # newest run's
    assert scatter_points(at) == [f"#{ids['cnn sample']} cnn sample",
                                  f"#{ids['mlp sample']} mlp sample"]
    assert any(f"on **{markdown_literal('mnist-sample')}**" in c.value and "do not compare" in c.value
               for c in at.caption)
    box.set_value("digits").run()
    assert scatter_points(at) == [f"#{ids['mlp digits']} mlp digits"]
    at.switch_page("app_pages/train.py").run()
    at.switch_page(PAGE).run()
    assert at.selectbox(key="experiments.scatter_dataset").value == "digits"  # kept

    at.text_input(key="experiments.filter").set_value("sample").run()  # one dataset shown
    assert not [s for s in at.selectbox if s.key == "experiments.scatter_dataset"]
    assert len(scatter_points(at)) == 2
    assert not at.exception
