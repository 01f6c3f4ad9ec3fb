"""README's set-up and test commands are what CI runs, and the set-up installs every library
the tests import, so that the test command passes right after the set-up on a new machine."""

from __future__ import annotations

import ast
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMPORT_TO_DISTRIBUTION = {"sklearn": "scikit-learn", "pytest_benchmark": "pytest-benchmark"}


def fenced_commands(section: str) -> list:
    """The lines of the first ```bash block under the README heading `section`."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_readme_set_up_and_test_commands():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    set_up, tests = fenced_commands("Set up and run"), fenced_commands("Tests")
    assert set_up == ['pip install -e ".[test]" && ncfast score'] and tests == ["python -m pytest tests"]
    for command in set_up + tests:
        assert command in ci, command
    assert ci.index(set_up[0]) < ci.index(tests[0])


def _declared(extras=None) -> set:
    """Distributions named by pyproject.toml's dependencies and its optional extras (those in
    `extras`, or all)."""
    tomllib = pytest.importorskip("tomllib", reason="needs Python 3.11+ to read pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    chosen = [v for k, v in optional.items() if extras is None or k in extras]
    names = [re.match(r"[A-Za-z0-9_.-]+", req).group(0) for req in project["dependencies"] + sum(chosen, [])]
    return {n.lower() for n in names}


def _third_party_imports():
    """(every third-party module the tests import anywhere, those imported unconditionally at
    the top of a test module, conftest or reference: not inside a function, a try or an
    importorskip)."""
    stdlib = sys.stdlib_module_names
    local = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"ncfast"}
    anywhere, top = set(), set()
    for path in (ROOT / "tests").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                anywhere.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                anywhere.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                anywhere.add(node.args[0].value.split(".")[0])
        if not (path.name.startswith(("test_", "reference_")) or path.name == "conftest.py"):
            continue  # a helper script run by a test that skips without its libraries
        for node in tree.body:
            if isinstance(node, ast.Import):
                top.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top.add(node.module.split(".")[0])
    keep = lambda names: {m for m in names if m not in stdlib and m not in local}  # noqa: E731
    return keep(anywhere), keep(top)


def test_setup_installs_what_the_tests_need():
    if not hasattr(sys, "stdlib_module_names"):
        pytest.skip("needs Python 3.10+ to know the standard library's modules")
    anywhere, top = _third_party_imports()
    name = lambda m: IMPORT_TO_DISTRIBUTION.get(m, m).lower()  # noqa: E731
    # what every test module needs to load comes with README's set-up (dependencies + [test])
    missing = sorted(m for m in top if name(m) not in _declared(["test"]))
    assert not missing, f"imported by tests but not installed by README's set-up: {missing}"
    # the rest is either there too, or optional (an extra, or a line of .ci/run): its tests skip without it
    undeclared = sorted(m for m in anywhere if name(m) not in _declared() | _ci_installs())
    assert not undeclared, f"imported by tests but named by no extra of pyproject.toml nor by .ci/run: {undeclared}"


def _ci_installs() -> set:
    """Distributions that .ci/run installs by name (its optional extras' lines)."""
    names = set()
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        words = line.split()
        if words[:2] == ["pip", "install"]:
            names.update(re.match(r"[A-Za-z0-9_.-]*", w.strip("\"'")).group(0).lower() for w in words[2:]
                         if not w.startswith("-"))
    return names - {""}
