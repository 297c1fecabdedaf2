"""What a run needs from the thing that answers its queries: the ``Backend`` protocol.

Both backends satisfy it: ``local.LocalBackend`` (one Engine in this process) and
``ray.RayBackend`` (an Engine in every actor of a Ray actor pool). ``experiment.py`` only uses
these members, so it never asks which backend it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.queries import Answer, Query


@runtime_checkable
class Backend(Protocol):
    """An engine-like answerer of queries, wherever its engines run.

    ``config``: the EngineConfig every engine runs (``config.batch_size`` is one engine batch).
    ``workers``: engines answering at once (1 locally, the pool size on Ray); a saved batch of
    confidence samples is ``config.batch_size * workers`` questions, and so is the largest engine
    call of paraphrase writing (which saves after every call).
    ``attention_paths`` / ``attention_note``: the attention paths that ran ({"prefill": key, "decode":
    key}, provenance's stable keys) and a human note;
    ``attention_known`` is False until they are (a Ray pool learns them from its first answers).
    ``warm_up``: whether a discarded warm-up batch should run before a timed pass (on a Ray pool
    it would warm one actor only). ``stats`` / ``compile_count``: running counters
    of the engines (tokens, calls; flex compiles), read before and after a pass.
    """

    # read-only members (properties): a class attribute or a property satisfies them alike
    @property
    def config(self) -> EngineConfig: ...

    @property
    def workers(self) -> int: ...

    @property
    def warm_up(self) -> bool: ...

    @property
    def stats(self) -> dict[str, int]: ...

    @property
    def attention_known(self) -> bool: ...

    @property
    def attention_paths(self) -> dict[str, str]: ...

    @property
    def attention_note(self) -> str: ...

    @property
    def compile_count(self) -> int: ...

    def answer_many(self, queries: Sequence[Query], method: str, gen: GenerationConfig | None = None,
                    on_done: Callable[[int, Answer], None] | None = None) -> list[Answer]:
        """One Answer per query, in order; ``on_done(index, answer)`` as each batch finishes."""
        ...

    def sample(self, queries: Sequence[Query], n_samples: int | Sequence[int],
               gen: GenerationConfig | None = None) -> list[list[Answer]]:
        """``n_samples`` independent ``origin`` answers per query (``Engine.sample``)."""
        ...

    def provenance(self) -> dict:
        """Manifest fields naming where the answers were computed (backend, workers, …)."""
        ...

    def close(self) -> None:
        """Release what the backend holds (an engine's prefix KV, a Ray connection)."""
        ...
