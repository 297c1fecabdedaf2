"""The project's speed targets and how a result is judged against them (met / missed / not measured).

The numbers are the project's, not the library's: they live here, next to the tables that show them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selfensemble.bench.config import BenchConfig

# The project's speed targets: (label, method, layout, limit on s/q ÷ origin s/q).
RATIO_TARGETS = (("flex (shared layout)", "flex", "shared", 1.3), ("logit avg", "avg", None, 1.6),
                 ("flex (full layout)", "flex", "full", 2.0))
NAIVE_SPEEDUP_TARGET = 10.0
BATCH_SPEEDUP_TARGET = 1.5
STORM_COMPILE_TARGET = 3


def _target(name: str, value: float | None, limit: float, at_most: bool, unit: str = "×") -> dict:
    """One target: met when ``value`` ≤ ``limit`` (``at_most``) or ≥ it; "not measured" when value is None."""
    base = {"target": name, "value": value, "limit": limit, "at_most": at_most}
    if value is None:
        return {**base, "measured": "-", "status": "not measured"}
    met = value <= limit if at_most else value >= limit
    shown = f"{value:.0f}" if unit == "" else f"{value:.2f}{unit}"
    return {**base, "measured": shown, "status": "met" if met else "missed"}


def targets(result: dict, config: BenchConfig) -> list[dict]:
    """Each project target as met / missed / not measured, with the number that decided it."""
    n, rows, out = config.target_n, result["rows"], []
    for bs in config.batch_sizes:
        for label, method, layout, limit in RATIO_TARGETS:
            r = next((r for r in rows if (r["method"], r["n"], r["batch_size"], r["layout"])
                      == (method, n, bs, layout)), None)
            out.append(_target(f"{label} s/q ≤ {limit}× origin (N={n}, batch {bs})",
                               r["ratio_vs_origin"] if r else None, limit, at_most=True))
    for r in result["naive"]:
        out.append(_target(f"{r['method']} cached ≥ {NAIVE_SPEEDUP_TARGET:.0f}× faster than naive (N={r['n']})",
                           r["speedup"], NAIVE_SPEEDUP_TARGET, at_most=False))
    for r in result["batching"]:
        if r["n"] in (n, 1):
            lay = f", {r['layout']}" if r["layout"] else ""
            out.append(_target(f"{r['method']}{lay} batch {r['batch_size']} ≥ {BATCH_SPEEDUP_TARGET}× q/s of "
                               f"batch 1 (N={r['n']})", r["speedup"], BATCH_SPEEDUP_TARGET, at_most=False))
    storm = result["storm"]["runs"]
    if storm:
        first = storm[0]
        out.append(_target(f"≤ {STORM_COMPILE_TARGET} compiles across {first['questions']} flex questions "
                           f"(pad_multiple {first['pad_multiple']})", first["compiles"], STORM_COMPILE_TARGET,
                           at_most=True, unit=""))
    return out
