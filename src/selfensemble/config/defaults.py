"""The measured default configuration of attention fusion (``flex``), in one light module.

EngineConfig and BenchConfig take their defaults from here, and every entry point (the CLI's
commands through the flags EngineConfig declares, RunConfig, the Python API) builds an EngineConfig,
so the default cannot drift between them. Chosen on the dev split of ParaRel and WebQuestions (benchmarks/experiments/flex_sweep.py)
and evaluated once on heldout (benchmarks/experiments/confirm.py); benchmarks/README.md has both
tables and what they do and do not show. Imports nothing heavy (no torch).

tests/test_entry_defaults.py checks that every command has every EngineConfig flag, defaulting to
the dataclass (no command carries a copy of a default).
"""

from __future__ import annotations

from typing import Any

DEFAULT_MODEL = "smollm2-135m"  # the embedded SmolLM2-135M-Instruct GGUF (engine/model_specs.py)

#: Where a packed row puts its paraphrases' positions (engine/packing.py lays them out).
POSITION_MODES = ("restart", "right", "sequential")

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


def layouts_default_first() -> str:
    """'shared,full' with the default layout first (what `bench` sweeps unless told otherwise)."""
    return ",".join(dict.fromkeys([FLEX_LAYOUT, "shared", "full"]))
