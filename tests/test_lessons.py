"""Unit tests: the lessons' presets, the settings as URL query parameters, and one training step."""

from __future__ import annotations

import math
import random
import re

import pandas as pd
import pytest
import torch

from dlcore.engine.config import PRESETS, ModelSpec, RunConfig, TrainConfig
from dlcore.engine.data import load_with_fallback
from dlcore.views.form import (
    BATCH_OPTIONS,
    CONTROL_KEYS,
    LR_OPTIONS,
    QUERY_KEYS,
    SUBSET_OPTIONS,
    WIDTH_OPTIONS,
    config_from_query,
    config_from_widgets,
    config_to_query,
    dataset_from_query,
    hidden_from_query,
    link_params,
    link_url,
    should_apply,
    train_page_url,
    widget_values,
)
from dlcore.views.lessons import LESSONS, Lesson, epochs_note, lesson_run_table
from dlcore.views.stepthrough import Stepper, settings_text, step_table

SEED = PRESETS["seed"]


def lesson_by_id(lesson_id: str) -> Lesson:
    (lesson,) = [lesson for lesson in LESSONS if lesson.id == lesson_id]
    return lesson


def load_buttons() -> list[tuple[str, RunConfig]]:
    """Each load button's key and the config it loads, in the Lessons page's order."""
    return [(lesson.button_key(run), run.config) for lesson in LESSONS for run in lesson.runs]


# ---- the lessons ----------------------------------------------------------------------------

def test_every_lesson_run_is_valid_and_has_a_unique_button():
    keys = [key for key, _ in load_buttons()]
    assert len(keys) == len(set(keys))
    for lesson in LESSONS:
        assert lesson.title and lesson.text and lesson.look_for
        for run in lesson.runs:
            run.config.validate()
            assert run.look_for
            assert config_from_widgets(widget_values(run.config)) == run.config  # the widgets hold it


def test_presets_set_exactly_their_settings():
    by_key = dict(load_buttons())
    assert by_key["lessons.load.seed"] == SEED
    assert SEED.model.hidden == (512, 256) and SEED.model.activation == "relu"
    assert SEED.model.dropout == 0.2 and SEED.train.optimizer == "adam" and SEED.train.lr == 1e-3
    assert SEED.train.batch_size == 64 and SEED.train.epochs == 10
    assert by_key["lessons.load.cnn"] == PRESETS["cnn"]
    assert by_key["lessons.load.ex1"] == SEED.replace(**{"model.hidden": ()})
    assert by_key["lessons.load.ex2"] == SEED.replace(**{"model.hidden": (512, 256, 128)})
    assert by_key["lessons.load.ex3.narrow"].model.hidden == (128, 64)
    assert by_key["lessons.load.ex3.wide"].model.hidden == (1024, 512)
    assert by_key["lessons.load.lr.bad"].train.lr == 10.0
    assert by_key["lessons.load.data.bad"].train.train_subset == 300
    assert by_key["lessons.load.data.good"].train.train_subset == 0


def differing(a: RunConfig, b: RunConfig) -> set[str]:
    fa, fb = a.flat(), b.flat()
    return {k for k in fa if fa[k] != fb[k]}


@pytest.mark.parametrize("lesson_id, fields", [
    ("normalize", {"train.normalize"}),
    ("lr", {"train.lr"}),
    ("data", {"train.train_subset"}),
    ("early", {"train.early_stopping"}),
])
def test_each_mistake_is_a_pair_that_differs_in_the_one_setting(lesson_id, fields):
    lesson = lesson_by_id(lesson_id)
    roles = {run.role: run.config for run in lesson.runs}
    assert set(roles) == {"bad", "good"}
    assert differing(roles["bad"], roles["good"]) == fields
    if lesson_id == "early":
        assert roles["good"].train.early_stopping and roles["good"].train.patience == 3
        assert roles["bad"].train.epochs == 30 and 0 < roles["bad"].train.train_subset <= 1000


