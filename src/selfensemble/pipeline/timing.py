"""Timing that can be trusted on a shared machine: interleaved repeats, medians, and the load they ran under.

One wall-clock sample per method says little on a machine other jobs share: the demo's cost column
once read flex 0.88× origin and 7.53× in the next run, with the same answers. So
:func:`time_methods` times every method on one fixed batch in several rounds, the methods
interleaved (round r starts with the r-th method), so a busy spell slows all of them alike; each
method gets the median of its rounds with their range, and its cost relative to ``origin`` is the
median of the per-round ratios. :func:`machine_load` reads the load average the timing ran under;
a load above the cores means the figures are inflated and the caller says so.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

DEFAULT_ROUNDS = 3
DEFAULT_FACTS = 4  # per round and method: ~45 s for the demo's methods on 2 free cores


def cpu_count() -> int:
    """The cores this process may run on (a container or taskset can give fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine_load() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS does not report it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


def busy_warning(loads: Sequence[float | None], cpus: int) -> str | None:
    """A sentence when the highest load average seen exceeds the cores, else None."""
    seen = [x for x in loads if x is not None]
    if not seen or max(seen) <= cpus:
        return None
    return (f"the machine's load average reached {max(seen):.1f} on {cpus} cores while timing: other work "
            "competed for the CPU, so these times are inflated and their ratios less certain")


def spread(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of ``samples`` and how many there are (None fields for no samples)."""
    if not samples:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def time_methods(engine: Any, methods: Sequence[str], queries: Sequence, gen: Any, *, rounds: int = DEFAULT_ROUNDS,
                 facts: int = DEFAULT_FACTS, derived: dict[str, str] | None = None) -> dict[str, Any]:
    """Seconds per question of each method on the first ``facts`` queries, ``rounds`` times, interleaved.

    ``engine``: a Backend (answer_many). ``derived`` ({method: source}, e.g. vote → per_prompt):
    methods whose answers are computed from another's (no decoding of their own) get the source's
    samples. One untimed query per method runs first (allocations, compiles). Returns
    {"rounds", "facts", "cpus", "load_average": [before, after], "warning": str | None,
    "methods": {name: {"samples", "median", "min", "max", "n", "x_origin": {...}, "derived_from"}}}.
    """
    derived = derived or {}
    decoded = [m for m in methods if m not in derived]
    batch = list(queries[:facts])
    for m in decoded:  # warm-up, not timed
        engine.answer_many(batch[:1], m, gen)
    samples: dict[str, list[float]] = {m: [] for m in decoded}
    loads = [machine_load()]
    for r in range(rounds):
        for m in decoded[r % len(decoded):] + decoded[: r % len(decoded)]:
            t0 = time.perf_counter()
            engine.answer_many(batch, m, gen)
            samples[m].append((time.perf_counter() - t0) / len(batch))
        loads.append(machine_load())
    cpus = cpu_count()
    out: dict[str, Any] = {"rounds": rounds, "facts": len(batch), "cpus": cpus, "load_average": loads,
                           "warning": busy_warning(loads, cpus), "methods": {}}
    base = samples.get("origin")
    for m in methods:
        own = samples.get(derived.get(m, m), [])
        row = {"samples": own, **spread(own), "derived_from": derived.get(m)}
        ratios = [a / b for a, b in zip(own, base, strict=True) if b > 0] if base else []
        row["x_origin"] = spread(ratios)
        out["methods"][m] = row
    return out
