"""The package's import graph has no cycles, and the library never imports the CLI.

The graph is read from the source with ``ast``: every ``import`` / ``from … import`` counts, at
module level or inside a function (a lazy import only postpones a cycle, it does not remove it).
Importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` (their ``__init__``), so those count
as edges too. A cycle is printed module by module, so the failure says what to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "selfensemble"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _targets(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[str]:
    """The package modules one import statement loads (a name imported from a package that is
    itself a module counts as that module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = here.split(".") if is_package else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    return [origin] + [f"{origin}.{a.name}" for a in node.names if f"{origin}.{a.name}" in known]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module → the package modules it imports (anywhere in its body), parents packages included."""
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for target in _targets(node, name, path.name == "__init__.py", known):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # a.b.c runs a, a.b, then a.b.c
                    dep = ".".join(parts[:i])
                    if dep in known and dep != name and not name.startswith(dep + "."):
                        graph[name].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, …, a], or None (iterative DFS with colours)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_library_never_imports_the_cli():
    graph = import_graph(_modules())
    cli = f"{ROOT}.cli"
    # the __main__ modules are program entry points (python -m …): they sit on top of the CLI
    library = [m for m in graph if m != cli and not m.startswith(cli + ".") and not m.endswith(".__main__")
               and m != f"{ROOT}.__main__"]
    bad = {m: sorted(d for d in graph[m] if d == cli or d.startswith(cli + ".")) for m in library}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"library modules importing the CLI: {bad}"


@pytest.mark.parametrize("source, expected", [
    ({"a": "import b", "b": "def f():\n    from a import x"}, ["a", "b", "a"]),  # a lazy import counts
    ({"a": "import b", "b": "import c", "c": ""}, None),
])
def test_the_cycle_finder_sees_cycles(tmp_path, source, expected):
    """The control: a cycle through a function-level import is found; a chain is not a cycle."""
    mods = {}
    for name, text in source.items():
        (tmp_path / f"{name}.py").write_text(text)
        mods[name] = tmp_path / f"{name}.py"
    assert find_cycle(import_graph(mods)) == expected