def test_lesson_run_table_matches_configs_and_session_ids():
    def row(run_id, config, **extra):
        flat = config.replace(**{"train.dataset": "mnist-sample", "train.seed": 7}).flat()
        return {"id": run_id, "status": "finished", "dataset": "mnist-sample", "epochs": 1,
                "train_acc": 0.9, "test_acc": 0.88, "duration_s": 1.5, **flat, **extra}
    ex1 = lesson_by_id("ex1")
    runs = pd.DataFrame([row(4, SEED.replace(**{"train.lr": 0.1})),   # another run: not shown
                         row(3, SEED), row(2, ex1.runs[0].config), row(1, SEED)])
    table = lesson_run_table(runs, ex1)
    assert table["run"].tolist() == [3, 2, 1]
    assert table["which"].tolist()[1] == ex1.runs[0].label
    assert lesson_run_table(runs, ex1, run_ids={2})["run"].tolist() == [2]
    assert lesson_run_table(pd.DataFrame(), ex1).empty
    # Where it trained, its seed and its length aside, a run of other settings is not the lesson's.
    elsewhere = SEED.replace(**{"train.dataset": "digits", "train.seed": 3, "train.epochs": 1})
    runs = pd.DataFrame([{"id": 5, "status": "finished", "dataset": "digits", **elsewhere.flat()}])
    assert lesson_run_table(runs, ex1)["which"].tolist() == [ex1.compared()[-1].label]
    assert lesson_run_table(runs.assign(**{"train.lr": 0.1}), ex1).empty


def test_runs_of_different_settings_and_epochs_are_flagged():
    def table(*rows):
        return pd.DataFrame([{"which": w, "epochs": e} for w, e in rows])
    assert epochs_note(table(("narrower", 10), ("the lesson's network", 3))).startswith(
        "These runs trained different numbers of epochs (3 and 10)")
    assert epochs_note(table(("narrower", 3), ("the lesson's network", 3))) is None
    assert epochs_note(table(("narrower", 3), ("narrower", 10))) is None  # one setting, two lengths
    assert epochs_note(pd.DataFrame(columns=["which", "epochs"])) is None


# ---- the URL --------------------------------------------------------------------------------

def random_config(rng: random.Random) -> RunConfig:
    model = ModelSpec(
        kind=rng.choice(["mlp", "cnn"]),
        hidden=tuple(rng.choice(WIDTH_OPTIONS) for _ in range(rng.randint(0, 8))),
        activation=rng.choice(["relu", "gelu", "tanh", "sigmoid", "leaky_relu"]),
        dropout=rng.choice([0.0, 0.05, 0.25, 0.5, 0.9]), norm=rng.choice(["none", "batch", "layer"]),
        conv_channels=tuple(rng.choice([4, 8, 16, 64, 256]) for _ in range(rng.randint(1, 4))),
        kernel_size=rng.choice([3, 5]), pool=rng.random() < 0.5, dense=rng.choice(WIDTH_OPTIONS))
    train = TrainConfig(
        optimizer=rng.choice(["sgd", "adam", "adamw"]), lr=rng.choice(LR_OPTIONS),
        momentum=rng.choice([0.0, 0.5, 0.9, 0.99]), batch_size=rng.choice(BATCH_OPTIONS),
        epochs=rng.randint(1, 50), weight_decay=rng.choice([0.0, 1e-4, 0.1]),
        label_smoothing=rng.choice([0.0, 0.1, 0.3]), train_subset=rng.choice(SUBSET_OPTIONS),
        normalize=rng.random() < 0.5, augment=rng.random() < 0.5,
        early_stopping=rng.random() < 0.5, patience=rng.randint(1, 10),
        val_fraction=rng.choice([0.1, 0.2]), seed=rng.randint(0, 2**31 - 1))
    return RunConfig(model, train).validate()


def test_query_round_trips_every_setting():
    assert config_to_query(RunConfig()) == {}
    rng = random.Random(0)
    for config in [SEED, PRESETS["cnn"], *(c for _, c in load_buttons()),
                   *(random_config(rng) for _ in range(200))]:
        query = config_to_query(config)
        assert all(isinstance(v, str) for v in query.values())
        assert set(query) <= set(QUERY_KEYS)
        back, notes = config_from_query(query)
        assert notes == []
        assert back == config


def test_query_names_only_what_differs_and_keeps_dataset_and_device_from_base():
    config = SEED.replace(**{"model.hidden": (), "train.lr": 0.1, "train.normalize": False,
                             "train.dataset": "digits", "train.device": "cpu"})
    assert config_to_query(config) == {"model.n_hidden": "0", "train.lr": "0.1",
                                       "train.normalize": "false"}
    base = RunConfig().replace(**{"train.dataset": "digits", "train.device": "cpu"})
    assert config_from_query(config_to_query(config), base)[0] == config


