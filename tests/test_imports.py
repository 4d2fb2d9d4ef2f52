"""No import cycles in the project, counting imports inside functions (which hide a cycle, not fix it)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from workers.delivery.envelope import DEFAULT_HANDLERS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("workers", "shared", "services", "mindsight")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports anywhere in its body (functions included)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                # `from workers import runtime` names a module; `from x import Class` names the module x.
                targets.update(submodules or {node.module})
        # A module's own ancestor packages are imported before it anyway: not an edge of a cycle.
        ancestors = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        graph[name] = {t for t in targets if t in files and t != name and t not in ancestors}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once, from its first module)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_project_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "workers.dispatch" in graph and graph["workers.jobs"]  # the walk sees the modules
    assert cycles(graph) == []


def test_the_cycle_check_sees_imports_inside_functions() -> None:
    graph = {"a": {"b"}, "b": {"a"}}
    assert cycles(graph) == [["a", "b", "a"]]


def test_the_dispatcher_handlers_name_the_real_entry_points() -> None:
    for dotted in (DEFAULT_HANDLERS.run, DEFAULT_HANDLERS.on_failure):
        module, _, attr = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), dotted
