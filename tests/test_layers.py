"""The package's layers (docs/design.md): no import cycle among apts' modules, every apts
import at a module's top (none hidden in a function to dodge a cycle), and arrows that
point down only: cli -> config -> runtime -> training -> {data, models, optim, rundir};
report -> rundir; errors below everything."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "apts"

# package (first component below apts) -> the packages it may import
ALLOWED = {
    "errors": set(),
    "checks": {"errors"},
    "optim": set(),
    "models": {"errors"},
    "data": {"errors"},
    "rundir": {"errors"},
    "training": {"errors", "data", "models", "optim", "rundir"},
    "runtime": {"errors", "data", "models", "optim", "rundir", "training"},
    "config": {"errors", "data", "models", "optim", "rundir", "training", "runtime"},
    "cli": {"errors", "data", "models", "optim", "rundir", "training", "runtime", "config"},
    "experiments": {"errors", "data", "config", "runtime"},
    "report": {"errors", "rundir"},
}
# Leaves any layer may import besides errors: where the configs are, what they say
# (config/doc.py reads configs/ with the standard library only) and how a group's
# ``_target_`` becomes a factory (config/factory.py: Hydra's instantiate, no apts import).
LEAVES = {
    "apts.errors",
    "apts.checks",
    "apts.config.paths",
    "apts.config.doc",
    "apts.config.factory",
}
# Known upward arrows, each to be removed by the issue named beside it.
EXCEPTIONS: set[tuple[str, str]] = set()
# Imports inside a function on purpose, not to dodge a cycle: (module, imported) -> why.
DEFERRED = {
    ("apts.cli", "apts.runtime.job"): "torch loads after the rank server has started, "
    "so both import at once (apts.runtime.prestart; test_the_cli_starts_without_torch)",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The module ``name`` loads (a package's __init__ for a package)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported apts module, line, at the top level) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    top = set()  # nodes outside any function or class (an `if __name__` block counts)
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top.add(id(node))
            todo += [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from apts.data import registry` imports the submodule apts.data.registry
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if n in MODULES else node.module for n in names]
        else:
            continue
        for name in names:
            if name == "apts" or name.startswith("apts."):
                out.append((_resolve(name), node.lineno, id(node) in top))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, _ in _imports(m):
            graph[m].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "apts"


def test_the_graph_sees_the_packages():
    """The check reads real imports: the layers it names exist and import each other."""
    graph = _graph()
    assert {_layer(m) for m in MODULES} >= set(ALLOWED) - {"cli"} | {"cli"}
    assert "apts.training.loop" in graph["apts.runtime.rank"]
    assert "apts.errors" in graph["apts.config.validate"]


def test_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_apts_imports_are_at_the_top(module):
    hidden = [
        f"{target} (line {line})"
        for target, line, top in _imports(module)
        if not top and (module, target) not in DEFERRED
    ]
    assert not hidden, f"{module} imports inside a function: {', '.join(hidden)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_arrows_point_down(module):
    layer = _layer(module)
    if layer == "apts":
        return
    allowed = ALLOWED[layer] | {layer}
    up = [
        target
        for target, _, _ in _imports(module)
        if _layer(target) not in allowed
        and target not in LEAVES
        and (module, target) not in EXCEPTIONS
    ]
    assert not up, f"{module} ({layer}) imports {up}; {layer} may import {sorted(allowed)}"


def test_the_cli_starts_without_torch():
    """``import apts.cli`` and the config layer load no torch: the command line is composed
    and the rank server started (apts.runtime.prestart) before torch is imported."""
    code = (
        "import sys, apts.cli, apts.config.precheck, apts.runtime.prestart\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout


def test_deferred_imports_exist():
    """Each allowed deferred import is still there (else the allowance is stale)."""
    for module, target in DEFERRED:
        assert any(t == target and not top for t, _, top in _imports(module)), (module, target)
