"""The package's layers: every import inside ncfast (function-level ones included) points to
the same layer or a lower one, and no chain of imports comes back to where it started."""

from __future__ import annotations

import ast
import importlib.machinery
import pathlib
from typing import Dict, List, Set

import ncfast

PACKAGE = pathlib.Path(ncfast.__file__).parent

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS = [
    ("foundations", ["ncfast._C", "ncfast._version", "ncfast._format", "ncfast._memory", "ncfast._dtypes",
                     "ncfast._inputs", "ncfast._moments", "ncfast._state", "ncfast._statecheck", "ncfast._progress",
                     "ncfast.io"]),
    ("backend", ["ncfast.backend"]),
    ("statistics", ["ncfast._allreduce", "ncfast.stats", "ncfast.target_stats"]),
    ("pass", ["ncfast.pipeline"]),
    ("metrics", ["ncfast.metrics"]),
    ("plots", ["ncfast.plots"]),
    ("nn", ["ncfast.nn"]),
    ("workflows", ["ncfast.workflows"]),
    ("integrations", ["ncfast.integrations"]),
    ("cli", ["ncfast.cli"]),
    ("public", ["ncfast.ops", "ncfast.__main__", "ncfast"]),
]


def module_names() -> Dict[str, pathlib.Path]:
    """Every module of the package: Python sources and the compiled core (no imports of its own)."""
    out = {}
    for path in PACKAGE.rglob("*"):
        suffix = next((s for s in importlib.machinery.EXTENSION_SUFFIXES if path.name.endswith(s)), None)
        if path.suffix != ".py" and suffix is None:
            continue
        stem = path.name[: -len(suffix)] if suffix else path.stem
        parts = list(path.relative_to(PACKAGE.parent).parent.parts) + [stem]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_names()


def imports_of(name: str) -> Set[str]:
    """The ncfast modules `name` imports anywhere in its file. ``from P import x`` counts as
    an import of P.x when that is a module, else of P; a submodule's implicit import of its
    parent package is not counted (Python allows a partially initialised parent)."""
    path = MODULES[name]
    if path.suffix != ".py":
        return set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "ncfast")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ncfast":
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


def layer_of(name: str) -> int:
    best, where = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, where = len(prefix), index
    assert where is not None, f"{name} belongs to no layer: add it to LAYERS in {__file__}"
    return where


def test_every_module_belongs_to_a_layer():
    for name in MODULES:
        layer_of(name)


def test_imports_only_point_to_the_same_layer_or_below():
    upward = []
    for name in sorted(MODULES):
        for target in sorted(imports_of(name)):
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a list of modules (first == last), or [] when there is none."""
    state: Dict[str, int] = {}  # 1 on the current path, 2 finished
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycles():
    graph = {name: imports_of(name) for name in MODULES}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_relative_imports_resolve_to_modules():
    # `from ..io import statsfile` in ncfast.stats is an import of the module ncfast.io.statsfile.
    assert "ncfast.io.statsfile" in imports_of("ncfast.stats")
    assert "ncfast.backend.dispatch" in imports_of("ncfast.stats")