def test_malformed_parameters_are_ignored_with_a_note_each():
    config, notes = config_from_query({"train.lr": "abc", "model.width_0": "99999", "bogus": "1",
                                       "train.epochs": "7", "train.normalize": "maybe",
                                       "model.kind": "rnn", "train.momentum": "nan",
                                       "train.patience": "99", "model.n_hidden": "9"})
    assert config == RunConfig().replace(**{"train.epochs": 7})
    text = " | ".join(notes)
    for name in ("train.lr=abc", "model.width_0=99999", "`bogus`", "train.normalize=maybe",
                 "model.kind=rnn", "train.momentum=nan", "train.patience=99", "model.n_hidden=9"):
        assert name in text
    assert len(notes) == 8
    assert "not a number" in text and "out of range" in text
    assert config_from_query({"train.device": "cuda"})[1] == [
        "`train.device`: chosen in the sidebar, not by a link"]


def test_a_link_names_the_dataset_for_the_sidebar():
    assert dataset_from_query({"train.dataset": "fashion-mnist"}) == ("fashion-mnist", [])
    assert dataset_from_query({}) == (None, [])
    name, notes = dataset_from_query({"train.dataset": "svhn"})
    assert name is None and notes[0].startswith("`train.dataset=svhn`: not a dataset")
    assert config_from_query({"train.dataset": "digits"}) == (RunConfig(), [])  # no note twice
    config = SEED.replace(**{"train.lr": 0.1})
    assert link_params(config, (), "digits") == {"train.lr": "0.1", "train.dataset": "digits"}
    assert link_params(config, (), "mnist") == {"train.lr": "0.1"}  # the default: left out
    assert train_page_url("http://host:8501/classroom") == "http://host:8501/"
    assert train_page_url("http://host/dl/classroom") == "http://host/dl/"
    assert train_page_url(None) is None


def test_repeated_and_odd_but_valid_values():
    config, notes = config_from_query({"train.lr": ["0.1", "0.03"], "model.dropout": "0",
                                       "train.augment": "ON", "model.n_hidden": "3",
                                       "model.width_2": "100"})
    assert notes == []
    assert config.train.lr == 0.03 and config.model.dropout == 0.0 and config.train.augment
    assert config.model.hidden == (512, 256, 100)


def test_hide_names_controls_and_groups():
    hidden, notes = hidden_from_query({"hide": "model.n_hidden, train.lr,nope,,model.hidden"})
    assert {"model.n_hidden", "train.lr", "model.width_0", "model.width_7"} <= hidden
    assert hidden <= set(CONTROL_KEYS)
    assert notes == ["`hide=nope`: not a control of the Train page"]
    assert hidden_from_query({}) == (frozenset(), [])
    params = link_params(SEED.replace(**{"train.lr": 0.1}), {"train.epochs", "train.lr"})
    assert params == {"train.lr": "0.1", "hide": "train.epochs,train.lr"}
    assert hidden_from_query(params)[0] == {"train.epochs", "train.lr"}
    assert link_params(SEED, hidden)["hide"] == "model.hidden,train.lr"  # the group by its name


def test_link_url_and_when_to_apply_a_link():
    assert link_url("http://localhost:8501/train", {"train.lr": "0.1", "hide": "a,b"}) == \
        "http://localhost:8501/train?train.lr=0.1&hide=a,b"
    assert link_url(None, {}) == ""
    assert not should_apply({}, True)  # no link: keep the settings
    assert should_apply({"train.lr": "0.1"}, True)
    assert not should_apply({"train.lr": "0.1"}, False)  # what the page wrote, maybe a rerun late


# ---- one training step ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample():
    dataset, _ = load_with_fallback("mnist-sample")
    return dataset


def sgd(lr: float, **changes) -> RunConfig:
    return SEED.replace(**{"train.optimizer": "sgd", "train.lr": lr, "train.momentum": 0.0,
                           "model.dropout": 0.0, **changes})


def test_one_step_lowers_the_loss_on_its_batch(sample):
    report = Stepper(sgd(0.05), sample, batch_size=32, seed=1).step()  # the first step
    assert report.step == 1 and report.batch_size == 32
    assert report.loss_after < report.loss_before
    assert [r.name for r in report.layers] == ["1: Linear", "3: Linear", "5: Linear"]  # no dropout
    assert report.layers[0].shape == "784 → 512"
    for layer in report.layers:
        assert layer.grad_norm > 0 and layer.update_norm > 0 and layer.weight_norm > 0
    adam = Stepper(SEED.replace(**{"train.lr": 1e-4}), sample, seed=1).step()  # with dropout: same mask
    assert adam.loss_after < adam.loss_before


