"""Text is text: what a user typed (run names, tags, display names, a link's parameters, an
uploaded file's name) shown as the characters typed, never as markup, and names kept short.

Three places read markup, so there are three ways to write a user's string into them:

- `markdown_literal(s)`: for Streamlit's markdown (st.markdown, st.info/warning/error/success,
  st.caption, image captions, widget labels, radio options). Every ASCII punctuation mark that
  can begin or end markup is backslash-escaped (the backslash, the backtick,
  `* _ { } [ ] ( ) < > # + - ! | ~ $ & : = ^`, and `.` after a digit, as in "1." lists; CommonMark
  lets any punctuation be escaped), which stops emphasis, links, images, code, HTML,
  entities, tables, lists, headings, `$`/`$$` maths, `<...>` autolinks and `:name[...]`
  directives; the rest (`. , ; ? ' " / % @`) means nothing alone and is left as typed.
  Some rewrites run on the parsed text, where no escape reaches: GFM's bare links
  (`http://...`, `www.`, `a@b.c`), Streamlit's `:material_x:` icons, `:streamlit:`, emoji
  shortcodes and `->`-style arrows. An invisible WORD JOINER (U+2060) breaks each of them: after
  every `:` and `@`, between `www` and `.`, and inside the arrow pairs. Line breaks become
  spaces: the string stays on its line.
- `markdown_code(s)`: the same string as an inline code span (a fence longer than any run of
  backticks inside), for notes that quote what a link said.
- `plotly_literal(s)`: for plotly's text (trace names, legends, hover text, titles, tick labels),
  which reads a subset of HTML: `&`, `<` and `>` become entities, and `$` an entity so that a
  string is never taken for LaTeX.

Widgets whose options are plain text (st.selectbox, st.multiselect, st.select_slider), st.text,
st.code and st.dataframe cells need none of this. `check_name` is the one rule for how long a
name may be, for the app and the CLI alike.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Iterable

MAX_NAME_CHARS = 80

WORD_JOINER = "\u2060"
MARKUP = frozenset("\\`*_{}[]()<>#+-!|~$&:=^")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\u0085\u2028\u2029]+")
# Rewrites of the parsed text: bare links ("http://", "a@b.c"), ":name" (icons, emoji, the logo)
# and the arrows "<->", "->", "<-", "--", ">=", "<=", "~=". A word joiner goes between a character
# and the next one that matches.
_JOIN_AFTER = {":": re.compile(r".", re.S), "@": re.compile(r".", re.S), "<": re.compile(r"[\-=]"),
               "-": re.compile(r"[\->]"), ">": re.compile(r"="), "~": re.compile(r"=")}


def _one_line(text: object) -> str:
    return _LINE_BREAKS.sub(" ", "" if text is None else str(text))


def markdown_literal(text: object) -> str:
    """`text` as Streamlit markdown that shows exactly these characters (on one line)."""
    chars = _one_line(text)
    out: list[str] = []
    for i, ch in enumerate(chars):
        markup = ch in MARKUP or (ch == "." and i > 0 and chars[i - 1].isdigit())
        out.append("\\" + ch if markup else ch)
        after = _JOIN_AFTER.get(ch)
        if i + 1 < len(chars) and (
                (after is not None and after.match(chars[i + 1]))
                or (chars[i + 1] == "." and chars[max(0, i - 2):i + 1].lower() == "www")):
            out.append(WORD_JOINER)
    return "".join(out)


def markdown_code(text: object) -> str:
    """`text` as an inline code span: shown as typed, in the code font, on one line."""
    chars = _one_line(text)
    longest = max((len(run) for run in re.findall(r"`+", chars)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if chars.startswith("`") or chars.endswith("`") or not chars.strip() else ""
    return f"{fence}{pad}{chars}{pad}{fence}"


def plotly_literal(text: object) -> str:
    """`text` for plotly's labels: its HTML subset and LaTeX shown as typed."""
    return html.escape("" if text is None else str(text), quote=False).replace("$", "&#36;")


def check_name(name: object, what: str = "name") -> str:
    """A run's (or a person's) name as stored: stripped, at most MAX_NAME_CHARS characters and on
    one line. Raises ValueError saying why otherwise; an empty result means "no name"."""
    text = "" if name is None else str(name).strip()
    if len(text) > MAX_NAME_CHARS:
        raise ValueError(f"a {what} may have at most {MAX_NAME_CHARS} characters; this one has "
                         f"{len(text)}")
    if any(ch in text for ch in "\r\n\v\f\u0085\u2028\u2029") or any(
            ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError(f"a {what} must be one line of text, without control characters")
    return text


# A path at the start of a word: absolute ("/srv/data/x(.gz)"), from the home folder ("~/x") or
# relative to the working folder ("./x", "../shared/data").
_PATH = re.compile(r"(?<![\w/.~\-])(?:~(?=/)|\.{1,2}(?=/)|/(?=[^\s/]))[^\s'\"`,;]*")
# What may follow a known folder in a path: nothing that continues its last name, then "/..." .
_FOLDER_END = r"(?![\w\-]|\.\w)(?:/[^\s'\"`,;]*)?"
SERVER_FOLDER = "[a folder on the server]"


def _spellings(folders: Iterable[object]) -> set[str]:
    """Each folder as given, absolute, resolved and relative to the working folder; only what
    names a folder ("/x", "../x"), never "/" alone or a bare word that ordinary text could hold."""
    found: set[str] = set()
    for folder in folders:
        text = str(folder or "").strip()
        if not text:
            continue
        full = os.path.abspath(os.path.expanduser(text))
        for spelling in (text, full, os.path.realpath(full), _relative(full)):
            spelling = spelling.rstrip("/")
            if "/" in spelling and len(spelling) > 1:
                found.add(spelling)
    return found


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path


def _hidden(match: re.Match) -> str:
    path = match.group(0)
    return SERVER_FOLDER + path[len(path.rstrip(".:")):]  # a full stop after it stays


def hide_paths(text: object, folders: Iterable[object] = ()) -> str:
    """`text` with every path on the server replaced by SERVER_FOLDER: what a student sees of a
    message about the server's files (the teacher sees them whole). `folders` are the server's
    known folders (the class's data folder, DLLAB_HOME...): they are hidden whole first, with what
    follows them, so a space in one or a relative spelling of it hides as well."""
    text = str(text)
    for folder in sorted(_spellings(folders), key=len, reverse=True):
        text = re.sub(r"(?<![\w/.~\-])" + re.escape(folder) + _FOLDER_END, _hidden, text)
    return _PATH.sub(_hidden, text)
