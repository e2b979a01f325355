"""Each setting is described once, beside its field (dlcore.engine.config, dlcore.engine.setting):
a field added with its description appears in the widgets, the URL, the CLI's flags and the validation with no
other file touched; a run recorded before a field existed still matches its lesson."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from dlcore.cli import main as cli
from dlcore.engine import config
from dlcore.engine.config import ConfigError, RunConfig, TrainConfig, setting, setting_label
from dlcore.engine.setting import describe, used_if
from dlcore.views import form
from dlcore.views.lessons import LESSONS, lesson_run_table

CLIP = "train.grad_clip"


@pytest.fixture
def clipping(monkeypatch: pytest.MonkeyPatch) -> type:
    """The config's TrainConfig with one more field, gradient clipping, and its description: the
    only change, as a new setting would be added to dlcore/engine/config.py."""
    extended = dataclasses.make_dataclass(
        "TrainConfig",
        [("grad_clip", float, dataclasses.field(default=0.0, metadata=describe(
            "Gradient clipping", help="largest gradient norm; 0 clips nothing",
            widget="slider", range=(0.0, 10.0), slider=(0.0, 5.0), step=0.5)))],
        bases=(TrainConfig,), frozen=True)
    monkeypatch.setitem(config.SECTIONS, "train", extended)
    return extended


def test_the_description_is_the_fields_metadata_and_names_the_setting() -> None:
    lr = setting("train.lr")
    assert (lr.key, lr.default, lr.label) == ("train.lr", 1e-3, setting_label("train.lr"))
    assert set(config.settings()) == set(RunConfig().flat())
    assert form.LR_OPTIONS == lr.stops and 1e-3 in lr.stops


def test_a_new_field_is_in_the_widgets(clipping: type) -> None:
    assert form.widget_values(RunConfig())[CLIP] == 0.0
    values = {**form.widget_values(RunConfig()), CLIP: 2.5}
    assert form.config_from_widgets(values).train.grad_clip == 2.5
    assert [s.key for s in form.page_settings("train")][-1] == CLIP  # drawn after the seed
    assert setting_label(CLIP) == "Gradient clipping"


def test_a_new_field_round_trips_through_a_link(clipping: type) -> None:
    config_ = RunConfig().replace(**{CLIP: 2.5, "train.lr": 0.01})
    query = form.config_to_query(config_)
    assert query == {CLIP: "2.5", "train.lr": "0.01"}
    assert form.config_from_query(query) == (config_, [])
    assert form.config_to_query(RunConfig()) == {}
    _, notes = form.config_from_query({CLIP: "7"})  # beyond its slider
    assert notes == [f"`{CLIP}=7`: out of range; allowed 0 to 5"]
    assert CLIP in form.control_keys() and CLIP in form.hide_choices()
    assert form.hidden_from_query({"hide": CLIP}) == (frozenset({CLIP}), [])


def test_a_new_field_has_a_cli_flag(clipping: type) -> None:
    args = cli.build_parser().parse_args(["train", "--grad-clip", "1.5", "--epochs", "2"])
    made = cli.config_from_args(args)
    assert (made.train.grad_clip, made.train.epochs) == (1.5, 2)
    assert cli.config_from_args(cli.build_parser().parse_args(["train"])).train.grad_clip == 0.0
    with pytest.raises(ConfigError, match=r"train\.grad_clip"):
        cli.config_from_args(cli.build_parser().parse_args(["train", "--grad-clip", "11"]))


def test_a_new_field_is_validated(clipping: type) -> None:
    RunConfig().replace(**{CLIP: 10.0}).validate()
    for bad in (-0.5, 10.5, "1", None, True):
        with pytest.raises(ConfigError) as caught:
            RunConfig().replace(**{CLIP: bad}).validate()
        assert str(caught.value).startswith(CLIP) and "allowed" in str(caught.value)
    data = RunConfig().to_dict()
    data["train"]["grad_clip"] = 11.0
    with pytest.raises(ConfigError, match=r"train\.grad_clip"):
        RunConfig.from_dict(data)
    assert RunConfig.from_dict({"train": {"grad_clip": 1.0}}).train.grad_clip == 1.0


def test_a_new_field_drawn_only_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    extended = dataclasses.make_dataclass(
        "TrainConfig",
        [("nesterov", bool, dataclasses.field(default=False, metadata=describe(
            "Nesterov momentum", widget="toggle", used=used_if("train.optimizer", "sgd"))))],
        bases=(TrainConfig,), frozen=True)
    monkeypatch.setitem(config.SECTIONS, "train", extended)
    nesterov = setting("train.nesterov")
    values = form.widget_values(RunConfig())
    assert not nesterov.is_used(form.flat_values(values))
    assert nesterov.is_used(form.flat_values({**values, "train.optimizer": "sgd"}))
    flags = cli.build_parser().parse_args(["train", "--nesterov"])
    assert cli.config_from_args(flags).train.nesterov is True


def _row(run_id: int, config_: RunConfig, drop: tuple[str, ...] = ()) -> dict:
    flat = {k: v for k, v in config_.flat().items() if k not in drop}
    return {"id": run_id, "status": "finished", "dataset": "mnist", "epochs": 10,
            "train_acc": 0.9, "test_acc": 0.88, "duration_s": 1.5, **flat}


def test_a_run_recorded_before_a_field_existed_still_matches_its_lesson() -> None:
    lesson = next(lesson for lesson in LESSONS if lesson.id == "lr")
    bad = lesson.runs[0].config
    # Run 2 was recorded before label smoothing and patience existed: its row has no such columns
    # (NaN once other runs have them); run 3 set label smoothing, so it is not this lesson's.
    runs = pd.DataFrame([_row(3, bad.replace(**{"train.label_smoothing": 0.1})),
                         _row(2, bad, drop=("train.label_smoothing", "train.patience"))])
    assert runs["train.label_smoothing"].isna().tolist() == [False, True]
    assert lesson_run_table(runs, lesson)["run"].tolist() == [2]


def test_an_old_run_matches_a_lesson_after_a_field_is_added(clipping: type) -> None:
    lesson = next(lesson for lesson in LESSONS if lesson.id == "ex1")
    recorded = _row(1, lesson.runs[0].config)  # recorded before gradient clipping existed
    assert CLIP not in recorded
    assert CLIP in lesson.runs[0].config.replace().flat()  # the lesson's config, upgraded
    now = dataclasses.replace(lesson, runs=tuple(
        dataclasses.replace(run, config=run.config.replace()) for run in lesson.runs))
    assert lesson_run_table(pd.DataFrame([recorded]), now)["run"].tolist() == [1]
    clipped = now.runs[0].config.replace(**{CLIP: 1.0})
    assert lesson_run_table(pd.DataFrame([_row(2, clipped)]), now).empty
