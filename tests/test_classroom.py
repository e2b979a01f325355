"""Roles, the class's rules and the classroom holder: who may change what, and what binds whom."""

from __future__ import annotations

import pytest

from dlcore.engine.config import RunConfig
from dlcore.runs.classroom import Classroom
from dlcore.runs.policy import ClassPolicy, PolicyError, max_job_seconds_from_env
from dlcore.runs.roles import (
    NameBook,
    NotAllowed,
    Person,
    display_name,
    is_local,
    key_matches,
    teacher_by_default,
    teacher_key,
)

ADA, BEN, TEACHER = Person("a1", "Ada"), Person("b2", "Ben"), Person("t", "Teacher", teacher=True)


def test_only_the_owner_or_the_teacher_may_change_a_run() -> None:
    assert ADA.may_change("a1") and not BEN.may_change("a1")
    assert TEACHER.may_change("a1") and TEACHER.may_change(None)
    assert not ADA.may_change(None)  # an ownerless (older or CLI) run is the teacher's
    with pytest.raises(NotAllowed, match="Only its owner or the teacher may delete it: it is Ada's"):
        BEN.require("a1", "Ada", "delete")
    ADA.require("a1", "Ada", "delete")


def test_the_teacher_key_comes_from_the_environment_then_the_secrets(monkeypatch) -> None:
    monkeypatch.delenv("DLLAB_TEACHER_KEY", raising=False)
    assert teacher_key() is None and teacher_key({}) is None
    assert teacher_key({"teacher_key": "from-secrets"}) == "from-secrets"
    monkeypatch.setenv("DLLAB_TEACHER_KEY", "from-env")
    assert teacher_key({"teacher_key": "from-secrets"}) == "from-env"

    class Broken:
        def get(self, *_):
            raise FileNotFoundError("no secrets.toml")

    monkeypatch.delenv("DLLAB_TEACHER_KEY")
    assert teacher_key(Broken()) is None


def test_the_key_matches_only_itself() -> None:
    assert key_matches("s3cret", "s3cret")
    assert not key_matches("s3cre", "s3cret") and not key_matches("", "s3cret")
    assert not key_matches("anything", None) and not key_matches("", None)
    assert key_matches("clé ü", "clé ü")


def test_with_no_key_the_user_on_the_servers_machine_is_the_teacher() -> None:
    assert is_local(None) and is_local("127.0.0.1") and is_local("::1") and is_local("localhost")
    assert not is_local("192.168.1.20") and not is_local("10.0.0.7")
    assert teacher_by_default(None, None) and not teacher_by_default(None, "192.168.1.20")
    assert not teacher_by_default("key", None)  # with a key, the key is needed even locally


def test_display_names() -> None:
    book = NameBook()
    assert [book.next_name(), book.next_name()] == ["Student 1", "Student 2"]
    assert display_name("  Ada  ", "Student 3") == "Ada"
    assert display_name("   ", "Student 3") == "Student 3"
    with pytest.raises(ValueError, match="80"):
        display_name("x" * 81, "Student 3")


def test_a_policy_fixes_and_caps_students_settings() -> None:
    rules = ClassPolicy(fixed={"train.lr": 0.01}, caps={"train.epochs": 5, "model.hidden": 256})
    assert rules.validate() is rules
    config = RunConfig().replace(**{"train.lr": 0.1, "train.epochs": 9, "model.hidden": (512, 128)})
    broken = rules.broken_rules(config)
    assert broken == ["Learning rate is fixed at 0.01 by your teacher (this run has 0.1)",
                      "epochs may be at most 5 (this run has 9)",
                      "width of a hidden layer may be at most 256 (this run has 512)"]
    with pytest.raises(PolicyError, match="breaks the class's rules"):
        rules.check(config)
    applied = rules.apply(config)
    assert (applied.train.lr, applied.train.epochs, applied.model.hidden) == (0.01, 5, (256, 128))
    rules.check(applied)
    assert rules.apply(applied) == applied
    assert rules.describe() == ["Learning rate: 0.01", "Epochs at most 5",
                                "Width of a hidden layer at most 256"]
    assert rules.fixed_widgets() == {"train.lr"} and rules.widget_cap("train.epochs") == 5
    assert rules.widget_cap("model.width_3") == 256 and rules.widget_cap("train.lr") is None
    assert rules.slider_range("train.epochs", 1, 50) == (1, 5)
    assert rules.slider_range("model.width_3", 16, 1024) == (16, 256)
    assert rules.slider_range("train.lr", 1e-5, 10.0) == (1e-5, 10.0)
    hidden = ClassPolicy(fixed={"model.hidden": (64,)}).fixed_widgets()
    assert {"model.n_hidden", "model.width_0", "model.width_7"} <= hidden


