"""The package's import graph has no cycles, its layers import one way, and the library never
imports the CLI.

The packages are the layers: each layer package's ``__init__`` docstring says what it may import
(a ``May import:`` line), and every import of its modules must stay within that. Three rules hold
whatever the docstrings say: analysis never reaches the engine or the pipeline (it reads run
folders), the engine never reaches the pipeline, config and store reach neither.

The graph is read from the source with ``ast``: every ``import`` / ``from … import`` counts, at
module level or inside a function (a lazy import only postpones a cycle, it does not remove it).
Importing ``a.b.c`` also runs the packages ``a.b`` and ``a`` (their ``__init__``), so those count
as edges too. A cycle is printed module by module, so the failure says what to untangle.
"""

from __future__ import annotations

import ast
import re
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


LAYERS = ("config", "data", "methods", "store", "analysis", "engine", "pipeline")
NEVER = {"analysis": {"engine", "pipeline"}, "engine": {"pipeline"}, "config": {"engine", "pipeline"},
         "store": {"engine", "pipeline"}}
ENTRY_POINTS = {"cli", "serve", "integrations", "bench", "__main__"}


def layer_of(module: str) -> str | None:
    """selfensemble.engine.attention.masks → "engine"; the package itself → None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == ROOT else None


def allowed_layers(layer: str) -> set[str]:
    """What ``layer``'s package docstring allows (its ``May import:`` line), itself included."""
    doc = ast.get_docstring(ast.parse((SRC / ROOT / layer / "__init__.py").read_text())) or ""
    m = re.search(r"^May import: ([\w, ]+)", doc, re.M)
    assert m, f"src/{ROOT}/{layer}/__init__.py: its docstring has no 'May import:' line"
    return {x.strip() for x in m.group(1).split(",")} | {layer}


def layer_violations(graph: dict[str, set[str]], layer: str, ok: set[str]) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in graph.items() if layer_of(m) == layer
                  for d in deps if layer_of(d) is not None and layer_of(d) not in ok)


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_what_its_docstring_allows(layer):
    ok = allowed_layers(layer)
    assert not ok & (NEVER.get(layer, set()) | ENTRY_POINTS), f"{layer}'s docstring allows {ok}"
    bad = layer_violations(import_graph(_modules()), layer, ok)
    assert not bad, "\n".join(bad)


def test_the_layer_check_sees_a_lazy_import_across_layers(tmp_path):
    """The control: a function-level import from analysis into the engine is a violation."""
    pkg = tmp_path / ROOT
    for sub in ("analysis", "engine"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "models.py").write_text("")
    (pkg / "analysis" / "report.py").write_text("def f():\n    from ..engine import models\n")
    mods = {_name(p, tmp_path): p for p in sorted(pkg.rglob("*.py"))}
    assert layer_violations(import_graph(mods), "analysis", {"analysis"}) == [
        f"{ROOT}.analysis.report imports {ROOT}.engine", f"{ROOT}.analysis.report imports {ROOT}.engine.models"]


def _name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_top_level_stays_small():
    """The façade, errors and little else: at most 8 modules beside the layer packages."""
    modules = sorted(p.name for p in (SRC / ROOT).glob("*.py"))
    assert len(modules) <= 8, modules
