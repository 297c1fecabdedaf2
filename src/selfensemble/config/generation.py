"""How one answer is decoded (GenerationConfig): length, greedy or sampled, and where it stops.

Every sampling knob lives here and is checked when the config is built, so the CLI, the server,
the lm-eval adapter and the paraphrase writer share one rule; the user-facing knobs declare their
command-line flags (``config.fields.flag``) for the commands that take them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from selfensemble.config.fields import check_fields, flag
from selfensemble.errors import ConfigError

GENERATION_PANEL = "Generation"


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy by default; answers stop at EOS, at a newline after some text, or at a stop string."""

    max_new_tokens: int = field(default=16, metadata=flag("Longest answer in tokens.", panel=GENERATION_PANEL, min=1))
    do_sample: bool = field(default=False, metadata=flag("Sample instead of greedy decoding.",
                                                         panel=GENERATION_PANEL, name="sample"))
    temperature: float = field(default=1.0, metadata=flag("Sampling temperature (> 0).", panel=GENERATION_PANEL))
    top_p: float = field(default=1.0, metadata=flag("Nucleus sampling mass, in (0, 1].", panel=GENERATION_PANEL))
    top_k: int = field(default=0, metadata=flag("Keep the k likeliest tokens when sampling (0: all).",
                                                panel=GENERATION_PANEL, min=0))
    seed: int = 0
    stop_at_newline: bool = True
    stop_strings: tuple[str, ...] = ()  # the answer ends before the first of these (cut from the text)
    stop_after: tuple[str, ...] = ()  # the answer ends with the first of these (kept in the text)

    def __post_init__(self):
        check_fields(self)
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be a finite number > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