def test_sgd_update_is_lr_times_gradient(sample):
    lr = 0.1
    stepper = Stepper(sgd(lr), sample, batch_size=16, seed=3)
    before = [p.detach().clone() for p in stepper.model.parameters()]
    report = stepper.step()
    grads = [p.grad.detach().clone() for p in stepper.model.parameters()]
    for b, a, g in zip(before, stepper.model.parameters(), grads, strict=True):
        torch.testing.assert_close(b - a.detach(), lr * g, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(torch.tensor([r.update_norm for r in report.layers]),
                               lr * torch.tensor([r.grad_norm for r in report.layers]),
                               rtol=1e-4, atol=1e-8)


def test_steps_continue_on_the_same_batch_and_match_dlcore_train_init(sample):
    config = sgd(0.05, **{"model.norm": "batch"})
    stepper = Stepper(config, sample, batch_size=32, seed=2)
    torch.manual_seed(config.train.seed)
    from dlcore.engine.models import build_model
    fresh = build_model(config.model, sample.shape, sample.num_classes)
    for a, b in zip(fresh.parameters(), stepper.model.parameters(), strict=True):
        assert torch.equal(a, b)  # the weights dlcore.engine.train starts from
    reports = [stepper.step() for _ in range(5)]
    assert [r.step for r in reports] == [1, 2, 3, 4, 5]
    assert reports[-1].loss_before < reports[0].loss_before
    assert reports[1].loss_before == pytest.approx(reports[0].loss_after, rel=1e-4)
    assert any(r.name.endswith("BatchNorm1d") for r in reports[0].layers)
    assert stepper.matches(config, sample.name) and not stepper.matches(SEED, sample.name)


def test_cnn_step_and_a_blow_up(sample):
    report = Stepper(PRESETS["cnn"], sample, batch_size=8).step()
    assert report.layers[0].shape.startswith("1 → 32 channels")
    assert all(r.grad_norm > 0 for r in report.layers)
    stepper = Stepper(SEED.replace(**{"train.lr": 10.0}), sample, seed=0)
    losses = [stepper.step().loss_after for _ in range(3)]
    assert max(losses) > 100 or not all(math.isfinite(v) for v in losses)


def test_a_blow_up_is_diverged_by_dlcore_trains_own_rule(sample):
    """Issue: the one-step view showed a loss of 306252160.0000 with a green (good) down arrow:
    it had come down from 1.2 billion. The report says such a step diverged."""
    from dlcore.engine.train import DIVERGE_FACTOR
    stepper = Stepper(SEED.replace(**{"train.lr": 10.0}), sample)
    reports = [stepper.step() for _ in range(3)]
    first = reports[0].loss_before
    assert reports[0].loss_limit == pytest.approx(DIVERGE_FACTOR * max(first, math.log(10)))
    assert all(r.loss_limit == reports[0].loss_limit for r in reports)
    assert all(r.diverged for r in reports)
    went_down = [r for r in reports if r.finite and r.loss_after < r.loss_before]
    assert went_down  # a lower loss that is still a blown-up one: diverged all the same
    calm = Stepper(sgd(0.05), sample, batch_size=32, seed=1)
    assert not any(calm.step().diverged for _ in range(3))


def test_a_loss_that_is_not_finite_is_diverged():
    from dlcore.views.stepthrough import StepReport
    report = StepReport(2, 32, "sgd", 10.0, 2.3, float("nan"), 0.1, 0.1, (), loss_limit=115.0)
    assert not report.finite and report.diverged


def test_step_table_is_readable_at_any_size(sample):
    stepper = Stepper(SEED.replace(**{"train.lr": 10.0}), sample)
    reports = [stepper.step() for _ in range(3)]
    table = step_table(reports[-1])
    assert list(table.columns) == ["layer", "shape", "weights (norm)", "gradient (norm)",
                                   "moved by (norm)", "moved / weights"]
    for column in table.columns[2:]:
        for text in table[column]:
            assert isinstance(text, str)
            assert not re.search(r"\d{5}", text), text  # 306252160.0000 was one
    calm = step_table(Stepper(sgd(0.05), sample, batch_size=32, seed=1).step())
    assert all(re.fullmatch(r"\d+\.\d{4}", v) for v in calm["gradient (norm)"])


def test_settings_text_names_settings_by_their_labels():
    text = settings_text(SEED.replace(**{"train.lr": 0.01, "train.normalize": False}))
    assert text == "Model kind: MLP, Optimiser: adam, Learning rate: 0.01, Normalise inputs: no (raw 0-255)"
    assert "train." not in text and "model." not in text
