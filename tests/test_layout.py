"""The project's shape: dlcore installs as a package (`pip install -e .`, in the README's commands),
so no file edits sys.path to find it, and the benchmarks run as modules from the project folder."""

from __future__ import annotations

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
