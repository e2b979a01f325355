"""The project's shape: dlcore installs as a package (`pip install -e .`, in the README's commands),
so no file edits sys.path to find it, and the benchmarks run as modules from the project folder.
dlcore's modules live in four rooms (engine/, runs/, views/, cli/), each view module is its page's
alone, dlcore never imports streamlit, and the README's "What is where" says where things are."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_file_outside_the_tests_edits_sys_path() -> None:
    sources = [ROOT / "app.py", *[p for d in ("app_pages", "dlcore", "bench", "scripts")
                                  for p in (ROOT / d).rglob("*.py")]]
    editing = [str(p.relative_to(ROOT)) for p in sources
               if re.search(r"sys\.path\.(insert|append)", p.read_text())]
    assert editing == []


def test_dlcore_is_a_package_the_readme_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["dlcore*"]
    assert "samples/*.npz" in project["tool"]["setuptools"]["package-data"]["dlcore"]
    readme = (ROOT / "README.md").read_text()
    assert "pip install -r requirements.txt -e . && streamlit run app.py" in readme
    assert "pip install -r requirements-dev.txt -e . && python -m pytest" in readme
    assert "pip install -r requirements-dev.txt -e . && python -m pytest" in (ROOT / ".ci/run").read_text()


def test_dlcore_imports_from_any_folder(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-c",
                          "import dlcore.engine.data as d; print(d.SAMPLE_PATH.is_file())"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:] + "\n(install it: pip install -e .)"
    assert run.stdout.strip() == "True"


def test_every_benchmark_runs_as_a_module_from_the_project_folder() -> None:
    for bench in sorted((ROOT / "bench").glob("*.py")):
        if bench.stem == "browserclass":
            continue  # a library of the others
        run = subprocess.run([sys.executable, "-m", f"bench.{bench.stem}", "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and "usage:" in run.stdout, (bench.name, run.stderr[-2000:])


def test_the_readmes_what_is_where_names_every_folder() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    folders = set()
    for path in listed.stdout.split():
        parts = path.split("/")[:-1]
        if parts:
            folders.add(parts[0] + "/")
        if parts[:1] == ["dlcore"] and len(parts) > 1:
            folders.add(f"dlcore/{parts[1]}/")
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## What is where", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([^`]+/)` \|", table, flags=re.M))
    assert named == folders


def test_no_emoji_in_what_the_app_shows() -> None:
    """Emoji are empty boxes where the machine has no emoji font (seen on the Try it yourself
    page's input choices); Streamlit's :material/...: icons ship with it."""
    emoji = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]")
    sources = [ROOT / "app.py", *(ROOT / "app_pages").glob("*.py"), *(ROOT / "dlcore").rglob("*.py")]
    found = [f"{p.relative_to(ROOT)}:{n}" for p in sources
             for n, line in enumerate(p.read_text().splitlines(), 1) if emoji.search(line)]
    assert found == []


# ---------------------------------------------------------------- the rooms of dlcore (issue 12)

# dlcore's top holds only these; everything else lives in one of the four rooms.
DLCORE_TOP = {"__init__.py", "__main__.py", "figures.py", "numbers.py", "text.py"}
DLCORE_ROOMS = {"engine", "runs", "views", "cli"}
# View modules more than one page imports: the Train page's form (its widgets and links: also the
# Lessons and Class pages' and the sidebar's), and what the pages showing one trained run share.
SHARED_VIEWS = {"form", "shared"}
# A page's second view module, by the page it belongs to.
VIEW_PAGE = {"stepthrough": "lessons"}


def _imported(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function ("from dlcore.views import
    form" counts as dlcore.views.form too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _sources() -> list[Path]:
    """The project's code outside the tests."""
    return [ROOT / "app.py", *[p for d in ("app_pages", "dlcore", "bench", "scripts")
                               for p in sorted((ROOT / d).rglob("*.py"))]]


def test_dlcore_holds_no_module_outside_its_four_rooms() -> None:
    astray = []
    for path in sorted((ROOT / "dlcore").rglob("*.py")):
        parts = path.relative_to(ROOT / "dlcore").parts
        room = parts[0] if len(parts) > 1 else None
        if (room is None and parts[0] not in DLCORE_TOP) or (room is not None and room not in DLCORE_ROOMS):
            astray.append("/".join(parts))
    assert astray == []


def test_each_view_module_is_imported_by_its_page_alone() -> None:
    importers: dict[str, set[str]] = {}
    for path in _sources():
        for module in _imported(path):
            if module.startswith("dlcore.views."):
                importers.setdefault(module.split(".")[2], set()).add(str(path.relative_to(ROOT)))
    views = sorted(p.stem for p in (ROOT / "dlcore" / "views").glob("*.py") if p.stem != "__init__")
    assert SHARED_VIEWS <= set(views)
    for view in views:
        if view in SHARED_VIEWS:
            continue
        page = f"app_pages/{VIEW_PAGE.get(view, view)}.py"
        assert (ROOT / page).exists(), f"dlcore/views/{view}.py is no page's: name it after its page"
        assert importers.get(view, set()) == {page}, f"dlcore/views/{view}.py"


def test_no_dlcore_module_imports_streamlit() -> None:
    importing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "dlcore").rglob("*.py"))
                 if any(m == "streamlit" or m.startswith("streamlit.") for m in _imported(p))]
    assert importing == []


def test_the_readmes_what_is_where_names_dlcores_modules_where_they_are() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## What is where", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(dlcore/[^`]*)` \| (.*) \|$", table, flags=re.M))
    top = set(re.findall(r"`(\w+\.py)`", rows["dlcore/"]))
    assert top == DLCORE_TOP - {"__init__.py", "__main__.py"}
    for folder, text in rows.items():
        for name in re.findall(r"`(\w+\.py)`", text):
            assert (ROOT / folder / name).is_file(), f"README names {folder}{name}"
