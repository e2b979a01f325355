"""AppTest: a class on one server. Two student sessions and a teacher on one store: a student cannot
rename, tag, delete or stop another's run and the teacher can; the teacher's rules show fixed on a
student's Train page and bind their runs; the class's data folder is the teacher's, and students
never see its path."""

from __future__ import annotations

import os
import time

import pytest
from apphelpers import APP, shown_literally, train_run, unescape
from streamlit.testing.v1 import AppTest

from app_pages import common
from dlcore.runs.policy import ClassPolicy
from dlcore.runs.store import RunStore

KEY = "correct horse battery staple"


@pytest.fixture
def school(tmp_path, monkeypatch):
    """A server started with a teacher key, and a way to open sessions on it."""
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    monkeypatch.setenv("DLLAB_TEACHER_KEY", KEY)

    def session(page: str | None = None) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=180)
        at.run()
        if page:
            at.switch_page(page).run()
        assert not at.exception, at.exception
        return at
    return session


def become_teacher(at: AppTest) -> None:
    at.switch_page("app_pages/classroom.py").run()
    at.text_input(key="class.key").input("a wrong guess")
    at.button(key="class.unlock").click().run()
    assert [e.value for e in at.error] == ["That is not the teacher key."]
    assert not any(b.proto.id.endswith("class.save") for b in at.button)
    at.text_input(key="class.key").input(KEY)
    at.button(key="class.unlock").click().run()
    assert [s.value for s in at.success] == ["You are the teacher now."]
    assert at.session_state["class.key"] == ""  # the key does not stay in the session
    assert all(KEY not in str(e.proto) for e in at.main)  # nor on the page


def pick_run(at: AppTest, run_id: int) -> None:
    at.switch_page("app_pages/experiments.py").run()
    at.multiselect(key="experiments.compare").set_value([run_id]).run()
    at.selectbox(key="experiments.target").set_value(run_id).run()


def test_a_student_cannot_change_anothers_run_and_the_teacher_can(school):
    ada = school()
    ada.switch_page("app_pages/classroom.py").run()
    ada.text_input(key="display_name").input("Ada").run()
    train_run(ada, epochs=1, subset=300)
    store = RunStore(os.environ["DLLAB_HOME"])
    (run_id,) = store.list_runs()["id"]
    run = store.get_run(run_id)
    assert run["owner_name"] == "Ada" and run["owner"] == ada.session_state["owner"]

    ben = school()
    assert ben.button(key="name_skip").help == "You stay Student 2."
    ben.text_input(key="name_prompt").input("Ben")
    ben.button(key="name_ok").click().run()
    assert not any(b.proto.id.endswith("name_ok") for b in ben.button)  # asked once
    assert "**You:** Ben (student)" in [c.value for c in ben.sidebar.caption][0]
    pick_run(ben, run_id)
    assert any("This is Ada's run: only its owner or the teacher" in c.value for c in ben.caption)
    for key in ("experiments.rename", "experiments.set_tags", "experiments.delete"):
        assert ben.button(key=key).disabled, key
    assert not any(b.proto.id.endswith("experiments.confirm_delete") for b in ben.button)

    pick_run(ada, run_id)  # the owner may
    assert not ada.button(key="experiments.rename").disabled
    ada.text_input(key="experiments.name").input("Ada's first")
    ada.button(key="experiments.rename").click().run()
    assert store.get_run(run_id)["name"] == "Ada's first"

    teacher = school()
    become_teacher(teacher)
    pick_run(teacher, run_id)
    teacher.text_input(key="experiments.tags").input("checked")
    teacher.button(key="experiments.set_tags").click().run()
    assert store.get_run(run_id)["tags"] == ["checked"]
    teacher.button(key="experiments.delete").click().run()
    teacher.button(key="experiments.confirm_delete").click().run()
    assert store.list_runs().empty


def test_the_teacher_stops_a_students_job_from_the_class_page(school):
    ada = school("app_pages/train.py")
    ada.slider(key="train.epochs").set_value(50)
    ada.button(key="train_button").click().run()
    job = ada.session_state["job"]
    assert job.snapshot().active

    ben = school("app_pages/classroom.py")
    assert not any("who" in d.value.columns for d in ben.dataframe)
    assert not any(b.proto.id.endswith("class.stop") for b in ben.button)

    teacher = school()
    become_teacher(teacher)
    jobs = next(d.value for d in teacher.dataframe if "who" in d.value.columns)
    row = jobs.set_index("job").loc[job.id]
    assert row["who"] == ada.session_state["student_name"] and row["model"] == "MLP 512-256"
    teacher.selectbox(key="class.stop_target").set_value(job.id)
    teacher.button(key="class.stop").click().run()
    assert any(f"Job {job.id} of {row['who']} is stopping" in s.value for s in teacher.success)
    assert job.wait(120) and job.snapshot().state == "stopped"


