"""AppTest: the Lessons page's load buttons, the Train page's settings in the URL, classroom mode,
the lr=10 mistake trained for real (bundled sample), and the step-through."""

from __future__ import annotations

import re

import pytest
from apphelpers import APP, chart_keys, chart_spec
from streamlit.proto.Metric_pb2 import Metric as MetricProto
from streamlit.testing.v1 import AppTest

from dlcore.engine.config import PRESETS, ModelSpec, RunConfig, TrainConfig
from dlcore.runs.store import RunStore
from dlcore.views.form import config_from_widgets, config_to_query, widget_values
from dlcore.views.lessons import LESSONS, Lesson


def lesson_by_id(lesson_id: str) -> Lesson:
    (lesson,) = [lesson for lesson in LESSONS if lesson.id == lesson_id]
    return lesson


def load_buttons() -> list[tuple[str, RunConfig]]:
    """Each load button's key and the config it loads, in the page's order."""
    return [(lesson.button_key(run), run.config) for lesson in LESSONS for run in lesson.runs]


WIDGET_KINDS = ("slider", "select_slider", "radio", "selectbox", "toggle", "checkbox", "number_input")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    return AppTest.from_file(APP, default_timeout=180)


def on_train_page(at: AppTest) -> bool:
    return bool(at.title) and at.title[0].value == "Train a network"


def shown_values(at: AppTest) -> dict:
    """The values of the Train page's widgets that are drawn, by key."""
    return {w.key: w.value for kind in WIDGET_KINDS for w in at.get(kind)
            if w.key and w.key.startswith(("model.", "train."))}


def page_config(at: AppTest) -> RunConfig:
    """The config the Train page's widget state describes, as the page computes it."""
    keys = widget_values(RunConfig())
    return config_from_widgets({k: at.session_state[k] for k in keys})


def as_sidebar_sets(at: AppTest, config: RunConfig) -> RunConfig:
    current = at.session_state["config"].train
    return config.replace(**{"train.dataset": current.dataset, "train.device": current.device})


def test_each_lesson_loads_exactly_its_settings(app):
    at = app.run()
    at.slider(key="train.epochs").set_value(2).run()  # a learner's own change, replaced on load
    for key, config in load_buttons():
        at.switch_page("app_pages/lessons.py").run()
        assert not at.exception
        at.button(key=key).click().run()
        assert not at.exception, key
        assert on_train_page(at), key
        expected = as_sidebar_sets(at, config)
        assert at.session_state["config"] == expected, key
        assert page_config(at).replace(**{"train.dataset": expected.train.dataset,
                                          "train.device": expected.train.device}) == expected, key
        values = widget_values(config)
        shown = shown_values(at)
        assert shown and all(shown[k] == values[k] for k in shown), key
        assert any("What to look for" in i.value for i in at.info), key
        assert at.query_params == config_to_query(config), key  # the URL follows the settings


@pytest.mark.parametrize("config", [
    RunConfig(ModelSpec(kind="cnn", hidden=(64, 32, 16), activation="gelu", dropout=0.35,
                        norm="batch", conv_channels=(8, 16, 128), kernel_size=5, pool=False,
                        dense=256),
              TrainConfig(optimizer="sgd", lr=0.03, momentum=0.5, batch_size=256, epochs=7,
                          weight_decay=1e-4, label_smoothing=0.1, train_subset=3000,
                          normalize=False, augment=True, early_stopping=True, patience=5,
                          val_fraction=0.2, seed=123)),
    RunConfig(ModelSpec(hidden=(), activation="tanh", dropout=0.0, conv_channels=(4,), dense=64),
              TrainConfig(optimizer="adamw", lr=3e-5, batch_size=8, epochs=50, train_subset=100,
                          seed=0)),
], ids=["cnn", "mlp"])
def test_a_link_round_trips_every_setting(app, config):
    params = config_to_query(config)
    for key, value in params.items():
        app.query_params[key] = value
    at = app.run()
    assert not at.exception
    assert not at.warning or all("link" not in w.value for w in at.warning)
    assert at.session_state["config"] == as_sidebar_sets(at, config)
    assert page_config(at) == config.replace(**{"train.dataset": "mnist", "train.device": "auto"})
    assert at.query_params == params
    assert any(c.value.endswith("?" + "&".join(f"{k}={v}" for k, v in params.items()))
               for c in at.code)
    at.run()  # a rerun keeps them
    assert at.session_state["config"] == as_sidebar_sets(at, config)


