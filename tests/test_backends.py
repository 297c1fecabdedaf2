"""The Backend protocol: both backends meet it, a backend missing a member does not, and the Ray
backend's code path (EngineWorker.answer on the actors, RayBackend's passes on the driver) answers
as the engine does, without Ray: RayBackend.over_pool runs its passes on an in-process pool."""

from __future__ import annotations

import typing

import pytest

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.config.load import LoadSpec
from selfensemble.engine.engine import Engine
from selfensemble.engine.prompts import PromptFormat
from selfensemble.engine.queries import Query
from selfensemble.pipeline.backends import Backend, BackendConfig, as_backend
from selfensemble.pipeline.backends.local import LocalBackend
from selfensemble.pipeline.backends.ray import EngineWorker, RayBackend
from selfensemble.pipeline.backends.ray_pool import Batch, BatchResult, batches

MEMBERS = sorted(typing.get_protocol_members(Backend) if hasattr(typing, "get_protocol_members")
                 else typing._get_protocol_attrs(Backend))  # Python < 3.13: the private helper isinstance uses


@pytest.fixture
def engine(random_lm) -> Engine:
    return Engine(random_lm("llama"), EngineConfig(attention="sdpa", batch_size=2))


class InProcessPool:
    """The Pool protocol without Ray: ``answer`` (an EngineWorker's, by default) runs each batch here,
    in order; ``repeat`` yields each result that many times (Ray retrying a batch that had finished)."""

    def __init__(self, answer=None, repeat: int = 1):
        self.answer, self.repeat = answer, repeat
        self.starts, self.killed, self.batches = 0, False, []

    def run(self, work: list[Batch], method, gen):
        for indices, queries, counts in work:
            self.batches.append(indices)
            result: BatchResult = self.answer(indices, queries, counts, method, gen)
            yield from [result] * self.repeat

    def kill(self) -> None:
        self.killed = True


def _ray_backend(config: EngineConfig, workers: int = 2, pool: InProcessPool | None = None) -> RayBackend:
    """A RayBackend on an in-process pool (no Ray started)."""
    return RayBackend.over_pool(LoadSpec("random:llama"), config, BackendConfig(name="ray", workers=workers),
                                pool or InProcessPool())


def test_the_protocol_names_what_a_run_uses():
    assert set(MEMBERS) == {"config", "workers", "warm_up", "stats", "attention_known", "attention_paths",
                            "attention_note", "compile_count", "answer_many", "sample", "provenance", "close"}


def test_both_backends_satisfy_the_protocol(engine):
    local: Backend = LocalBackend(engine)  # the static check: a type checker reads these assignments
    ray: Backend = _ray_backend(EngineConfig(batch_size=4))
    assert isinstance(local, Backend) and isinstance(ray, Backend)
    assert all(hasattr(LocalBackend, m) for m in MEMBERS)  # the class's own, not set by chance later
    assert all(hasattr(RayBackend, m) for m in MEMBERS if m not in ("stats", "config", "compile_count"))
    assert (local.workers, ray.workers) == (1, 2)
    assert local.attention_known and not ray.attention_known  # a pool learns its path from its answers
    assert local.warm_up and not ray.warm_up
    assert ray.config == EngineConfig(batch_size=4)  # the real EngineConfig, as the actors get it


@pytest.mark.parametrize("member", MEMBERS)
def test_a_backend_missing_a_member_fails_the_check(engine, member):
    """The control: LocalBackend with any one protocol member taken away is no Backend."""
    assert member in vars(LocalBackend)  # defined on the class, so taking it away removes it
    body = {k: v for k, v in vars(LocalBackend).items() if k != member and not k.startswith("__")}
    partial = type("Partial", (), {**body, "__init__": LocalBackend.__init__})(engine)
    assert not isinstance(partial, Backend)


def test_an_engine_is_wrapped_and_a_backend_passes_through(engine):
    assert not isinstance(engine, Backend)  # no workers / provenance: a run wraps it
    wrapped = as_backend(engine)
    assert isinstance(wrapped, LocalBackend) and wrapped.engine is engine
    assert as_backend(wrapped) is wrapped
    ray = _ray_backend(EngineConfig())
    assert as_backend(ray) is ray
    assert wrapped.provenance() == {"backend": "local", "workers": 1}


def test_only_an_owned_engine_is_closed():
    class Closable:
        closed = False

        def close(self):
            self.closed = True

    mine, theirs = Closable(), Closable()
    LocalBackend(mine, owned=True).close()
    LocalBackend(theirs).close()
    assert mine.closed and not theirs.closed


