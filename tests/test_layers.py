"""The packages are the layers, and imports point one way.

Each layer package's ``__init__`` docstring says what it may import (a ``May import:`` line);
this test reads every ``import`` in the package's modules — lazy ones inside functions and
``TYPE_CHECKING`` ones included — and fails on any other selfensemble layer. Three rules hold
whatever the docstrings say: analysis never reaches the engine or the pipeline (it reads run
folders), the engine never reaches the pipeline, and no library module imports the CLI.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "selfensemble"
LIBRARY = ("config", "data", "methods", "store", "analysis", "engine", "pipeline")
TOP_MODULES = ("errors", "fileio", "scoring", "about")  # layers that are one module each
ENTRY_POINTS = ("cli", "serve", "integrations", "bench", "__main__")
NEVER = {"analysis": {"engine", "pipeline"}, "engine": {"pipeline"}, "config": {"engine", "pipeline"},
         "store": {"engine", "pipeline"}}


def imported_layers(path: Path, package: str | None = None) -> dict[str, int]:
    """{layer: first line importing it} for every selfensemble import in ``path``; relative ones are
    resolved against ``package`` (default: where ``path`` lies under src/)."""
    package = package or ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
            names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "selfensemble" and len(parts) > 1:
                found.setdefault(parts[1], node.lineno)
    return found


def allowed(layer: str) -> set[str]:
    """The layers ``layer``'s package docstring allows (its ``May import:`` line) and itself."""
    doc = ast.get_docstring(ast.parse((SRC / layer / "__init__.py").read_text(encoding="utf-8"))) or ""
    m = re.search(r"^May import: ([\w, ]+)", doc, re.M)
    assert m, f"src/selfensemble/{layer}/__init__.py: its docstring has no 'May import:' line"
    return {x.strip() for x in m.group(1).split(",")} | {layer}


@pytest.mark.parametrize("layer", LIBRARY)
def test_a_layer_imports_only_what_its_docstring_allows(layer: str) -> None:
    ok = allowed(layer)
    assert not ok & NEVER.get(layer, set()), f"{layer}'s docstring allows {ok & NEVER[layer]}"
    assert not ok & set(ENTRY_POINTS), f"{layer}'s docstring allows an entry point"
    bad = [f"{p.relative_to(SRC)}:{line} imports selfensemble.{target}"
           for p in sorted((SRC / layer).rglob("*.py"))
           for target, line in imported_layers(p).items() if target not in ok]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", TOP_MODULES)
def test_top_level_modules_import_no_entry_point(module: str) -> None:
    found = imported_layers(SRC / f"{module}.py")
    assert not set(found) & set(ENTRY_POINTS), found


def test_the_checker_sees_lazy_relative_and_type_only_imports(tmp_path: Path) -> None:
    """The parser must not miss the import forms the rule is most often broken with."""
    fake = tmp_path / "probe.py"
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..engine import models\n"
                    "def f():\n    import selfensemble.pipeline.experiment\n    from . import stats\n",
                    encoding="utf-8")
    assert set(imported_layers(fake, "selfensemble.analysis")) == {"engine", "pipeline", "analysis"}


def test_the_top_level_stays_small() -> None:
    """The façade, errors and little else: at most 8 modules beside the packages."""
    modules = sorted(p.name for p in SRC.glob("*.py"))
    assert len(modules) <= 8, modules