@pytest.mark.parametrize("bad", [
    ClassPolicy(fixed={"train.device": "cuda"}),
    ClassPolicy(fixed={"no.such": 1}),
    ClassPolicy(fixed={"train.lr": -1.0}),
    ClassPolicy(caps={"train.epochs": 0}),
    ClassPolicy(caps={"train.lr": 1.0}),
    ClassPolicy(max_job_seconds=-5.0),
])
def test_a_policy_that_cannot_hold_is_refused(bad: ClassPolicy) -> None:
    with pytest.raises(PolicyError):
        bad.validate()


@pytest.mark.parametrize("raw, expected", [("", None), ("  ", None), ("90", 90.0), ("2.5", 2.5)])
def test_max_job_seconds_from_env(monkeypatch, raw: str, expected) -> None:
    monkeypatch.setenv("DLLAB_MAX_JOB_SECONDS", raw)
    assert max_job_seconds_from_env() == expected


@pytest.mark.parametrize("raw", ["abc", "-5", "0", "inf", "nan"])
def test_a_bad_max_job_seconds_is_one_line_naming_the_variable(monkeypatch, raw: str) -> None:
    monkeypatch.setenv("DLLAB_MAX_JOB_SECONDS", raw)
    with pytest.raises(ValueError, match="^DLLAB_MAX_JOB_SECONDS=.* is not a positive number"):
        max_job_seconds_from_env()


def test_only_the_teacher_changes_the_classroom(monkeypatch) -> None:
    monkeypatch.setenv("DLLAB_MAX_JOB_SECONDS", "120")
    room = Classroom(key="s3cret")
    assert room.policy.max_job_seconds == 120 and room.has_key
    assert "s3cret" not in repr(room)
    assert room.unlock("s3cret") and not room.unlock("guess")
    assert not room.teacher_by_default(None)
    with pytest.raises(NotAllowed, match="Only the teacher may set the class's rules"):
        room.set_policy(ClassPolicy(caps={"train.epochs": 5}), ADA)
    with pytest.raises(NotAllowed, match="data folder"):
        room.set_data_dir("/data", ADA)
    room.set_policy(ClassPolicy(caps={"train.epochs": 5}), TEACHER)
    room.set_max_job_seconds(60, TEACHER)
    assert room.policy == ClassPolicy(caps={"train.epochs": 5}, max_job_seconds=60)
    room.set_data_dir("  /data/mnist ", TEACHER)
    assert room.data_dir == "/data/mnist"
    with pytest.raises(PolicyError):
        room.set_policy(ClassPolicy(caps={"train.epochs": 0}), TEACHER)
    assert room.policy.caps == {"train.epochs": 5}
    assert Classroom().teacher_by_default(None) and not Classroom().has_key


def test_the_data_folder_is_kept_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    room = Classroom()
    room.set_data_dir(" ../shared/data/mnist ", TEACHER)
    assert room.data_dir == str(tmp_path.parent / "shared" / "data" / "mnist")
    room.set_data_dir("  ", TEACHER)
    assert room.data_dir == ""


def test_a_learning_curve_is_held_to_the_rules_of_a_run() -> None:
    from dlcore.engine.data import load_dataset
    from dlcore.engine.duration import DurationLimitError
    from dlcore.engine.memory import MemoryLimitError
    from dlcore.views.baseline import check_curve, curve_epochs_limit

    digits = load_dataset("digits", "")
    rules = ClassPolicy(caps={"train.epochs": 2})
    assert curve_epochs_limit(rules, teacher=False) == 2
    assert curve_epochs_limit(rules, teacher=True) == curve_epochs_limit(ClassPolicy(), False) == 20
    config = RunConfig().replace(**{"train.epochs": 3, "model.hidden": (16,)})
    with pytest.raises(PolicyError, match="epochs may be at most 2"):
        check_curve(config, digits, [100, 0], policy=rules, teacher=False, memory_limit=10**12)
    check_curve(config, digits, [100, 0], policy=rules, teacher=True, memory_limit=10**12)
    with pytest.raises(MemoryLimitError):
        check_curve(config, digits, [100], policy=rules, teacher=True, memory_limit=10**6)
    with pytest.raises(DurationLimitError):
        check_curve(config, digits, [100], policy=ClassPolicy(max_job_seconds=0.001), teacher=True,
                    memory_limit=10**12)