def test_a_malformed_link_shows_a_note_and_uses_the_defaults(app):
    app.query_params.update({"train.lr": "abc", "model.width_0": "99999", "bogus": "1",
                             "train.epochs": "4"})
    at = app.run()
    assert not at.exception
    notes = [w.value for w in at.warning if "link" in w.value]
    assert len(notes) == 1
    for name in ("train.lr=abc", "model.width_0=99999", "bogus"):
        assert name in notes[0]
    config = at.session_state["config"]
    assert config == as_sidebar_sets(at, RunConfig().replace(**{"train.epochs": 4}))
    assert at.select_slider(key="train.lr").value == 1e-3
    assert at.select_slider(key="model.width_0").value == 512
    assert at.query_params == {"train.epochs": "4"}  # the bad ones are gone from the URL
    at.slider(key="train.epochs").set_value(5).run()
    assert not [w for w in at.warning if "link" in w.value]  # the note goes once settings change


def test_a_classroom_link_shows_its_named_controls_fixed(app):
    app.query_params.update({"hide": "train.epochs,model.n_hidden,train.lr,model.kind",
                             "train.epochs": "3", "model.n_hidden": "1", "model.width_0": "64"})
    at = app.run()
    assert not at.exception
    assert any("greyed-out settings are fixed at the link's values" in i.value for i in at.info)
    for widget in (at.slider(key="train.epochs"), at.slider(key="model.n_hidden"),
                   at.select_slider(key="train.lr"), at.radio(key="model.kind")):
        assert widget.disabled, widget.key
        assert widget.help == "Fixed by the link this page was opened with."
    assert at.slider(key="train.epochs").value == 3
    assert not at.select_slider(key="model.width_0").disabled  # not named: still free
    assert at.select_slider(key="model.width_0").value == 64
    config = at.session_state["config"]
    assert config.train.epochs == 3 and config.model.hidden == (64,) and config.train.lr == 1e-3
    at.switch_page("app_pages/lessons.py").run()
    at.switch_page("app_pages/train.py").run()
    assert at.slider(key="train.epochs").disabled
    assert at.query_params["hide"] == "model.kind,model.n_hidden,train.epochs,train.lr"


def test_a_link_carries_the_dataset_to_the_sidebar(app):
    app.query_params.update({"train.dataset": "digits", "train.epochs": "2"})
    at = app.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="dataset").value == "digits"
    assert at.session_state["config"].train.dataset == "digits"
    assert at.query_params["train.dataset"] == "digits"  # the page's own link keeps it
    assert "train.dataset=digits" in at.code[0].value
    assert not [w for w in at.warning if "link" in w.value]


def test_a_link_naming_no_such_dataset_says_so(app):
    app.query_params.update({"train.dataset": "svhn"})
    at = app.run()
    assert not at.exception
    (note,) = [w.value for w in at.warning if "link" in w.value]
    assert "train.dataset=svhn" in note and "not a dataset of this app" in note
    assert at.sidebar.selectbox(key="dataset").value == "mnist"


def test_the_lr_mistake_diverges_and_the_page_says_why(app):
    at = app.run()
    at.selectbox(key="dataset").set_value("mnist-sample").run()
    at.switch_page("app_pages/lessons.py").run()
    at.button(key="lessons.load.lr.bad").click().run()
    assert on_train_page(at) and at.session_state["config"].train.lr == 10.0
    at.switch_page("app_pages/train.py")  # AppTest would otherwise rerun the page it last switched to
    at.slider(key="train.epochs").set_value(1).run()
    at.button(key="train_button").click().run()
    job = at.session_state["job"]
    assert job.wait(120)
    at.run()
    assert job.snapshot().state == "diverged"
    errors = [e.value for e in at.error]
    assert any("Diverged" in e and "learning rate is too high" in e for e in errors), errors
    spec = chart_spec(at, "curve_batch")  # the loss up to and including the blow-up, marked
    assert any(a["text"].startswith("diverged at step") for a in spec["layout"]["annotations"])
    assert any(t.get("marker", {}).get("symbol") == "x" for t in spec["data"])
    assert "curve_epochs" not in chart_keys(at)  # no empty per-epoch panels: a caption says why
    assert any("before its first epoch did" in c.value for c in at.caption)
    at.switch_page("app_pages/lessons.py").run()
    assert not at.exception
    tables = [d.value for d in at.dataframe if "which" in d.value.columns]
    assert len(tables) == 1  # only the lr lesson has a run of it
    assert tables[0]["status"].tolist() == ["diverged"]
    assert tables[0]["which"].tolist() == [lesson_by_id("lr").runs[0].label]


def step_table(at: AppTest):
    (table,) = [d.value for d in at.dataframe if "gradient (norm)" in d.value.columns]
    return table


