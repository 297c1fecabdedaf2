"""How the engine lays out and runs rows (EngineConfig), validated when built.

The packed-row knobs (layout, positions, rescale, fusion temperature/scale) are read from
defaults.py each time a config is built, never a copy fixed at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfensemble.config import defaults
from selfensemble.engine.attention.masks import AttentionFusion
from selfensemble.engine.packing import POSITION_MODES
from selfensemble.errors import SelfEnsembleError

LAYOUTS = ("shared", "full")
# Attention kernels (EngineConfig.attention, --attention). A kernel name is never a method name, though
# both have a "flex": the method flex packs its prompts in one row (methods/registry.py); the kernel
# flex is FlexAttention, one of the two kernels that can run any row. Code compares kernels with these.
KERNEL_AUTO, KERNEL_FLEX, KERNEL_SDPA = "auto", "flex", "sdpa"
ATTENTION = (KERNEL_AUTO, KERNEL_FLEX, KERNEL_SDPA)


@dataclass(frozen=True)
class EngineConfig:
    """How rows are laid out and run.

    ``layout``, ``positions``, ``rescale``, ``fusion_temperature`` and ``fusion_scale`` only touch a
    method that packs its prompts in one row, flex (``masks.AttentionFusion`` has the math); every
    other method ignores them.
    """

    attention: str | None = None  # None: "auto" on CUDA, "sdpa" on CPU (see Engine._resolve_attention)
    # flex knobs: read from defaults.py when a config is built (never a copy fixed at import)
    layout: str = field(default_factory=defaults.factory("layout"))
    positions: str = field(default_factory=defaults.factory("positions"))
    rescale: bool = field(default_factory=defaults.factory("rescale"))
    fusion_temperature: float = field(default_factory=defaults.factory("fusion_temperature"))
    fusion_scale: float = field(default_factory=defaults.factory("fusion_scale"))
    reuse_prefix: bool = True
    batch_size: int = 8
    pad_multiple: int = 32
    # torch.compile the decode step (engine/step.py; CUDA graphs on CUDA). Off by default: on this
    # CPU it compiles for minutes and ran no faster (benchmarks/README.md, "The decode step"); no
    # CUDA timing exists yet to choose a CUDA default from
    compile: bool = False
    # every cached prefix KV (one copy or N copies of it) together stays under this many MiB; the
    # least recently used entries go first
    prefix_cache_mb: float = 256.0

    def __post_init__(self):
        for name, value, allowed in (("attention", self.attention or KERNEL_AUTO, ATTENTION), ("layout", self.layout, LAYOUTS),
                                     ("positions", self.positions, POSITION_MODES)):
            if value not in allowed:
                raise SelfEnsembleError(f"Unknown {name} {value!r}; use one of {', '.join(allowed)}.")
        if self.batch_size < 1:
            raise SelfEnsembleError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.prefix_cache_mb >= 0:
            raise SelfEnsembleError(f"prefix_cache_mb must be >= 0, got {self.prefix_cache_mb}")
        try:
            self.attention_fusion  # noqa: B018 - validates the knobs
        except ValueError as err:
            raise SelfEnsembleError(str(err)) from err

    @property
    def attention_fusion(self) -> AttentionFusion:
        """The flex-only attention-fusion knobs as one object (validated)."""
        return AttentionFusion(self.fusion_temperature, self.fusion_scale, self.rescale)
