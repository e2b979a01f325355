"""AppTest: a link whose parameter names or values hold markdown cannot put markup on the Train
page: the "ignored settings" warning quotes them as typed."""

from __future__ import annotations

import re

import pytest
from apphelpers import APP
from streamlit.testing.v1 import AppTest

SPECIALS = set("[]()!*_$<>`~|#")


def outside_code_spans(markdown: str) -> str:
    """`markdown` without its code spans (CommonMark: a run of n backticks up to the next run of
    exactly n) and without backslash-escaped characters: the parts read as markup."""
    out, i = [], 0
    while i < len(markdown):
        if markdown[i] == "\\" and i + 1 < len(markdown):
            i += 2
            continue
        run = re.match(r"`+", markdown[i:])
        if run:
            fence = run.group()
            close = re.compile(r"(?<!`)" + fence + r"(?!`)")
            end = close.search(markdown, i + len(fence))
            if end:
                i = end.end()
                continue
        out.append(markdown[i])
        i += 1
    return "".join(out)


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    return AppTest.from_file(APP, default_timeout=180)


def test_markdown_in_a_links_parameters_is_shown_as_typed(app):
    name = "x` **Notice** [click](http://e.com) ![i](http://host/i.png) `y"
    app.query_params.update({"**Notice**": "[x](http://e.com)", name: "1",
                             "model.kind": "![x](http://host/x.png) $$x^2$$",
                             "train.epochs": "3"})
    at = app.run()
    assert not at.exception
    (warning,) = [w.value for w in at.warning if "link were ignored" in w.value]
    lines = [line.removeprefix("- ") for line in warning.splitlines()[2:]]
    assert len(lines) == 3, warning
    for line in lines:
        markup = outside_code_spans(line)
        assert not SPECIALS & set(markup), (line, markup)
    for typed in ("**Notice**", name.replace("`", ""), "model.kind"):
        assert any(typed in line.replace("`", "") for line in lines), typed
    assert at.session_state["config"].train.epochs == 3  # the good parameter still applies


def test_a_query_string_a_rerun_late_does_not_put_a_slider_back(app):
    """The browser sends its URL with every rerun; a slider moved while the page was rerunning
    brings back the query string of a write or two before. That is not a new link (seen in a
    real browser: Dropout moved to 0.3 during training read 0.25 after the run)."""
    at = app.run()
    at.slider(key="train.epochs").set_value(5).run()
    assert at.query_params["train.epochs"] == "5"
    at.query_params.clear()
    at.query_params["train.epochs"] = "7"  # an older write, as the browser may send it back
    at.slider(key="model.dropout").set_value(0.3).run()
    assert at.slider(key="train.epochs").value == 5
    assert at.session_state["config"].train.epochs == 5 and at.query_params["train.epochs"] == "5"
