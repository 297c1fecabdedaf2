"""How ``experiment.py`` maps items over engines.

A backend satisfies the ``Backend`` protocol (``backends/base.py``): the Engine's batched calls
``answer_many`` and ``sample`` plus ``config``, ``workers``, the attention path, counters,
``provenance()`` and ``close()``. Everything a run does through the engine (answers,
model-written paraphrases, sampled confidence) therefore runs unchanged on either one:

  local   one Engine in this process (``backends/local.py``)
  ray     the same Engine in every actor of one Ray actor pool kept for the whole run
          (``backends/ray.py``); the driver keeps the run store, so results, resume and reports are those of a local run

The backend never changes an answer (the engine is batch-invariant and each Ray batch is one
engine batch of the same ``batch_size``), so it is not part of a run's resume-defining config;
it is recorded in the manifest instead (``Backend.provenance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.pipeline.backends.base import Backend

if TYPE_CHECKING:
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec

__all__ = ["BACKENDS", "Backend", "BackendConfig", "as_backend", "open_backend"]

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class BackendConfig:
    """Where the engines run. ``address``/``workers``/``*_per_worker`` only apply to ``ray``.

    ``address`` None starts a local Ray instance; ``"auto"`` joins the cluster this machine is part
    of (``ray start``); ``"HOST:PORT"`` joins the head node at that address. ``verbose`` shows Ray's
    own output (actor stdout, its log lines); off, the driver shows the run's progress and errors.
    """

    name: str = "local"
    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    verbose: bool = False

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise SelfEnsembleError(f"Unknown backend {self.name!r}; use one of {', '.join(BACKENDS)}.")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}.", arguments=("workers",))
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ConfigError("gpus_per_worker must be >= 0 and cpus_per_worker > 0, got "
                              f"{self.gpus_per_worker} and {self.cpus_per_worker}.",
                              arguments=("gpus_per_worker", "cpus_per_worker"))


def open_backend(backend: BackendConfig, spec: LoadSpec, config: EngineConfig, console) -> Backend:
    """The Backend that answers with ``config`` on the model of ``spec`` (``console``: status and notes)."""
    if backend.name == "ray":
        from selfensemble.pipeline.backends.ray import RayBackend

        return RayBackend(spec, config, backend, console)
    from selfensemble.pipeline.backends.local import load_engine

    return load_engine(spec, config, console)


def as_backend(engine: Any) -> Backend:
    """``engine`` itself when it is a Backend, else a LocalBackend over it (an Engine, or a test's
    engine-like stub, that the caller loaded and keeps: closing the backend leaves it open)."""
    if isinstance(engine, Backend):
        return engine
    from selfensemble.pipeline.backends.local import LocalBackend

    return LocalBackend(engine)
