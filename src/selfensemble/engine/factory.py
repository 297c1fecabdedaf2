"""The one place an Engine is built from a loading spec: every entry point goes through here.

``selfensemble run/ask/interactive/demo/paraphrase``, ``serve``, the lm-eval adapter and every
Ray actor build their engine with :func:`build_engine`, and ``bench`` loads its model with
:func:`load` (it then times several engine configurations on that one load). So a model is loaded
with the same settings (seed, dtype, device placement, revision) whichever way a user reaches it,
and a Ray actor answers as the local backend does: it receives the same ``LoadSpec`` and
``EngineConfig`` the driver built (plain picklable dataclasses, no run configuration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: importing methods/models here would load torch for a spec
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.models import LoadedModel


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