def test_markup_in_a_display_name_or_a_tag_shows_as_typed(school):
    name = "**Ada** [x](http://e.com) $$y$$ <b>"
    ada = school()
    ada.text_input(key="name_prompt").input(name)
    ada.button(key="name_ok").click().run()
    (me,) = [c.value for c in ada.sidebar.caption if c.value.startswith("**You:**")]
    assert shown_literally(me, name), me
    ada.slider(key="train.epochs").set_value(50)
    ada.button(key="train_button").click().run()
    job = ada.session_state["job"]
    deadline = time.monotonic() + 120
    while job.snapshot().progress is None and time.monotonic() < deadline:
        time.sleep(0.1)  # running, so its run is in the history

    teacher = school()
    become_teacher(teacher)
    teacher.selectbox(key="class.stop_target").set_value(job.id)
    teacher.button(key="class.stop").click().run()
    (said,) = [s.value for s in teacher.success if "is stopping" in s.value]
    assert shown_literally(said, name), said
    assert job.wait(120)
    (run_id,) = RunStore(os.environ["DLLAB_HOME"]).list_runs()["id"]

    ben = school()
    pick_run(ben, run_id)
    (whose,) = [c.value for c in ben.caption if c.value.startswith("This is")]
    assert shown_literally(whose, name), whose

    pick_run(teacher, run_id)
    teacher.text_input(key="experiments.tags").input("**b**, [l](http://e.com)")
    teacher.button(key="experiments.set_tags").click().run()
    (tagged,) = [s.value for s in teacher.success if "tagged" in s.value]
    assert shown_literally(tagged, "**b**, [l](http://e.com)"), tagged


def test_the_class_rules_show_fixed_on_a_students_page_and_bind_their_runs(school):
    teacher = school()
    become_teacher(teacher)
    teacher.switch_page("app_pages/train.py").run()
    teacher.select_slider(key="train.lr").set_value(0.01).run()
    teacher.switch_page("app_pages/classroom.py").run()
    teacher.multiselect(key="class.fixed").set_value(["train.lr"]).run()
    teacher.number_input(key="class.cap.train.epochs").set_value(5).run()
    teacher.button(key="class.save").click().run()
    assert any("rules are saved" in s.value for s in teacher.success), [e.value for e in teacher.error]

    student = school("app_pages/train.py")
    lr = student.select_slider(key="train.lr")
    assert lr.value == 0.01 and lr.disabled
    epochs = student.slider(key="train.epochs")
    assert epochs.max == 5 and epochs.value == 5  # 10 by default: capped
    rules = next(i.value for i in student.info if "Your teacher has set" in i.value)
    assert "Learning rate: 0.01" in rules and "Epochs at most 5" in rules

    # A link cannot undo them: its settings are applied, then the rules.
    linked = AppTest.from_file(APP, default_timeout=180)
    linked.query_params.update({"train.lr": "0.1", "train.epochs": "9"})
    linked.run()
    assert linked.select_slider(key="train.lr").value == 0.01
    assert linked.slider(key="train.epochs").value == 5

    student.select_slider(key="train.train_subset").set_value(300)
    student.slider(key="train.epochs").set_value(1)
    student.button(key="train_button").click().run()
    job = student.session_state["job"]
    assert (job.config.train.lr, job.config.train.epochs) == (0.01, 1)
    assert job.wait(120)


def test_the_data_folder_is_the_teachers_and_students_never_see_its_path(school, tmp_path):
    loop = tmp_path / "a"
    os.symlink(tmp_path / "b", loop)
    os.symlink(loop, tmp_path / "b")
    student = school("app_pages/classroom.py")
    assert not any(t.proto.id.endswith("class.data_dir") for t in student.text_input)

    teacher = school()
    become_teacher(teacher)
    teacher.text_input(key="class.data_dir").input(str(loop)).run()
    assert common.classroom().data_dir == str(loop)

    student = school()  # the sidebar of a session's first run
    notes = [w.value for w in student.sidebar.warning]
    assert len(notes) == 1 and "cannot be opened" in notes[0] and "bundled MNIST sample" in notes[0]
    assert str(tmp_path) not in notes[0] and "a folder on the server" in notes[0]
    assert all(str(tmp_path) not in c.value for c in student.sidebar.caption)
    for page in ("app_pages/experiments.py", "app_pages/draw.py", "app_pages/train.py"):
        student.switch_page(page).run()
        assert not student.exception, (page, student.exception)


def test_a_data_folder_with_a_space_or_typed_relative_is_hidden_whole(school, tmp_path,
                                                                      monkeypatch):
    folder = tmp_path / "period 3 data"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    teacher = school()
    become_teacher(teacher)
    teacher.text_input(key="class.data_dir").input("./period 3 data").run()
    assert common.classroom().data_dir == str(folder)

    student = school()
    notes = [w.value for w in student.sidebar.warning]
    assert len(notes) == 1 and "bundled MNIST sample" in notes[0]
    assert "period" not in notes[0] and "3 data" not in notes[0] and str(tmp_path) not in notes[0]
    assert "a folder on the server" in notes[0]


