"""How generated paraphrases are screened: the gate's settings and measured defaults (no model, no
embedder loaded here; pipeline/paraphrase/gate.py runs the gate).

``GateConfig`` is one gate, on or off (part of the paraphrase cache key). ``GateSettings`` is a
run's choice, which may leave the gate to depend on where the paraphrases come from (screen the
model's, leave a dataset's own alone); ``GateSettings.resolve`` gives the GateConfig for each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from selfensemble.errors import ConfigError

__all__ = ["DEFAULT_ENTITY_GUARD", "DEFAULT_MIN_SIMILARITY", "EMBEDDERS", "GateConfig", "GateSettings"]

EMBEDDERS = ("wordllama", "minilm")
# measured: benchmarks/experiments/paraphrase_gate.py (wordllama, 200 WebQuestions, see benchmarks/README.md): 0.7 had
# the best mean accuracy over avg, vote and flex (0.155 vs 0.148 at 0.6, 0.142 ungated) and the best avg
# (0.7 − 0.6: +0.030 [+0.000, +0.060]); every gate-vs-no-gate difference is within noise. minilm's cosine
# runs higher (hand cases: true paraphrases ≥ .88, drifts ≤ .69), so it gets its own default.
DEFAULT_MIN_SIMILARITY = {"wordllama": 0.7, "minilm": 0.8}
# Off by default: it did not change fused accuracy measurably (avg at 0.6, guard − no guard: +0.015
# [-0.010, +0.045] on 200 WebQuestions, +0.007 [-0.013, +0.027] on an earlier 150) while leaving twice
# as many questions short of paraphrases; it does raise the gate's precision on hand-labelled
# candidates (benchmarks/README.md), so it stays an option.
DEFAULT_ENTITY_GUARD = False


@dataclass(frozen=True)
class GateConfig:
    """How generated paraphrases are screened (part of the paraphrase cache key)."""

    enabled: bool = True
    min_similarity: float | None = None  # None: DEFAULT_MIN_SIMILARITY of the embedder
    embedder: str = "wordllama"
    entity_guard: bool = DEFAULT_ENTITY_GUARD
    oversample: int = 3  # candidates generated per paraphrase wanted

    def __post_init__(self):
        if self.embedder not in EMBEDDERS:
            # no ``arguments``: the CLI would turn this message's "embedder" into the flag ("Unknown --embedder")
            raise ConfigError(f"Unknown embedder {self.embedder!r}; use one of {', '.join(EMBEDDERS)}.")
        if self.min_similarity is None:
            object.__setattr__(self, "min_similarity", DEFAULT_MIN_SIMILARITY[self.embedder])
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError(f"min_similarity must lie in [-1, 1], got {self.min_similarity}.", arguments=("min_similarity",))
        if self.oversample < 1:
            raise ConfigError(f"oversample must be >= 1, got {self.oversample}.")  # no flag of that name

    def key(self) -> dict:
        """What the cache key needs: the settings that change which paraphrases survive."""
        return asdict(self) if self.enabled else {"enabled": False}


@dataclass(frozen=True)
class GateSettings:
    """The run's paraphrase-gate settings; :meth:`resolve` turns them into a GateConfig.

    ``enabled``: None screens generated paraphrases and leaves a dataset's own alone (the
    default); True screens both; False neither.
    """

    enabled: bool | None = None
    min_similarity: float | None = None  # None: DEFAULT_MIN_SIMILARITY of the embedder
    embedder: str = "wordllama"
    entity_guard: bool = False  # DEFAULT_ENTITY_GUARD (measured: no gain in accuracy)

    def resolve(self, generated: bool) -> GateConfig:
        """The gate for generated (True) or a dataset's own (False) paraphrases (validated)."""
        on = self.enabled if self.enabled is not None else generated
        return GateConfig(enabled=on, embedder=self.embedder, entity_guard=self.entity_guard,
                          min_similarity=self.min_similarity)
