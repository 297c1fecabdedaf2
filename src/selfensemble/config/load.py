"""Which model to load and how: a plain, picklable spec (a Ray actor receives the driver's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfensemble.config.defaults import DEFAULT_MODEL

__all__ = ["LoadSpec"]


@dataclass(frozen=True)
class LoadSpec:
    """Which model to load and how (``models.load_model``'s arguments).

    ``dtype``: a name ("auto", "float32", ...) or a torch.dtype. ``device_map`` (e.g. "auto", or
    a dict) places the model with accelerate and overrides ``device``; ``revision``,
    ``trust_remote_code`` and ``quantization_config`` apply to hub ids and saved folders only.
    """

    model: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: Any = "auto"
    seed: int = 0
    device_map: str | dict | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    quantization_config: Any = None
