"""AppTest: the Random Forest baseline page, with and without a network trained the way a user does."""

from __future__ import annotations

import pytest
from apphelpers import chart_keys, chart_spec, start_app, train_run, unescape
from streamlit.testing.v1 import AppTest

from app_pages import common
from dlcore import numbers
from dlcore.engine.baselines import ForestParams, fit_forest
from dlcore.runs.policy import ClassPolicy
from dlcore.runs.roles import Person


def table(at: AppTest):
    frames = [d.value for d in at.dataframe if "measure" in d.value.columns]
    assert len(frames) == 1
    return frames[0].set_index("measure")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        at = start_app(mp, tmp_path_factory.mktemp("dllab"))
        job = train_run(at, epochs=1, subset=3000)
        at.switch_page("app_pages/baseline.py").run()
        assert not at.exception
        at.slider(key="baseline.trees").set_value(20)
        at.button(key="baseline.fit").click().run()
        at.run()
        assert not at.exception
        yield at, job


def test_comparison_table_matches_dlcore(trained):
    at, job = trained
    result = job.snapshot().result
    cfg = result.config.train
    forest = fit_forest(job.dataset, ForestParams(n_estimators=20), train_subset=cfg.train_subset,
                        val_fraction=cfg.val_fraction if cfg.early_stopping else 0.0, seed=cfg.seed)
    assert forest.from_cache  # the page fitted exactly this forest on exactly this split
    t = table(at)
    assert t.loc["test accuracy", "random forest"] == f"{forest.accuracy * 100:.2f}%"
    assert t.loc["test accuracy", "network"] == f"{result.final.test_acc * 100:.2f}%"
    assert t.loc["training images", "network"] == t.loc["training images", "random forest"] == "3,000"
    assert t.loc["size: parameters / tree nodes", "network"] == f"{result.params:,}"
    assert t.loc["size: parameters / tree nodes", "random forest"] == f"{forest.tree_nodes:,}"
    assert t.loc["fit / training time", "network"] == numbers.seconds(
        sum(m.seconds for m in result.history))
    assert t.loc["prediction time, whole test set", "network"].endswith(" s")
    assert at.session_state["baseline.result"].accuracy == forest.accuracy


def test_comparison_table_writes_counts_and_percentages_as_every_page_does(trained):
    """Issue: sizes showed as 535800 (for 535,818), accuracy as 0.9575 where other pages say
    95.75%, 10000 without a separator. Every cell is text now, written by dlcore.numbers."""
    at, job = trained
    result = job.snapshot().result
    assert result.params == 535_818
    t = table(at)
    assert t.loc["size: parameters / tree nodes", "network"] == "535,818"
    for column in ("network", "random forest"):
        assert t.loc["test accuracy", column].endswith("%")
        assert t[column].map(type).eq(str).all()
    assert any(f"test accuracy **{numbers.percent(at.session_state['baseline.result'].accuracy)}**"
               in s.value for s in at.success)
    assert any("3,000 training images" in c.value for c in at.caption)


def test_charts_drawn(trained):
    at, _ = trained
    keys = chart_keys(at)
    for key in ("baseline.per_class", "baseline.confusion_diff", "baseline.importances",
                "baseline.weights"):
        assert key in keys
    diff = chart_spec(at, "baseline.confusion_diff")["data"][0]
    assert diff["zmid"] == 0 and diff["colorscale"][0][1] != diff["colorscale"][-1][1]
    bars = chart_spec(at, "baseline.per_class")["data"]
    assert [b["name"] for b in bars] == ["network", "random forest"]


def test_handmade_features_show_named_bars(trained):
    at, _ = trained
    at.radio(key="baseline.features").set_value("handmade")
    at.button(key="baseline.fit").click().run()
    assert not at.exception
    spec = chart_spec(at, "baseline.importances")
    assert spec["data"][0]["type"] == "bar" and spec["data"][0]["orientation"] == "h"
    assert len(spec["data"][0]["y"]) == 20
    at.radio(key="baseline.features").set_value("pixels")
    at.button(key="baseline.fit").click().run()  # from the cache
    assert at.session_state["baseline.result"].from_cache


