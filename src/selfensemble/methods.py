"""The public face of the answering methods: the registry, the engine and its types in one place.

  origin        the original question alone                         1 row,  identity
  per_prompt    every prompt alone → N answers                      N rows, N groups
  vote          per_prompt, then a majority over normalised answers
  avg, max,     one answer; each step fuses the N prompts'           N rows, 1 group
  weighted_*    next-token distributions (fusion.py)
  flex          the N prompts packed in one row under a block mask,  1 row,  identity
                a shared answer cue after all of them

Each method is a ``method_registry.Method`` (its row plan, fusion rule and what it returns);
``register_method`` adds one. The pieces live in modules named for what they hold — the
registry (method_registry), row plans (rows), the engine's configuration (engine_config), queries
and answers (queries) and the Engine (engine) — and are re-exported here, the import path callers use.
"""

from __future__ import annotations

from selfensemble.engine import Engine
from selfensemble.engine_config import ATTENTION, LAYOUTS, EngineConfig
from selfensemble.method_registry import (
    METHODS,
    ROW_PLANS,
    Method,
    check_method,
    get_method,
    methods_where,
    register_method,
    unregister_method,
)
from selfensemble.queries import Answer, Query, query_weights
from selfensemble.rows import RowPlan, plan_rows

__all__ = ["ATTENTION", "LAYOUTS", "METHODS", "ROW_PLANS", "Answer", "Engine", "EngineConfig",
           "Method", "Query", "RowPlan", "check_method", "get_method", "methods_where", "plan_rows", "query_weights",
           "register_method", "unregister_method"]


_weights = query_weights  # the name this check had when it lived here


def _fuse_for(method: str):
    """The next-token fusion rule of ``method`` (tests' reference decoders take it from here)."""
    return get_method(method).fusion_fn()


def __getattr__(name: str):
    """``ONE_ROW_METHODS``: the registered one-row methods, read when asked (a method registered later counts)."""
    if name == "ONE_ROW_METHODS":
        return methods_where(one_row=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
