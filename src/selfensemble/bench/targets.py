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
# The decode step's targets (issue 28): (label, method, over, limit, batch size) on s/q ÷ the s/q of
# ``over`` at the same batch size ("hf_generate": model.generate, batch 1)
DECODE_TARGETS = (("origin", "origin", "hf_generate", 0.6, 1), ("flex", "flex", "origin", 1.2, 1),
                  ("flex", "flex", "avg", 0.6, 8))
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


def _row(rows: list[dict], method: str, n: int | None, bs: int, layout: str | None, decode: str) -> dict | None:
    """The engine row of a setting (``n`` None: any N — origin runs at N=1 — layout None: the default's)."""
    return next((r for r in rows if r["method"] == method and r["batch_size"] == bs and r["decode_mode"] == decode
                 and (n is None or r["n"] == n) and (layout is None or r["layout"] in (layout, None))), None)


def _n(method: str, n: int) -> int | None:
    """The N a method's rows were run at: any for a method that asks the original only (origin runs at N=1)."""
    from selfensemble.methods.registry import get_method

    return None if get_method(method).asks_original_only else n


def targets(result: dict, config: BenchConfig) -> list[dict]:
    """Each project target as met / missed / not measured, with the number that decided it; ratio
    targets once per decode mode run (labelled when compiled)."""
    n, rows, out = config.target_n, result["rows"], []
    for decode in config.decode_modes:
        tag = " (compiled decode)" if decode == "compiled" else ""
        for bs in config.batch_sizes:
            for label, method, layout, limit in RATIO_TARGETS:
                r = _row(rows, method, n, bs, layout, decode)
                out.append(_target(f"{label} s/q ≤ {limit}× origin (N={n}, batch {bs}){tag}",
                                   r["ratio_vs_origin"] if r else None, limit, at_most=True))
        for label, method, over, limit, bs in DECODE_TARGETS:
            if bs not in config.batch_sizes:
                continue
            a = _row(rows, method, _n(method, n), bs, config.layouts[0], decode)
            b = next((r for r in rows if r["method"] == "hf_generate"), None) if over == "hf_generate" else \
                _row(rows, over, _n(over, n), bs, config.layouts[0], decode)
            value = a["s_per_q"] / b["s_per_q"] if a and b else None
            shown = "model.generate" if over == "hf_generate" else over
            out.append(_target(f"decode step: {label} s/q ≤ {limit}× {shown} (N={n}, batch {bs}){tag}", value,
                               limit, at_most=True))
    for r in result["naive"]:
        out.append(_target(f"{r['method']} cached ≥ {NAIVE_SPEEDUP_TARGET:.0f}× faster than naive (N={r['n']})",
                           r["speedup"], NAIVE_SPEEDUP_TARGET, at_most=False))
    for r in result["batching"]:
        if r["n"] in (n, 1):
            lay = f", {r['layout']}" if r["layout"] else ""
            tag = " (compiled decode)" if r.get("decode_mode") == "compiled" else ""
            out.append(_target(f"{r['method']}{lay} batch {r['batch_size']} ≥ {BATCH_SPEEDUP_TARGET}× q/s of "
                               f"batch 1 (N={r['n']}){tag}", r["speedup"], BATCH_SPEEDUP_TARGET, at_most=False))
    storm = result["storm"]["runs"]
    if storm:
        first = storm[0]
        out.append(_target(f"≤ {STORM_COMPILE_TARGET} compiles across {first['questions']} flex questions "
                           f"(pad_multiple {first['pad_multiple']})", first["compiles"], STORM_COMPILE_TARGET,
                           at_most=True, unit=""))
    return out
