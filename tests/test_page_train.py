"""AppTest: the Train page's layer table with its memory estimate, the memory guard, a queued run's
place in line, and the downsampled live curve, through the default (process) runner."""

from __future__ import annotations

import threading
import time

import numpy as np
import streamlit
from apphelpers import (
    APP,
    chart_keys,
    chart_spec,
    click_train,
    plotly_array,
    start_app,
    train_run,
    unescape,
)
from streamlit.string_util import is_material_icon
from streamlit.testing.v1 import AppTest

from dlcore.engine.config import RunConfig
from dlcore.engine.data import load_with_fallback
from dlcore.engine.train import BatchProgress
from dlcore.runs.curve import MAX_POINTS
from dlcore.runs.jobs import JobSnapshot, TrainingJob, default_manager


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_layer_table_shows_parameters_and_a_memory_estimate(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    assert not at.exception
    shown = metrics(at)
    assert shown["Parameters"] == "535,818"
    assert shown["Memory (estimate)"].endswith(("MB", "GB"))
    assert any("one run may use" in c.value for c in at.caption)
    assert not any("Too big" in w.value for w in at.warning)


def test_the_layer_table_writes_parameters_with_separators(tmp_path, monkeypatch):
    """Issue: the layer table printed 401920 (the metric above it says 535,818)."""
    at = start_app(monkeypatch, tmp_path)
    (table,) = [d.value for d in at.dataframe if "parameters" in d.value.columns]
    shown = [p for p in table["parameters"] if p != "0"]  # flatten, ReLU, dropout: none
    assert shown == ["401,920", "131,328", "2,570"]
    assert metrics(at)["Parameters"] == "535,818"


def test_pages_use_material_icons_and_the_tab_an_image_not_emoji(tmp_path, monkeypatch):
    """Issue: emoji icons are empty boxes on a machine without an emoji font; Streamlit ships its
    Material icons."""
    seen = []
    set_page_config = streamlit.set_page_config
    monkeypatch.setattr(streamlit, "set_page_config",
                        lambda **kw: seen.append(kw) or set_page_config(**kw))
    at = start_app(monkeypatch, tmp_path)
    assert not at.exception
    icons = {p["page_name"]: p["icon"] for p in at._registered_pages.values()}
    assert len(icons) == 8 and icons["Random Forest baseline"] == ":material/forest:"
    for icon in icons.values():
        assert icon.startswith(":material/") and icon.endswith(":"), icon
        assert is_material_icon(icon.removeprefix(":material/").removesuffix(":")), icon
    # The tab's icon is an image the app draws: a :material/...: or emoji favicon is fetched from
    # Google's or Twemoji's servers, which a classroom may not reach (tests/test_screens.py).
    assert seen and all(kw["page_icon"].size == (32, 32) for kw in seen)


def test_a_run_over_the_memory_limit_is_refused_with_its_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_MAX_JOB_MEMORY", "300M")
    at = start_app(monkeypatch, tmp_path)
    warning = next(w.value for w in at.warning if "Too big to train here" in w.value)
    estimate = metrics(at)["Memory (estimate)"]
    assert f"about {estimate} of memory" in warning and "300 MB" in warning
    at.button(key="train_button").click().run()
    assert not at.exception
    refusal = next(e.value for e in at.error if e.value.startswith("Cannot start"))
    assert f"about {estimate} of memory" in refusal
    assert "more than the 300 MB one run may use" in refusal
    assert "job" not in at.session_state


def test_a_queued_run_shows_its_place_and_no_charts(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    sample, _ = load_with_fallback("mnist")
    manager = default_manager()
    other = manager.submit(TrainingJob(  # another student's long run holds the only slot
        RunConfig().replace(**{"train.epochs": 500, "train.dataset": sample.name,
                               "model.hidden": (16,), "train.device": "cpu"}),
        sample, owner="another student"))
    try:
        deadline = time.monotonic() + 120
        while other.snapshot().progress is None and time.monotonic() < deadline:
            time.sleep(0.1)
        at.switch_page("app_pages/train.py").run()
        at.button(key="train_button").click().run()
        assert not at.exception
        place = next(i.value for i in at.info if "Waiting for the device" in i.value)
        assert "place 1 in the queue" in place and "Expected wait about" in place
        assert chart_keys(at) == []  # a queued page draws its place, nothing else
        assert at.button(key="stop_button").disabled is False
        at.button(key="stop_button").click().run()
        job = at.session_state["job"]
        assert job.wait(60) and job.snapshot().state == "stopped"
    finally:
        other.stop()
        other.wait(60)


def test_the_loss_curve_is_drawn_empty_before_the_first_run(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    assert chart_keys(at) == ["curve_batch"]  # the page loads the chart code before Train
    empty = chart_spec(at, "curve_batch")
    assert [a["text"] for a in empty["layout"]["annotations"]] == ["no training steps yet"]
    train_run(at, epochs=1, subset=1000)
    assert sorted(chart_keys(at)) == ["curve_batch", "curve_epochs"]
    assert "annotations" not in chart_spec(at, "curve_batch")["layout"]


def test_the_loss_curve_is_downsampled_and_the_same_as_the_result(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    at.select_slider(key="train.batch_size").set_value(16)
    job = train_run(at, epochs=3, subset=3000)  # 563 steps of 16
    result = job.snapshot().result
    assert len(result.batch_losses) > MAX_POINTS
    spec = chart_spec(at, "curve_batch")
    x = plotly_array(spec["data"][0]["x"])
    assert len(x) <= MAX_POINTS + 1 and x[-1] == result.batch_losses[-1][0]
    assert np.all(np.diff(x) > 0)
    at.run()  # nothing changed: the same figure again
    assert chart_spec(at, "curve_batch") == spec


def test_pressing_train_twice_in_a_row(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    at.slider(key="train.epochs").set_value(1)
    at.select_slider(key="train.train_subset").set_value(1000)
    first = click_train(at)
    second = click_train(at)
    assert first.id != second.id and second.snapshot().state == "finished"
    assert any("Finished." in s.value for s in at.success)


def test_a_runner_that_cannot_be_had_is_said_on_the_page(tmp_path, monkeypatch):
    import dlcore.runs.jobs as jobs_module

    monkeypatch.setattr(jobs_module, "_default_manager", None)  # as on a fresh server
    monkeypatch.setenv("DLLAB_RUNNER", "gpu-farm")
    at = start_app(monkeypatch, tmp_path)
    assert not at.exception
    assert any("Training is not available on this server" in e.value and "DLLAB_RUNNER='gpu-farm'"
               in unescape(e.value) and "process, thread, ray" in e.value for e in at.error)
    at.button(key="train_button").click().run()
    assert not at.exception and "job" not in at.session_state


def test_controls_that_would_do_nothing_say_so(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    for key in ("model.activation", "model.norm"):
        assert not at.selectbox(key=key).disabled
    at.slider(key="model.n_hidden").set_value(0).run()
    assert at.selectbox(key="model.activation").disabled and at.selectbox(key="model.norm").disabled
    assert at.slider(key="model.dropout").disabled
    assert "No hidden layer" in at.slider(key="model.dropout").help
    subset = at.select_slider(key="train.train_subset")  # the bundled sample: 10,000 images
    assert subset.options == ["100", "300", "1,000", "3,000", "all (10,000)"]  # all: the right end


def test_a_link_asking_more_images_than_the_dataset_has_trains_on_all(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["train.train_subset"] = "30000"
    at.run()
    assert at.select_slider(key="train.train_subset").value == 0
    assert at.session_state["config"].train.train_subset == 0


def test_train_says_which_data_it_will_use_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no downloaded files
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["dataset"] = "fashion-mnist"
    at.run()
    assert any(w.value.startswith("Fashion-MNIST is not available here") and
               "Train uses MNIST sample" in w.value and "10,000 training images" in w.value
               for w in at.warning), [w.value for w in at.warning]
    notes = [w.value for w in at.sidebar.warning]
    assert len(notes) == 1 and "--data-dir" not in notes[0] and "Download" in notes[0]
    assert notes[0].count("(") == notes[0].count(")")
    at.select_slider(key="train.train_subset").set_value(3000).run()
    assert any("Train uses MNIST sample (bundled), 3,000 of its 10,000 training images." in w.value
               for w in at.warning), [w.value for w in at.warning]



class EndingJob:
    """A job on its last steps (0.2 s left) that ends 0.3 s after the page first looks at it."""

    id = 999_999

    def __init__(self) -> None:
        self.done = threading.Event()
        self.timer: threading.Timer | None = None

    def snapshot(self) -> JobSnapshot:
        if self.timer is None:
            self.timer = threading.Timer(0.3, self.done.set)
            self.timer.start()
        progress = BatchProgress(epoch=3, epochs=3, step=290, epoch_step=90, steps_per_epoch=100,
                                 loss=0.3, samples_per_s=1000.0, eta_s=0.2)
        return JobSnapshot(state="finished" if self.done.is_set() else "running",
                           config=RunConfig(), queue_position=None, progress=progress, history=(),
                           batch_losses=((290, 0.3),), message="", run_id=None, result=None)

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def stop(self) -> None:
        self.done.set()


def test_a_run_ending_within_a_redraw_shows_finished_when_it_ends(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    at.session_state["job"] = EndingJob()
    at.run()
    assert not at.exception
    assert any(s.value.startswith("Finished.") for s in at.success)  # not "Epoch 3/3" a redraw longer


class EndsAfterFirstLook(EndingJob):
    """A job seen running by the first look (the sidebar's) and finished by every later one."""

    def snapshot(self) -> JobSnapshot:
        snap = super().snapshot()
        self.done.set()
        return snap


def test_a_run_ending_while_the_page_draws_leaves_no_stale_job_line_or_buttons(tmp_path,
                                                                              monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    at.session_state["job"] = EndsAfterFirstLook()
    at.run()
    assert not at.exception
    job_line = next(c.value for c in at.sidebar.caption if c.value.startswith("**Job:**"))
    assert job_line == "**Job:** finished"  # not "training, epoch 3/3" until the next click
    assert at.button(key="train_button").disabled is False
    assert at.button(key="stop_button").disabled is True
