"""A teacher's walk-through in a real browser: the teacher starts the server with a key, fixes the
learning rate and caps epochs at 5; a student's session shows them fixed and cannot exceed them;
the teacher stops the student's running job from the Class page.

Two browser contexts are two Streamlit sessions on one server. Session state survives the sidebar's
navigation links but not a new page load, so each session loads the app once and then moves by
the sidebar. Needs Debian's Chromium at /usr/bin/chromium and the playwright package; where they are
missing the test skips, except under CI (the CI variable set), where it fails, as
tests/test_browser.py.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser, streamlit_server

pytestmark = pytest.mark.browser

KEY = "correct horse battery staple"
VIEWPORT = {"width": 1400, "height": 1600}
WAIT_MS = 120_000  # two shared cores: generous waits, never a time asserted


def test_a_teacher_fixes_the_rules_and_stops_a_students_job(tmp_path):
    require_browser()
    from playwright.sync_api import sync_playwright

    server = streamlit_server(tmp_path, DLLAB_TEACHER_KEY=KEY, DLLAB_MAX_JOB_SECONDS=None)
    with server as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        teacher = browser.new_context(viewport=VIEWPORT).new_page()
        student = browser.new_context(viewport=VIEWPORT).new_page()
        teacher.set_default_timeout(WAIT_MS)
        student.set_default_timeout(WAIT_MS)
        try:
            _walk_through(teacher, student, url)
        finally:
            shots = Path(os.environ.get("DLLAB_SCREENSHOT_DIR", "/tmp"))
            for page, name in ((teacher, "dllab-teacher-class.png"),
                               (student, "dllab-student-train.png")):
                try:
                    page.screenshot(path=str(shots / name), full_page=True)
                except Exception as exc:  # a failed screenshot must not hide the test's failure
                    print(f"no screenshot {name}: {exc}")
            browser.close()


def _walk_through(teacher, student, url: str) -> None:

    # The teacher opens the Class page and unlocks the role with the key.
    teacher.goto(f"{url}/classroom")
    teacher.get_by_role("heading", name="Class").first.wait_for()
    key_box = teacher.get_by_label("Teacher key")
    key_box.fill(KEY)
    key_box.press("Enter")  # commit the text before the button's rerun
    _settle(teacher)
    teacher.get_by_role("button", name="Unlock", exact=True).click()
    teacher.get_by_text("You are the teacher now.").wait_for()
    teacher.get_by_role("button", name="Save the class's rules").wait_for()
    assert KEY not in teacher.content(), "the key stays on the page"

    # On their own Train page the teacher picks the learning rate to fix: 0.001 -> 0.01.
    _nav(teacher, "Train")
    teacher.get_by_text("Train a network").wait_for()
    lr = _slider(teacher, "Learning rate (log scale)")
    lr.wait_for()
    assert _thumb_text(teacher, "Learning rate (log scale)") == "0.001"
    lr.focus()
    teacher.keyboard.press("ArrowRight")
    teacher.keyboard.press("ArrowRight")
    _wait_for(lambda: _thumb_text(teacher, "Learning rate (log scale)") == "0.01",
              "the teacher's learning rate did not move to 0.01")
    _settle(teacher)

    # Back on Class: fix the learning rate, cap epochs at 5, save.
    _nav(teacher, "Class")
    fixed = teacher.locator('[data-testid="stMultiSelect"]').filter(
        has_text="Settings fixed for every student")
    fixed.wait_for()
    fixed.locator("input").click()
    teacher.keyboard.type("Learning rate")
    teacher.get_by_role("option", name="Learning rate", exact=True).click()
    teacher.keyboard.press("Escape")
    teacher.get_by_text("They will be fixed at your Train page's values: Learning rate 0.01").wait_for()
    most_epochs = teacher.get_by_label("Most epochs (0: no cap)")
    most_epochs.fill("5")
    most_epochs.press("Enter")
    _wait_for(lambda: most_epochs.input_value() == "5", "the epochs cap did not take 5")
    _settle(teacher)
    teacher.get_by_role("button", name="Save the class's rules").click()
    teacher.get_by_text("The class's rules are saved").wait_for()
    rules_box = teacher.locator('[data-testid="stAlert"]').filter(
        has_text="The class's rules (students' Train pages")
    rules_box.wait_for()
    assert "Learning rate: 0.01" in rules_box.inner_text()
    assert "Epochs at most 5" in rules_box.inner_text()

    # The student's Train page: the learning rate fixed and disabled, epochs capped at 5.
    student.goto(url)
    student.get_by_text("Train a network").wait_for()
    notes = student.locator('[data-testid="stAlert"]').filter(
        has_text="Your teacher has set these for the class:")
    notes.wait_for()
    assert "Learning rate: 0.01" in notes.inner_text()
    assert "Epochs at most 5" in notes.inner_text()
    student_lr = _slider(student, "Learning rate (log scale)")
    student_lr.wait_for()
    assert _thumb_text(student, "Learning rate (log scale)") == "0.01"
    assert _disabled(student_lr), "the fixed learning rate is not disabled"
    epochs = _slider(student, "Epochs")
    assert _maximum(epochs) == 5, "the Epochs slider is not capped at 5"
    assert int(epochs.input_value()) <= 5
    epochs.focus()
    for _ in range(8):
        student.keyboard.press("ArrowRight")
        assert int(epochs.input_value()) <= 5
    _wait_for(lambda: epochs.input_value() == "5", "epochs did not stay at 5")
    _settle(student)
    epochs.focus()
    for _ in range(3):  # after the reruns the keys asked for, still at most 5
        student.keyboard.press("ArrowRight")
    _settle(student)
    assert _maximum(epochs) == 5 and epochs.input_value() == "5"
    assert _thumb_text(student, "Epochs") == "5"
    student_lr.focus()  # a disabled slider does not move
    student.keyboard.press("ArrowRight")
    _settle(student)
    assert _thumb_text(student, "Learning rate (log scale)") == "0.01"

    # The student trains within the rules.
    student.get_by_role("button", name="Train", exact=True).click()
    student.get_by_text("samples/s").first.wait_for()
    assert student.get_by_text("Cannot start").count() == 0

    # The teacher sees the job (the fragment redraws every 2 s) and stops it.
    stop = teacher.get_by_role("button", name="Stop this job")
    stop.wait_for()
    # The Job box offers the student's job ("#1 · Student 2 · MLP 512-256").
    job_box = teacher.get_by_role("combobox", name="Job", exact=True)
    _wait_for(lambda: re.fullmatch(r"#\d+ · Student \d+ · MLP 512-256", job_box.input_value()),
              "the Job box does not offer the student's job")
    stop.click()
    teacher.get_by_text(re.compile(r"Job \d+ of Student \d+ is stopping")).wait_for(timeout=30_000)

    # The student's page reports the stopped run.
    student.get_by_text("Stopped after").wait_for()
    assert student.get_by_text("Finished.").count() == 0, "the run finished instead of stopping"


def _nav(page, title: str) -> None:
    """Follow the sidebar's link to a page: the session (and its state) stays."""
    page.locator('[data-testid="stSidebarNav"] a').filter(
        has=page.get_by_text(title, exact=True)).click()


def _slider(page, label: str):
    return page.locator('[data-testid="stSlider"]').filter(
        has=page.get_by_text(label, exact=True)).get_by_role("slider")


def _thumb_text(page, label: str) -> str:
    box = page.locator('[data-testid="stSlider"]').filter(has=page.get_by_text(label, exact=True))
    return box.locator('[data-testid="stSliderThumbValue"]').inner_text().strip()


def _maximum(slider) -> int:
    """A slider's largest value: the range input's max (or its aria-valuemax)."""
    return int(slider.get_attribute("max") or slider.get_attribute("aria-valuemax"))


def _disabled(slider) -> bool:
    return slider.evaluate(
        "el => el.getAttribute('aria-disabled') === 'true' || el.hasAttribute('disabled') ||"
        " !!el.closest('[aria-disabled=\"true\"], [disabled]')")


def _settle(page, quiet_s: float = 1.0, timeout_s: float = 60) -> None:
    """Wait until the page's script run has ended (no running-man status) for `quiet_s`."""
    running = page.locator('[data-testid="stStatusWidgetRunningIcon"]')
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        if running.count():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.2)


def _wait_for(check, message: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.2)