def test_a_student_sees_no_server_path_when_a_run_fails_and_the_teacher_does(school, tmp_path):
    weights = tmp_path / "weights"
    weights.write_text("a file where the weights folder goes")
    student = school()
    train_run(student, epochs=1, subset=300, state="failed")
    (failed,) = [e.value for e in student.error if e.value.startswith("Training failed")]
    assert str(tmp_path) not in unescape(failed) and "a folder on the server" in failed
    (run_id,) = RunStore(tmp_path).list_runs()["id"]
    pick_run(student, run_id)
    (status,) = [c.value for c in student.caption if c.value.startswith("Status **failed**")]
    assert str(tmp_path) not in unescape(status) and "a folder on the server" in status

    teacher = school()
    become_teacher(teacher)
    pick_run(teacher, run_id)
    (status,) = [c.value for c in teacher.caption if c.value.startswith("Status **failed**")]
    assert str(weights) in unescape(status)


def test_train_says_in_one_line_when_the_history_cannot_be_opened(school, tmp_path):
    (tmp_path / "runs.sqlite").mkdir()
    student = school("app_pages/train.py")
    student.button(key="train_button").click().run()
    assert not student.exception and "job" not in student.session_state
    (error,) = [e.value for e in student.error]
    assert error.startswith("Cannot start: ") and "run history cannot be kept" in error
    assert str(tmp_path) not in unescape(error) and "a folder on the server" in error


def test_a_time_cap_shows_the_estimate_and_refuses_a_run_too_long(school):
    teacher = school()
    become_teacher(teacher)
    teacher.number_input(key="class.max_seconds").set_value(2).run()
    teacher.button(key="class.save").click().run()
    assert "a run may take at most 2 s" in next(i.value for i in teacher.info if "rules" in i.value)

    student = school("app_pages/train.py")  # the seed MLP, 10 epochs of the 10,000-image sample
    estimate = next(m for m in student.metric if m.label == "Time (estimate)")
    assert estimate.value.endswith(("s", "min"))
    assert any(w.value.startswith("Too long for this class: This run would take")
               for w in student.warning)
    student.button(key="train_button").click().run()
    assert any(e.value.startswith("Cannot start: This run would take") and "at most 2 s" in e.value
               for e in student.error)
    assert "job" not in student.session_state


def test_clear_all_rules_clears_the_time_cap_too(school):
    teacher = school()
    become_teacher(teacher)
    teacher.number_input(key="class.cap.train.epochs").set_value(5)
    teacher.number_input(key="class.max_seconds").set_value(60).run()
    teacher.button(key="class.save").click().run()
    assert common.classroom().policy == ClassPolicy(caps={"train.epochs": 5}, max_job_seconds=60)
    teacher.button(key="class.clear").click().run()
    assert common.classroom().policy == ClassPolicy()
    assert any("No class rules" in c.value for c in teacher.caption)


def test_a_fractional_time_cap_from_the_environment_survives_saving_the_rules(school,
                                                                                monkeypatch):
    monkeypatch.setenv("DLLAB_MAX_JOB_SECONDS", "0.5")
    teacher = school()
    become_teacher(teacher)
    assert teacher.number_input(key="class.max_seconds").value == 0.5
    teacher.number_input(key="class.cap.train.epochs").set_value(5).run()
    teacher.button(key="class.save").click().run()
    assert common.classroom().policy == ClassPolicy(caps={"train.epochs": 5}, max_job_seconds=0.5)
    assert "a run may take at most 0.5 s" in next(i.value for i in teacher.info if "rules" in i.value)


def test_the_teacher_makes_a_class_link_that_opens_with_its_settings_fixed(school):
    teacher = school()
    teacher.sidebar.selectbox(key="dataset").set_value("digits").run()
    become_teacher(teacher)
    teacher.switch_page("app_pages/train.py").run()
    teacher.slider(key="train.epochs").set_value(4).run()
    teacher.switch_page("app_pages/classroom.py").run()
    teacher.multiselect(key="class.link_fixed").set_value(["model.kind", "train.epochs"]).run()
    link = next(c.value for c in teacher.code if "hide=" in c.value)
    query = link.split("?", 1)[1]
    assert dict(p.split("=") for p in query.split("&")) == {
        "train.epochs": "4", "train.dataset": "digits", "hide": "model.kind,train.epochs"}

    student = AppTest.from_file(APP, default_timeout=180)
    student.query_params.update(dict(p.split("=") for p in query.split("&")))
    student.run()
    assert not student.exception, student.exception
    assert student.sidebar.selectbox(key="dataset").value == "digits"
    assert student.radio(key="model.kind").disabled
    epochs = student.slider(key="train.epochs")
    assert epochs.disabled and epochs.value == 4
    assert not student.select_slider(key="train.lr").disabled
    student.switch_page("app_pages/classroom.py").run()
    assert not any(m.key == "class.link_fixed" for m in student.multiselect)  # the teacher's only