def test_learning_curve_section(trained):
    at, _ = trained
    at.multiselect(key="baseline.sizes").set_value([100, 300])
    at.number_input(key="baseline.curve_epochs").set_value(1)
    at.button(key="baseline.curve").click().run()
    assert not at.exception
    curve = at.session_state["baseline.curve_result"].curve
    assert list(curve["size"]) == [100, 300]
    assert "baseline.curve_chart" in chart_keys(at)
    assert chart_spec(at, "baseline.curve_chart")["layout"]["xaxis"]["type"] == "log"
    assert any("overtake" in m.value or "ahead" in m.value for m in at.markdown)
    (shown,) = [d.value for d in at.dataframe if "training images" in d.value.columns]
    assert list(shown.columns) == ["training images", "network: test accuracy",
                                   "random forest: test accuracy", "network: training time",
                                   "random forest: fit time", "network: run"]
    assert shown["training images"].tolist() == ["100", "300"]
    assert shown["network: test accuracy"].tolist() == [f"{a * 100:.2f}%"
                                                        for a in curve["network_acc"]]
    assert shown["random forest: fit time"].str.endswith(" s").all()


def curve_notes(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "measured with a different network" in w.value]


def test_curve_says_when_the_train_page_has_another_network(tmp_path, monkeypatch):
    """Issue 11: after the Train page switched MLP -> CNN the old curve was still shown as the
    Train page's current network. It still shows, but says which network it measured."""
    at = start_app(monkeypatch, tmp_path)
    at.switch_page("app_pages/baseline.py").run()
    at.slider(key="baseline.trees").set_value(10)
    at.multiselect(key="baseline.sizes").set_value([100])
    at.number_input(key="baseline.curve_epochs").set_value(1)
    at.button(key="baseline.curve").click().run()
    assert not at.exception and not curve_notes(at)

    at.switch_page("app_pages/train.py").run()  # a visit that changes nothing
    at.switch_page("app_pages/baseline.py").run()
    assert not curve_notes(at) and "baseline.curve_chart" in chart_keys(at)

    at.switch_page("app_pages/train.py").run()
    at.radio(key="model.kind").set_value("cnn").run()
    at.switch_page("app_pages/baseline.py").run()
    assert not at.exception
    (note,) = curve_notes(at)
    assert "**MLP 512-256, " in note and "Model kind: mlp → cnn" in note
    assert "Run learning curve" in note and "CNN 32-64" in note
    assert "baseline.curve_chart" in chart_keys(at)  # the old curve is still there, named
    assert any("The network in this curve: MLP 512-256" in c.value for c in at.caption)
    assert at.session_state["baseline.curve_result"].config.model.kind == "mlp"

    at.button(key="baseline.curve").click().run()  # measure the current one
    assert not at.exception
    assert at.session_state["baseline.curve_result"].config.model.kind == "cnn"
    assert not curve_notes(at)


def test_no_run_still_fits_and_says_a_network_is_needed(tmp_path, monkeypatch):
    at = start_app(monkeypatch, tmp_path)
    at.switch_page("app_pages/baseline.py").run()
    assert not at.exception
    assert any("comparison needs a trained network" in i.value for i in at.info)
    assert at.multiselect(key="baseline.sizes").value == [100, 300, 1000, 3000, 0]  # MNIST sample
    # the sidebar's dataset is used (AppTest drops the sidebar after switch_page: set its state)
    at.session_state["dataset"] = "digits"
    at.run()
    assert at.multiselect(key="baseline.sizes").value == [100, 300, 1000, 0]
    at.slider(key="baseline.trees").set_value(10)
    at.button(key="baseline.fit").click().run()
    assert not at.exception
    forest = at.session_state["baseline.result"]
    assert forest.params.n_estimators == 10 and forest.train_size == 1437
    assert forest.dataset == "digits"
    assert any("test accuracy" in s.value for s in at.success)
    assert not [d for d in at.dataframe if "measure" in d.value.columns]
    assert "baseline.importances" in chart_keys(at) and "baseline.weights" not in chart_keys(at)


