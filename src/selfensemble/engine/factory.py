"""The one place an Engine is built from a loading spec: every entry point goes through here.

``selfensemble run/ask/interactive/demo/paraphrase``, ``serve``, the lm-eval adapter and every
Ray actor build their engine with :func:`build_engine`, and ``bench`` loads its model with
:func:`load` (it then times several engine configurations on that one load). So a model is loaded
with the same settings (seed, dtype, device placement, revision) whichever way a user reaches it,
and a Ray actor answers as the local backend does: it receives the same ``LoadSpec`` and
``EngineConfig`` the driver built (plain picklable dataclasses, no run configuration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from selfensemble.engine.model_specs import DEFAULT_MODEL

if TYPE_CHECKING:  # types only: importing methods/models here would load torch for a spec
    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.models import LoadedModel


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


def load(spec: LoadSpec) -> LoadedModel:
    """The model and tokenizer of ``spec``, under the selfensemble attention dispatcher."""
    from selfensemble.engine import models  # looked up at call time: tests swap models.load_model

    return models.load_model(spec.model, spec.device, spec.dtype, spec.seed, device_map=spec.device_map,
                             revision=spec.revision, trust_remote_code=spec.trust_remote_code,
                             quantization_config=spec.quantization_config)


def build_engine(spec: LoadSpec, config: EngineConfig) -> Engine:
    """Load ``spec`` and wrap it in an Engine running ``config``.

    ``config`` is built (and so validated) by the caller before this call, so a bad option fails
    before the slow load.
    """
    from selfensemble.engine import engine  # looked up at call time: tests swap engine.Engine

    return engine.Engine(load(spec), config)
