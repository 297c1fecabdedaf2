"""Helpers shared by several test modules (pytest puts tests/ on sys.path: ``from helpers import ...``).

Fixtures live in conftest.py; these are plain functions: data files written for a test.
"""

from __future__ import annotations

import json
from pathlib import Path

# -- data files -------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON line per row (a str row is written as it is, e.g. a broken record)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def make_pararel(root: Path, patterns: dict[str, list[str]], facts: dict[str, list[tuple]]) -> Path:
    """A ParaRel folder: patterns/<rel>.jsonl (one template a line) and facts/<rel>.jsonl
    ((subject, object, uuid) each)."""
    (root / "patterns").mkdir(parents=True)
    (root / "facts").mkdir()
    for rel, pats in patterns.items():
        write_jsonl(root / "patterns" / f"{rel}.jsonl", [{"pattern": p} for p in pats])
    for rel, rows in facts.items():
        write_jsonl(root / "facts" / f"{rel}.jsonl", [{"sub_label": s, "obj_label": o, "uuid": u} for s, o, u in rows])
    return root
