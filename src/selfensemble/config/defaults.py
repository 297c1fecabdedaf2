"""The measured default configuration of attention fusion (``flex``), in one light module.

Every entry point (EngineConfig, RunConfig, BenchConfig, the CLI's ask / run / bench / serve /
lm-eval / mask / demo / interactive, the Python API) reads these, so the default cannot drift
between them. Chosen on the dev split of ParaRel and WebQuestions (benchmarks/experiments/flex_sweep.py)
and evaluated once on heldout (benchmarks/experiments/confirm.py); benchmarks/README.md has both
tables and what they do and do not show. Imports nothing heavy (no torch).

Entry points read the constants when an object is built (``factory``), not when a module is
imported: a changed default (or a test that patches one) reaches every entry point at once, and a
hard-coded copy somewhere is caught by tests/test_entry_defaults.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEFAULT_MODEL = "smollm2-135m"  # the embedded SmolLM2-135M-Instruct GGUF (engine/model_specs.py)

FLEX_LAYOUT = "shared"
FLEX_POSITIONS = "right"
FLEX_RESCALE = True
FLEX_TEMPERATURE = 1.0
FLEX_SCALE = 1.0

#: The flex knobs by their EngineConfig / CLI option names (a RunConfig holds an EngineConfig).
FLEX_KNOBS = ("layout", "positions", "rescale", "fusion_temperature", "fusion_scale")


def flex() -> dict[str, Any]:
    """The flex configuration as {knob: value}, read now: {"layout": "shared", "positions": "right", …}."""
    return {"layout": FLEX_LAYOUT, "positions": FLEX_POSITIONS, "rescale": FLEX_RESCALE,
            "fusion_temperature": FLEX_TEMPERATURE, "fusion_scale": FLEX_SCALE}


def factory(knob: str) -> Callable[[], Any]:
    """A ``default_factory`` (dataclass field or typer option) that reads ``knob`` when it is called."""
    if knob not in FLEX_KNOBS:
        raise KeyError(f"unknown flex knob {knob!r}; known: {', '.join(FLEX_KNOBS)}")
    return lambda: flex()[knob]


def layouts_default_first() -> str:
    """'shared,full' with the default layout first (what `bench` sweeps unless told otherwise)."""
    return ",".join(dict.fromkeys([FLEX_LAYOUT, "shared", "full"]))
