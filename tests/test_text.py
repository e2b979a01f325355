"""dlcore.text: what users type is shown as typed in markdown, in code spans and in plotly."""

from __future__ import annotations

import os
import re

import pytest

from dlcore.text import (
    MARKUP,
    MAX_NAME_CHARS,
    WORD_JOINER,
    check_name,
    hide_paths,
    markdown_code,
    markdown_literal,
    plotly_literal,
)

HOSTILE = ["![x](http://host/x.png)", "[click](http://e.com)", "$$x^2$$", "$y$",
           '<a href="http://e.com">a</a>', "**bold** _it_ ~~s~~", ":material/home: :red[red] :smile:",
           ":material_home: :streamlit:", "a -> b <- c -- d >= e <= f ~= g <-> h",
           "http://e.com www.e.com WWW.E.COM a@b.com", "x `code` \\* &amp; &lt;", "# head",
           "1. list", "| a | b |", "[^1]", "<http://e.com>", "line\n\n**Notice**\r\n- item"]


def unescape(markdown: str) -> str:
    """What CommonMark makes of backslash escapes, with the word joiners (invisible) removed."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(WORD_JOINER, "")


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_literal_escapes_every_punctuation_mark(text):
    md = markdown_literal(text)
    assert unescape(md) == " ".join(re.split(r"[\r\n]+", text))  # the same text, on one line
    bare = re.sub(r"\\[!-/:-@\[-`{-~]", "", md)  # what is left once the escaped marks are gone
    assert not set(bare) & MARKUP and not re.search(r"\d\.", bare), bare
    assert "\n" not in md and "\r" not in md


def test_markdown_literal_breaks_what_streamlit_rewrites_after_parsing():
    # the parsed text (escapes resolved) must not hold a bare link, an icon, an emoji or an arrow
    for text in HOSTILE:
        shown = re.sub(r"\\(.)", r"\1", markdown_literal(text))
        assert not re.search(r"https?://|www\.|[\w.]@\w|:material_\w+:|:streamlit:|:\w+:", shown,
                             re.I), shown
        assert not re.search(r"(^|\s)(<->|->|<-|--|>=|<=|~=)(\s|$)", shown), shown
    assert markdown_literal("plain words 42") == "plain words 42"
    assert markdown_literal("huge.png, 4.2 MB; ok?") == "huge.png, 4\\.2 MB; ok?"
    assert markdown_literal("1. list") == "1\\. list"
    assert markdown_literal(None) == ""


@pytest.mark.parametrize("text", ["bogus", "a`b", "`x` **Notice** `y`", "``", "a\n\nb", "", " "])
def test_markdown_code_is_one_code_span(text):
    span = markdown_code(text)
    fence = re.match(r"`+", span).group()
    assert span.endswith(fence) and len(fence) > max((len(r) for r in re.findall("`+", text)),
                                                     default=0)
    inner = span[len(fence):-len(fence)]
    assert "\n" not in inner
    if inner.startswith(" ") and inner.endswith(" ") and inner.strip():
        inner = inner[1:-1]  # CommonMark strips one space each side
    assert inner == " ".join(re.split(r"\n+", text)) or (not text.strip() and not inner.strip())
    assert markdown_code("bogus") == "`bogus`"


def test_plotly_literal_escapes_its_html_and_latex():
    assert plotly_literal('<a href="http://e.com">a</a>') == '&lt;a href="http://e.com"&gt;a&lt;/a&gt;'
    assert plotly_literal("&lt;b&gt; & <br>") == "&amp;lt;b&amp;gt; &amp; &lt;br&gt;"
    assert plotly_literal("$x^2$") == "&#36;x^2&#36;"
    assert plotly_literal("#3 run") == "#3 run"


def test_check_name_refuses_long_or_multiline_names():
    assert check_name("  my run  ") == "my run"
    assert check_name(None) == "" and check_name("   ") == ""
    assert check_name("x" * MAX_NAME_CHARS) == "x" * MAX_NAME_CHARS
    with pytest.raises(ValueError, match=f"at most {MAX_NAME_CHARS} characters; this one has 81"):
        check_name("x" * 81)
    with pytest.raises(ValueError, match="tag may have at most"):
        check_name("t" * 100, "tag")
    for bad in ("a\nb", "a\rb", "a\x00b", "a\x1bb"):
        with pytest.raises(ValueError, match="one line"):
            check_name(bad)
    assert MAX_NAME_CHARS == 80


@pytest.mark.parametrize("text, shown", [
    ("The data folder /tmp/a cannot be opened: Too many levels of symbolic links.",
     "The data folder [a folder on the server] cannot be opened: Too many levels of symbolic links."),
    ("/x/train-images-idx3-ubyte(.gz) is missing; put them in /x.",
     "[a folder on the server] is missing; put them in [a folder on the server]."),
    ("cache ~/.cache/dllab", "cache [a folder on the server]"),
    ("78 samples/s · ETA 3 s, a 1/2 split, pass --data-dir FOLDER",
     "78 samples/s · ETA 3 s, a 1/2 split, pass --data-dir FOLDER"),
])
def test_hide_paths_leaves_no_server_path(text: str, shown: str) -> None:
    assert hide_paths(text) == shown


@pytest.mark.parametrize("text, shown", [
    ("The data folder ../shared/data/mnist cannot be opened.",
     "The data folder [a folder on the server] cannot be opened."),
    ("see ./data/x.gz, then", "see [a folder on the server], then"),
])
def test_hide_paths_hides_relative_paths(text: str, shown: str) -> None:
    assert hide_paths(text) == shown


def test_hide_paths_hides_known_folders_whole_with_spaces_and_relative_spellings(tmp_path) -> None:
    folder = tmp_path / "class data"
    text = f"cannot read {folder}/MNIST/x.gz. Is {folder} right? Not {folder}-old."
    shown = hide_paths(text, [str(folder)])
    assert "class data" not in shown and str(tmp_path) not in shown
    assert shown == ("cannot read [a folder on the server]. Is [a folder on the server] right? Not "
                     "[a folder on the server] data-old.")
    relative = os.path.relpath(folder)
    assert hide_paths(f"{relative} is missing", [folder]) == "[a folder on the server] is missing"
    assert hide_paths("a 1/2 split of the data", ["/", "", "data"]) == "a 1/2 split of the data"
