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


def _declared() -> set:
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    test = re.search(r"^test = \[(.*?)\]", text, re.M).group(1)
    names = re.findall(r'"([A-Za-z0-9_.-]+)', deps + test)
    return {n.lower() for n in names}


def test_setup_installs_every_library_the_tests_import():
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:
        pytest.skip("needs Python 3.10+ to know the standard library's modules")
    local = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"ncfast"}
    imported = set()
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                imported.add(node.args[0].value.split(".")[0])
    third_party = {m for m in imported if m not in stdlib and m not in local}
    declared = _declared()
    missing = sorted(m for m in third_party if IMPORT_TO_DISTRIBUTION.get(m, m).lower() not in declared)
    assert not missing, f"imported by tests but not installed by README's set-up: {missing}"
