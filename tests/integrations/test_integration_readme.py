"""README's "Frameworks" snippets run as written, each in a fresh interpreter (skipped, with the
reason, where the framework it imports is missing), and `import ncfast` loads no framework."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
FRAMEWORKS = ("torchmetrics", "lightning", "transformers", "timm", "dask", "distributed", "ray", "tensorboard")


def snippets():
    text = README.read_text()
    section = text[text.index("## Frameworks"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def needs(code: str):
    """Top-level modules the snippet imports."""
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return sorted(found)


def unimportable(code: str):
    """What the snippet imports that does not import here, as the snippet spells it (its full
    dotted path and names: `from torch.utils.tensorboard import ...` needs tensorboard, `from
    ncfast.integrations import ClassStatsMetric` needs torchmetrics), or None."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            wanted = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            wanted = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module, name in wanted:
            try:
                found = importlib.import_module(module)
                if name is not None:
                    getattr(found, name)
            except ImportError as err:
                return f"{module}{'.' + name if name else ''}, which does not import here: {err}"
    return None


SNIPPETS = snippets()


def test_the_section_has_a_snippet_per_integration():
    imported = {m for code in SNIPPETS for m in needs(code)}
    assert {"torch", "lightning", "transformers", "timm", "dask", "ray"} <= imported
    assert len(SNIPPETS) >= 7


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs_as_written(index, tmp_path):
    code = SNIPPETS[index]
    missing = unimportable(code)
    if missing:
        pytest.skip(f"snippet {index} needs {missing}")
    (tmp_path / "snippet.py").write_text(code)
    done = subprocess.run([sys.executable, "snippet.py"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip(), "the snippet prints its result"


def test_import_ncfast_loads_no_framework():
    code = ("import sys, ncfast, ncfast.integrations, ncfast.integrations.hf, ncfast.integrations.timm; "
            f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