def test_a_saved_batch_is_one_engine_batch_per_worker(engine):
    from selfensemble.pipeline.confidence import batch_size

    assert batch_size(LocalBackend(engine)) == 2
    assert batch_size(_ray_backend(EngineConfig(batch_size=4), workers=3)) == 12


def _queries() -> list[Query]:
    fmt = PromptFormat(instruction="Answer the question.")
    return [Query([q], fmt, seed=i) for i, q in enumerate(("What is the capital of France?",
                                                           "Who wrote Hamlet?", "What is 2 + 2?"))]


def test_the_ray_backend_samples_as_the_engine_does_alone(engine):
    """A sample pass (EngineWorker's on each batch, the driver's collecting) against Engine.sample
    one query at a time: each slot holds its query's list, and the attention path is learnt."""
    worker = EngineWorker(LoadSpec("random:llama"), EngineConfig(attention="sdpa", batch_size=2), threads=1)
    queries, counts = _queries(), [2, 0, 3]
    gen = GenerationConfig(max_new_tokens=4, do_sample=True, temperature=1.0, seed=5)
    alone = [[a.answer for a in worker.engine.sample([q], [n], gen)[0]] for q, n in zip(queries, counts, strict=True)]
    pool = InProcessPool(worker.answer)
    backend = _ray_backend(EngineConfig(attention="sdpa", batch_size=2), pool=pool)
    assert not backend.attention_known
    got = backend.sample(queries, counts, gen)
    assert [[a.answer for a in r] for r in got] == alone and [len(g) for g in got] == counts
    assert pool.batches == [[0, 1], [2]] and backend.passes == 1  # engine batches of batch_size
    assert backend.attention_known and backend.attention_paths == {"prefill": "sdpa-dense", "decode": "sdpa-dense"}
    assert backend.stats["calls"] > 0
    backend.close()
    assert pool.killed


def test_the_ray_actor_answers_as_the_engine_does(engine):
    worker = EngineWorker(LoadSpec("random:llama"), EngineConfig(attention="sdpa", batch_size=2), threads=1)
    queries, gen = _queries(), GenerationConfig(max_new_tokens=4)
    indices, answers, delta = worker.answer([5, 6, 7], queries, None, "origin", gen)
    assert indices == [5, 6, 7] and delta["calls"] > 0 and delta["compiles"] == 0
    assert [a.answer for a in answers] == [worker.engine.answer_many([q], "origin", gen)[0].answer for q in queries]


def test_a_worker_that_cannot_build_raises_with_its_first_batch():
    """The actor's constructor never raises (Ray would report a bare actor death); ``answer`` does."""
    from selfensemble.errors import SelfEnsembleError

    worker = EngineWorker(LoadSpec("random:nope"), EngineConfig(), threads=1)
    with pytest.raises(SelfEnsembleError, match="Unknown random architecture 'nope'"):
        worker.answer([0], _queries()[:1], None, "origin", GenerationConfig())


def test_a_pass_is_cut_into_engine_batches_in_order():
    qs = list("abcdefg")
    assert batches(7, 3, qs, None) == [([0, 1, 2], ["a", "b", "c"], None), ([3, 4, 5], ["d", "e", "f"], None),
                                       ([6], ["g"], None)]
    assert [b[2] for b in batches(7, 3, qs, [1, 2, 3, 4, 5, 6, 7])] == [[1, 2, 3], [4, 5, 6], [7]]


def test_a_batch_answered_twice_is_written_once():
    """The driver keeps the first answer for an index and calls on_done once for it."""
    class Ans:
        attention, attention_note = {"prefill": "sdpa-dense", "decode": "sdpa-dense"}, "sdpa (dense)"

    made: list = []

    def answer(indices, queries, counts, method, gen):
        made.append([Ans() for _ in indices])
        return indices, made[-1], {"calls": 1, "compiles": 0}

    pool, done = InProcessPool(answer, repeat=2), []
    backend = _ray_backend(EngineConfig(batch_size=2), pool=pool)
    got = backend.answer_many(_queries()[:2], "origin", on_done=lambda i, a: done.append((i, a)))
    assert len(made) == 1 and got == made[0] and done == [(0, made[0][0]), (1, made[0][1])]
    assert backend.stats == {"calls": 2}  # the work itself counted twice (the pool yielded it twice)


def test_ray_sample_checks_its_counts_before_any_pass():
    from selfensemble.errors import SelfEnsembleError

    backend = _ray_backend(EngineConfig())
    with pytest.raises(SelfEnsembleError, match="one count >= 0 per query"):
        backend.sample(_queries(), [1, 2], GenerationConfig())
    assert backend.passes == 0
