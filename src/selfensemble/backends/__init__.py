"""How ``experiment.py`` maps items over engines.

A backend is *engine-like*: it offers the Engine's batched call
``answer_many(queries, method, gen, on_done) -> list[Answer]`` plus ``config.batch_size``,
``attention_note``, ``compile_count`` and ``stats``. Everything a run does through the engine
(answers, model-written paraphrases, sampled confidence) therefore runs unchanged on either one:

  local   the Engine itself, in this process (``backends/local.py``)
  ray     the same Engine in every actor of a Ray Data actor pool (``backends/ray.py``); the
          driver keeps the run store, so results, resume and reports are those of a local run

The backend never changes an answer (the engine is batch-invariant and each Ray batch is one
engine batch of the same ``batch_size``), so it is not part of a run's resume-defining config;
it is recorded in the manifest instead (:func:`provenance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfensemble.errors import SelfEnsembleError

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
            raise SelfEnsembleError(f"--workers must be >= 1, got {self.workers}.")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise SelfEnsembleError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0, got "
                                    f"{self.gpus_per_worker} and {self.cpus_per_worker}.")


def open_backend(backend: BackendConfig, cfg, console):
    """The engine-like object that answers ``cfg``'s queries (``cfg``: an experiment.RunConfig)."""
    if backend.name == "ray":
        from selfensemble.backends.ray import RayBackend

        return RayBackend(cfg, backend, console)
    from selfensemble.backends.local import load_engine

    return load_engine(cfg, console)


def provenance(engine: Any) -> dict:
    """Manifest fields naming where a run's answers were computed."""
    own = getattr(engine, "provenance", None)
    return own() if callable(own) else {"backend": "local", "workers": 1}


def close_backend(engine: Any) -> None:
    """Release what the backend holds (a Ray connection); an in-process Engine holds nothing."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