TEACHER = Person("the teacher", "Teacher", teacher=True)


def students_baseline_page(monkeypatch, tmp_path, rules: ClassPolicy) -> AppTest:
    """A student's session (the server has a teacher key) on the page, under the class's `rules`."""
    monkeypatch.setenv("DLLAB_TEACHER_KEY", "a key")
    at = start_app(monkeypatch, tmp_path)
    common.classroom().set_policy(rules, TEACHER)
    at.switch_page("app_pages/baseline.py").run()
    assert not at.exception
    at.slider(key="baseline.trees").set_value(10)
    at.multiselect(key="baseline.sizes").set_value([100])
    return at


def curve_refusal(at: AppTest) -> str:
    """Press Run learning curve, expecting a refusal: its text, unescaped. No curve is measured."""
    def measured():
        state = at.session_state
        return state["baseline.curve_result"] if "baseline.curve_result" in state else None
    before = measured()
    at.button(key="baseline.curve").click().run()
    assert not at.exception and measured() is before
    (refusal,) = [e.value for e in at.error if e.value.startswith("Cannot run the learning curve")]
    return unescape(refusal)


def test_a_students_learning_curve_follows_the_class_rules(tmp_path, monkeypatch):
    rules = ClassPolicy(fixed={"train.lr": 0.01}, caps={"train.epochs": 2})
    at = students_baseline_page(monkeypatch, tmp_path, rules)
    epochs = at.number_input(key="baseline.curve_epochs")
    assert epochs.max == 2 and epochs.value == 2  # 3 by default: capped
    assert "Learning rate is fixed at 0.01" in curve_refusal(at)  # the Train page's is 0.001

    at.switch_page("app_pages/train.py").run()  # the rules set its learning rate
    at.switch_page("app_pages/baseline.py").run()
    at.button(key="baseline.curve").click().run()
    assert not at.exception
    config = at.session_state["baseline.curve_result"].config
    assert (config.train.lr, config.train.epochs) == (0.01, 2)

    common.classroom().set_policy(ClassPolicy(max_job_seconds=0.01), TEACHER)
    at.run()
    refusal = curve_refusal(at)
    assert "This run would take" in refusal and "at most 0.01 s" in refusal


def test_a_learning_curve_too_big_for_the_memory_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_MAX_JOB_MEMORY", "300M")
    at = start_app(monkeypatch, tmp_path)  # no key, on the server's machine: the teacher
    at.switch_page("app_pages/baseline.py").run()
    at.multiselect(key="baseline.sizes").set_value([100])
    assert "more than the 300 MB one run may use" in curve_refusal(at)


def test_a_student_sees_no_server_path_when_the_forest_or_the_curve_fails(tmp_path, monkeypatch):
    from dlcore.engine import baselines
    from dlcore.views import baseline as comparison

    def fails(*args, **kwargs):
        raise OSError(13, "Permission denied", str(tmp_path / "baselines" / "forest.npz"))
    monkeypatch.setattr(baselines, "fit_forest", fails)
    monkeypatch.setattr(comparison, "learning_curve", fails)
    at = students_baseline_page(monkeypatch, tmp_path, ClassPolicy())
    for button, said in (("baseline.curve", "The learning curve failed"),
                         ("baseline.fit", "The forest could not be fitted")):
        at.button(key=button).click().run()
        assert not at.exception
        (error,) = [e.value for e in at.error]
        assert error.startswith(said) and "Permission denied" in error
        assert str(tmp_path) not in error and "a folder on the server" in error