def test_step_through_one_step_at_a_time(app):
    at = app.run()
    at.selectbox(key="dataset").set_value("mnist-sample").run()
    at.switch_page("app_pages/lessons.py").run()
    assert any("Take one step" in i.value for i in at.info)
    at.button(key="lessons.step").click().run()
    at.button(key="lessons.step").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Step"] == "2"
    assert float(metrics["Loss after (same batch)"]) < float(metrics["Loss before the update"])
    after = next(m for m in at.metric if m.label == "Loss after (same batch)")
    assert after.delta.startswith("-") and after.proto.color == MetricProto.MetricColor.GREEN
    layers = step_table(at)
    assert len(layers) == 3 and (layers["gradient (norm)"].map(float) > 0).all()
    at.button(key="lessons.step_reset").click().run()
    assert not at.metric
    at.session_state["config"] = PRESETS["cnn"]  # new settings: a fresh model for them
    at.button(key="lessons.step").click().run()
    assert {m.label: m.value for m in at.metric}["Step"] == "1"
    assert step_table(at)["shape"][0].startswith("1 → 32 channels")


def test_a_blown_up_loss_is_readable_and_never_good_news(app):
    """Issue: with learning rate 10 a loss showed as "306252160.0000" with a green down arrow
    (it had come down from 1.2 billion)."""
    at = app.run()
    at.selectbox(key="dataset").set_value("mnist-sample").run()
    at.session_state["config"] = PRESETS["seed"].replace(**{"train.lr": 10.0})
    at.switch_page("app_pages/lessons.py").run()
    assert any("Learning rate: 10" in c.value for c in at.caption)
    for step in (1, 2, 3):
        at.button(key="lessons.step").click().run()
        assert not at.exception
        shown = {m.label: m for m in at.metric}
        assert shown["Step"].value == str(step)
        for label in ("Loss before the update", "Loss after (same batch)"):
            assert not re.search(r"\d{5}", shown[label].value), shown[label].value
        assert shown["Loss after (same batch)"].proto.color != MetricProto.MetricColor.GREEN
        assert any("diverged" in e.value and "learning rate is too high" in e.value
                   for e in at.error)
    assert shown["Loss before the update"].value.endswith(("million", "billion"))
    for column in ("weights (norm)", "gradient (norm)", "moved by (norm)"):
        assert not step_table(at)[column].str.contains(r"\d{5}").any()


def test_an_exercise_lists_this_sessions_runs_and_opens_their_comparison(app, tmp_path):
    store = RunStore(tmp_path)
    ex1, seed = lesson_by_id("ex1").runs[0].config, PRESETS["seed"]
    ids = []
    for config, acc in ((seed, 0.97), (ex1, 0.91), (ex1, 0.92)):
        run_id = store.start_run(config.replace(**{"train.epochs": 2}), dataset="mnist-sample",
                                 device="cpu")
        store.finish_run(run_id, "finished", metrics={"test_acc": acc, "train_acc": acc})
        ids.append(run_id)
    at = app.run()
    at.session_state["session_runs"] = ids[:2]  # the third is someone else's
    at.switch_page("app_pages/lessons.py").run()
    assert not at.exception
    (table,) = [d.value for d in at.dataframe if "which" in d.value.columns
                and set(d.value["run"]) == set(ids[:2])]
    assert table["which"].tolist() == [lesson_by_id("ex1").runs[0].label,
                                       lesson_by_id("ex1").compared()[-1].label]
    assert table["test accuracy"].tolist() == ["91.00%", "97.00%"]
    seed_only = [d.value for d in at.dataframe if "which" in d.value.columns
                 and d.value["run"].tolist() == [ids[0]]]
    assert len(seed_only) == 5  # ex2, ex3 (against the seed), the seed and two "good" mistakes
    at.button(key="lessons.compare.ex1").click().run()
    assert sorted(at.session_state["experiments.compare"]) == ids[:2]


def test_an_exercise_beside_the_seed_at_other_epochs_is_flagged(app, tmp_path):
    store = RunStore(tmp_path)
    ex1, seed = lesson_by_id("ex1").runs[0].config, PRESETS["seed"]
    ids = []
    for config, epochs in ((seed, 3), (ex1, 10)):
        run_id = store.start_run(config.replace(**{"train.epochs": epochs}), dataset="mnist-sample",
                                 device="cpu")
        for epoch in range(1, epochs + 1):
            store.add_epoch(run_id, {"epoch": epoch, "test_acc": 0.9})
        store.finish_run(run_id, "finished", metrics={"test_acc": 0.9, "train_acc": 0.9})
        ids.append(run_id)
    at = app.run()
    at.session_state["session_runs"] = ids
    at.switch_page("app_pages/lessons.py").run()
    assert not at.exception
    warnings = [w.value for w in at.warning if "different numbers of epochs" in w.value]
    assert warnings and "(3 and 10)" in warnings[0]
