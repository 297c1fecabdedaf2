"""The local backend: one Engine in this process (what ``selfensemble run`` has always done).

The engine comes from ``engine_factory.build_engine``, which every Ray actor calls too, so both
backends load the same model with the same settings (seed, dtype, attention, batch size) and
answer alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from selfensemble.config.load import LoadSpec
from selfensemble.engine import factory as engine_factory

if TYPE_CHECKING:
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.queries import Answer, Query


class LocalBackend:
    """The Backend protocol (backends/base.py) over one in-process Engine.

    ``engine`` is an ``methods.Engine`` or anything engine-like (tests pass stubs): the members
    the protocol names are read from it live (an engine that falls back to SDPA mid-run changes
    its attention path, and the run sees it). ``owned``: this backend loaded the engine, so
    ``close`` closes it; an engine the caller passed stays open for the caller.
    """

    workers = 1
    warm_up = True  # a discarded batch first: compiles, allocator and prefix KV out of the timing
    attention_known = True  # an Engine resolves its attention path when built

    def __init__(self, engine: Any, owned: bool = False):
        self.engine, self.owned = engine, owned

    @property
    def config(self) -> EngineConfig:
        return self.engine.config

    @property
    def attention_paths(self) -> dict[str, str]:
        return self.engine.attention_paths

    @property
    def attention_note(self) -> str:
        return self.engine.attention_note

    @property
    def stats(self) -> dict[str, int]:
        return self.engine.stats

    @property
    def compile_count(self) -> int:
        return self.engine.compile_count

    def answer_many(self, queries: Sequence[Query], method: str, gen: GenerationConfig | None = None,
                    on_done: Callable[[int, Answer], None] | None = None) -> list[Answer]:
        return self.engine.answer_many(queries, method, gen, on_done=on_done)

    def sample(self, queries: Sequence[Query], n_samples: int | Sequence[int],
               gen: GenerationConfig | None = None) -> list[list[Answer]]:
        return self.engine.sample(queries, n_samples, gen)

    def provenance(self) -> dict:
        return {"backend": "local", "workers": 1}

    def close(self) -> None:
        if self.owned:
            self.engine.close()


def load_engine(spec: LoadSpec, config: EngineConfig, console) -> LocalBackend:
    """``engine_factory.build_engine`` with a line saying how long the load took and which attention
    path runs (``console``: anything with ``status`` and ``print``, e.g. progress.NotesConsole)."""
    t0 = time.perf_counter()
    with console.status(f"loading {spec.model}…"):  # the first load takes ~15-30 s
        engine = engine_factory.build_engine(spec, config)
    console.print(f"loaded {spec.model} in {time.perf_counter() - t0:.1f}s; attention: {engine.attention_note}")
    return LocalBackend(engine, owned=True)
