"""The Ray backend's actors: one pool per backend, each actor holding one Engine for the whole run.

``EngineWorker`` is the actor's class (plain Python, so its code path is tested without Ray);
``ActorPool`` starts the actors on the first pass that has work for them and keeps them until
``kill``, so a run loads the model once per actor however many passes it makes (methods, sampled-
confidence passes, paraphrase-writing rounds).

One pass, as the driver sees it:

  driver: [(indices, queries, counts)] one engine batch (``config.batch_size`` queries) each
  actors: ``EngineWorker.answer`` → (indices, answers, stats delta); at most ``IN_FLIGHT`` batches
          queued per actor, so an actor finishing a batch starts its next without a round trip
  driver: ``ray.wait`` yields batches as they finish (in any order); each freed actor gets the
          next batch

Actors are created with ``max_restarts=-1`` and ``max_task_retries=-1``: an actor whose process
dies is restarted (rebuilding its Engine) and the batches it held are retried, so a batch that
kills its actor every time is retried until the run is stopped.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Protocol

#: Test hook: when set to a file path, the first actor to answer a batch creates that file and
#: dies (``os._exit``) before answering, once per path: proves a lost actor's batch is retried.
CRASH_ONCE_ENV = "SELFENSEMBLE_TEST_CRASH_ONCE"
#: Batches queued on one actor at once: two keep it busy while the driver collects the other.
IN_FLIGHT = 2

#: One engine batch: the queries' indices in the pass, the queries, and samples wanted per query
#: (a sample pass) or None (an answering pass).
Batch = tuple[list[int], list, list[int] | None]
#: One answered batch: the queries' indices, their answers (a list of answers each in a sample
#: pass) and the engine's counters for the batch (``EngineWorker.answer``).
BatchResult = tuple[list[int], list, dict[str, int]]


class Pool(Protocol):
    """What ``RayBackend`` runs its passes on: ``ActorPool``, or any other runner of engine batches
    (``RayBackend.over_pool``), e.g. one answering them in this process."""

    #: engines built so far (each loaded the model once); the manifest's ``ray_actor_starts``
    starts: int

    def run(self, work: list[Batch], method: str | None, gen) -> Iterator[BatchResult]:
        """Each batch's ``EngineWorker.answer`` result as it finishes (any order; one may come twice)."""
        ...

    def kill(self) -> None:
        """Stop the engines; the backend's ``close`` calls it."""
        ...


class EngineWorker:
    """The actor: builds one Engine, then answers batches with it until the pool is killed.

    Built from the driver's ``LoadSpec`` and ``EngineConfig`` (``engine_factory.build_engine``, as
    the local backend), with ``threads`` torch threads (its CPU share). A failed build (an unknown
    model, a missing dependency on the node) is raised by ``answer``, not here: an exception in
    a task reaches the driver as itself (one line, ``ray._user_error``), while one in an actor's
    constructor comes back as a bare ActorDiedError and makes Ray log a retry line per queued batch.
    """

    def __init__(self, spec, config, threads: int):
        self.engine, self.error = None, None
        try:
            import torch

            from selfensemble.engine.factory import build_engine

            torch.set_num_threads(threads)
            self.engine = build_engine(spec, config)
        except Exception as err:  # raised with the first batch (see above)
            self.error = err

    def answer(self, indices: list[int], queries: list, counts: list[int] | None, method: str | None,
               gen) -> BatchResult:
        """(indices, answers, stats delta) for one batch.

        ``method`` None is a sample pass: ``counts[i]`` answers (a list) per query
        (``Engine.sample``); otherwise one Answer per query (``Engine.answer_many``). The delta is
        the engine's counters for this batch, plus ``compiles`` (flex compiles it caused).
        """
        if self.error is not None:
            raise self.error
        _maybe_crash_for_test()
        before, compiles = dict(self.engine.stats), self.engine.compile_count
        if method is None:
            answers = self.engine.sample(queries, counts, gen)
        else:
            answers = self.engine.answer_many(queries, method, gen)
        delta = {k: v - before.get(k, 0) for k, v in self.engine.stats.items()}
        delta["compiles"] = self.engine.compile_count - compiles
        return indices, answers, delta


def _maybe_crash_for_test() -> None:
    path = os.environ.get(CRASH_ONCE_ENV)
    if not path:
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)


def batches(n: int, batch_size: int, queries: Sequence, counts: list[int] | None) -> list[Batch]:
    """``n`` queries cut into engine batches of ``batch_size`` (the last may be shorter)."""
    return [(list(range(s, min(s + batch_size, n))), list(queries[s:s + batch_size]),
             counts[s:s + batch_size] if counts is not None else None) for s in range(0, n, batch_size)]


class ActorPool:
    """Up to ``opts.workers`` EngineWorker actors, started when a pass first needs them, kept until ``kill``.

    A pass with fewer batches than workers starts only as many actors as it has batches (no actor
    loads a model it never uses); a later, larger pass adds the rest. ``starts`` counts actors
    created (restarts after a crash are Ray's and not counted): each loads the model once.
    """

    def __init__(self, ray, spec, config, opts):
        self.ray, self.spec, self.config, self.opts = ray, spec, config, opts
        self.actors: list = []
        self.starts = 0

    def _options(self) -> dict:
        env = {CRASH_ONCE_ENV: os.environ[CRASH_ONCE_ENV]} if os.environ.get(CRASH_ONCE_ENV) else {}
        options = dict(num_cpus=self.opts.cpus_per_worker, num_gpus=self.opts.gpus_per_worker,
                       max_restarts=-1, max_task_retries=-1)
        if env:  # merged with the job's runtime_env (code_env): env_vars are added, py_modules kept
            options["runtime_env"] = {"env_vars": env}
        return options

    def _grow(self, wanted: int) -> None:
        wanted = min(wanted, self.opts.workers)
        if len(self.actors) >= wanted:
            return
        cls = self.ray.remote(EngineWorker).options(**self._options())
        threads = max(1, int(self.opts.cpus_per_worker))
        while len(self.actors) < wanted:
            self.actors.append(cls.remote(self.spec, self.config, threads))
            self.starts += 1

    def run(self, work: list[Batch], method: str | None, gen) -> Iterator[BatchResult]:
        """Each batch's (indices, answers, stats delta) as it finishes, in finishing order.

        Raises what ``ray.get`` raises for a batch (a RayTaskError wrapping the actor's exception);
        batches still queued are then cancelled so the actors are free for what comes next.
        """
        self._grow(len(work))
        todo, pending = deque(work), {}

        def submit(actor) -> None:
            indices, queries, counts = todo.popleft()
            pending[actor.answer.remote(indices, queries, counts, method, gen)] = actor

        for _ in range(IN_FLIGHT):
            for actor in self.actors:
                if todo:
                    submit(actor)
        try:
            while pending:
                (ref,), _ = self.ray.wait(list(pending), num_returns=1)
                actor = pending.pop(ref)
                result = self.ray.get(ref)
                if todo:
                    submit(actor)
                yield result
        finally:
            for ref in pending:  # an error (or the caller stopping early): drop the queued batches
                with contextlib.suppress(Exception):  # already finished or not cancellable: nothing to drop
                    self.ray.cancel(ref)

    def kill(self) -> None:
        """Stop every actor now (their engines and models go with them)."""
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already dead (its node went away): nothing to stop
                self.ray.kill(actor)
        self.actors = []
