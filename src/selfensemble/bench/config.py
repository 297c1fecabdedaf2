"""What one benchmark run measures (``BenchConfig``); checked on creation, saved in the result JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfensemble.bench.questions import MAX_N
from selfensemble.config import defaults
from selfensemble.errors import ConfigError

DECODE_MODES = ("eager", "compiled")


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. Defaults are the quick CPU setting on the embedded model."""

    model: str = "smollm2-135m"
    methods: tuple[str, ...] = ("origin", "avg", "flex")
    ns: tuple[int, ...] = (5,)
    batch_sizes: tuple[int, ...] = (1, 8)
    # flex knobs, from defaults.py (the default layout first); other methods ignore them
    layouts: tuple[str, ...] = tuple(defaults.layouts_default_first().split(","))
    positions: str = defaults.FLEX_POSITIONS
    rescale: bool = defaults.FLEX_RESCALE
    fusion_temperature: float = defaults.FLEX_TEMPERATURE
    fusion_scale: float = defaults.FLEX_SCALE
    questions: int = 8
    max_new_tokens: int = 10
    attention: str | None = None
    naive: bool = True
    naive_questions: int = 2
    hf_reference: bool = True
    prefix_section: bool = True
    storm_questions: int = 100
    storm_new_tokens: int = 1
    storm_pad_multiples: tuple[int, ...] = (32, 64, 128)
    warmup_questions: int = 2
    paraphrase_section: bool = True  # paraphrase writing (bench/paraphrase_writing.py)
    paraphrase_candidates: int = 12  # per question: N=5 with the gate (4 wanted × oversample 3)
    paraphrase_formats: int = 3  # few-shot sets a question's candidates are spread over
    paraphrase_new_tokens: int = 40  # paraphrase.ParaphraseConfig's default
    demos_section: bool = True  # shared vs per-item demonstrations (bench/demos.py)
    demo_items: int = 40  # bundled ParaRel items asked both ways
    few_shot: int = 5
    pad_multiple: int = 32
    compile_flex: bool = True
    # the decode step of every engine row: "eager", "compiled" (EngineConfig.compile), or both side by side
    decode_modes: tuple[str, ...] = ("eager",)
    prefix_cache_mb: float = 256.0  # EngineConfig.prefix_cache_mb of every engine row
    device: str = "cpu"
    dtype: str = "auto"
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    data_dir: str | None = None  # None: selfensemble.data.default_data_dir(), else built-in questions

    def __post_init__(self):
        from selfensemble.config.engine import ATTENTION, LAYOUTS
        from selfensemble.methods.registry import check_method

        for m in self.methods:
            check_method(m)
        for lay in self.layouts:
            if lay not in LAYOUTS:
                raise ConfigError(f"Unknown layout {lay!r}; use one of {', '.join(LAYOUTS)}.")
        if self.attention is not None and self.attention not in ATTENTION:
            raise ConfigError(f"Unknown attention {self.attention!r}; use one of {', '.join(ATTENTION)}.")
        if not self.ns or any(n < 1 or n > MAX_N for n in self.ns):
            raise ConfigError(f"Every N must be between 1 and {MAX_N} (template paraphrases), got {self.ns}.")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"Batch sizes must be >= 1, got {self.batch_sizes}.")
        for name in ("questions", "max_new_tokens", "storm_new_tokens", "warmup_questions", "pad_multiple",
                     "paraphrase_candidates", "paraphrase_formats", "paraphrase_new_tokens", "demo_items"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.decode_modes or any(m not in DECODE_MODES for m in self.decode_modes):
            raise ConfigError(f"decode modes must be among {', '.join(DECODE_MODES)}, got {self.decode_modes}.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}.")
        if self.naive_questions < 0 or self.storm_questions < 0 or self.few_shot < 0:
            raise ConfigError("naive_questions, storm_questions and few_shot must be >= 0.")

    @classmethod
    def tiny(cls, **overrides: Any) -> BenchConfig:
        """What CI runs: a random 2-layer llama, 2 questions, N=2, 2 new tokens, a short storm, 4
        paraphrase candidates of 4 tokens, 4 items asked with each kind of demonstrations."""
        base = dict(model="random:llama", questions=2, ns=(2,), max_new_tokens=2, naive_questions=2,
                    storm_questions=10, warmup_questions=1, paraphrase_candidates=4, paraphrase_formats=2,
                    paraphrase_new_tokens=4, demo_items=4)
        return cls(**{**base, **overrides})

    @property
    def target_n(self) -> int:
        """The N the targets are judged at: 5 (the issue's setting) when run, else the largest N."""
        return 5 if 5 in self.ns else max(self.ns)


def default_ns(device: str) -> tuple[int, ...]:
    """The full sweep where it is cheap (CUDA), one realistic N where it is not (CPU)."""
    if device.startswith("cuda"):
        return (1, 3, 5, 10)
    if device == "auto":
        import torch

        return (1, 3, 5, 10) if torch.cuda.is_available() else (5,)
    return (5,)
