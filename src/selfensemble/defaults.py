"""The measured default configuration of attention fusion (``flex``), in one light module.

Every entry point (EngineConfig, RunConfig, the CLI's ask / run / bench / demo / interactive,
the bench config) reads these, so the default cannot drift between them. Chosen by measurement
on ../shared ParaRel and WebQuestions: see benchmarks/README.md ("Choosing the flex default")
and benchmarks/experiments/flex_sweep.py, which reproduces the table. Imports nothing heavy (no torch).
"""

from __future__ import annotations

FLEX_LAYOUT = "shared"
FLEX_POSITIONS = "right"
FLEX_RESCALE = True
FLEX_TEMPERATURE = 1.0
FLEX_SCALE = 1.0
