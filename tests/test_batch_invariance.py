"""A row's result never depends on its batch neighbours.

One parametrised test: the items of a case are run in one batch, in that batch reversed (another
place, other neighbours) and each alone (on the embedded model, the first only), and every item's
result must be the same in all three. The cases cover each way a batch is formed:

- ``select``: the token selector (engine/sampling.py) on rows of logits, each with its own seed;
- ``answer``: ``Engine.answer_many`` for each row layout (origin: one row; avg: a group of rows fused
  per step; flex: one packed row; per_prompt: a row per prompt) on every random architecture,
  greedy and sampled, with SDPA and with FlexAttention (gemma), and on the embedded model with both
  kernels (slow);
- ``stream``: ``answer_many`` with a text stream per query (each query's deltas are its own answer);
- ``sample``: ``Engine.sample`` (K candidates per query from one prefill);
- ``paraphrase``: model-written paraphrases (``gated_paraphrases``), with the gate off and on: the
  raw candidates, the kept paraphrases and the gate's verdicts.

The engine's queries mix what a batch can hold: one to three prompts, the shared few-shot prefix,
another prefix, per-query demonstrations (a prefix of their own), and one question twice under two
query seeds. Sampled decoding stops at a stop string, so rows finish at different steps and the
batch drops finished rows mid-decode (checked: it did). Controls: the items' results differ from
one another (a model blind to its input would make every check pass), the twin question gets the
same answer greedy and its own draw sampled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
import torch

from conftest import ARCHS, FEW_SHOT
from selfensemble.config.engine import EngineConfig
from selfensemble.config.gate import GateConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.data.base import Example
from selfensemble.engine.engine import Engine
from selfensemble.engine.prompts import PromptFormat
from selfensemble.engine.queries import Query
from selfensemble.engine.sampling import sample_keys, select_tokens
from selfensemble.engine.streaming import TextDeltas
from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig, gated_paraphrases


def _own_demos(i: int) -> PromptFormat:
    """A few-shot format unique to one query (per-item demonstrations give each query its own prefix)."""
    return PromptFormat(instruction="Answer briefly.", examples=(
        Example(("Capital of Italy?",), "Rome"), Example((f"What is {i} plus {i}?",), str(2 * i))))


QUERIES = [
    Query(["Who wrote the novel Pride and Prejudice?", "Pride and Prejudice was written by whom?"], FEW_SHOT),
    Query(["What is the boiling point of water at sea level in degrees Celsius?",
           "At sea level, water boils at how many degrees Celsius, on the Celsius scale?",
           "Water at sea level boils at what temperature in Celsius?"], FEW_SHOT),
    Query(["Who is Zeus?"], FEW_SHOT, seed=7),
    Query(["What is the capital of Japan?", "Japan's capital is which city?"], PromptFormat(instruction="Reply briefly.")),
    Query(["Who wrote Hamlet?", "Hamlet's author?"], _own_demos(1)),
    Query(["Who is Zeus?"], FEW_SHOT, seed=8),
]
TWINS = (2, 5)  # one question under two query seeds
COUNTS = [3, 1, 2, 0, 1, 2]  # Engine.sample: candidates per query (one asks for none; the twins alike)

GREEDY = GenerationConfig(max_new_tokens=8, stop_at_newline=False)
SAMPLED = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.95, seed=5,
                           stop_at_newline=False, stop_strings=("e",))


@dataclass(eq=False)
class Got:
    """One item's result: ``exact`` must match exactly, ``logprobs`` to 1e-3 (padding moves their last bits)."""

    exact: object
    logprobs: tuple[float, ...] = ()

    def __eq__(self, other) -> bool:
        return (isinstance(other, Got) and self.exact == other.exact and len(self.logprobs) == len(other.logprobs)
                and all(abs(a - b) <= 1e-3 for a, b in zip(self.logprobs, other.logprobs, strict=True)))

    __hash__ = None  # type: ignore[assignment]


Runner = Callable[[Engine | None, list], list[Got]]


@dataclass
class Case:
    """One parameter: an entry point (``run``) with the items it batches, the model and the kernel."""

    id: str
    run: Runner
    items: Sequence
    arch: str | None = "llama"  # None: no model (the selector alone)
    attention: str = "sdpa"
    sampled: bool = False
    twins: bool = True  # whether TWINS index the twin question among the items
    alone: tuple[int, ...] | None = None  # the items also run alone (None: every one)
    marks: list = field(default_factory=list)


# -- the entry points: each runs a list of items on an engine, one Got per item ----------------------

def _answer(method: str, gen: GenerationConfig) -> Runner:
    def run(engine, queries):
        done: list = []
        got = engine.answer_many(queries, method, gen, on_done=lambda i, a: done.append((i, a)))
        assert sorted(i for i, _ in done) == list(range(len(queries))) and all(got[i] is a for i, a in done)
        return [Got((a.prompts, a.tokens, a.finish, a.per_prompt, a.per_prompt_generation),
                    (a.logprob, *(a.per_prompt_logprob or ()))) for a in got]

    return run


def _stream(method: str, gen: GenerationConfig) -> Runner:
    def run(engine, queries):
        sent: list[list[str]] = [[] for _ in queries]
        streams = [TextDeltas(engine.lm.tokenizer, gen, sent[i].append) for i in range(len(queries))]
        got = engine.answer_many(queries, method, gen, streams=streams)
        assert ["".join(s) for s in sent] == [a.answer for a in got]  # each stream carries its own answer
        return [Got((tuple(s), a.tokens), (a.logprob,)) for s, a in zip(sent, got, strict=True)]

    return run


def _sample(gen: GenerationConfig) -> Runner:
    def run(engine, items):
        got = engine.sample([q for q, _ in items], [n for _, n in items], gen)
        return [Got(tuple(tuple(c.tokens) for c in cands), tuple(c.logprob for c in cands)) for cands in got]

    return run


class _Recording:
    """Engine-like: Engine.sample, recording each question's raw candidates in the order drawn."""

    def __init__(self, engine: Engine):
        self.engine, self.config, self.raw = engine, engine.config, {}

    def sample(self, queries, n_samples, gen):
        got = self.engine.sample(queries, n_samples, gen)
        for q, cands in zip(queries, got, strict=True):
            self.raw.setdefault(q.prompts[0], []).extend(c.generation for c in cands)
        return got


PARAPHRASED = ["what country is the grand bahama island in?", "who played luke skywalker?",
               "where is the eiffel tower?", "what do pandas eat?", "who wrote hamlet?",
               "name the largest planet"]  # the last asks nothing: its candidates are sampled apart


def _paraphrase(gate: GateConfig | None) -> Runner:
    import selfensemble.pipeline.paraphrase.writer as writer

    cfg = ParaphraseConfig(num_paraphrases=3, max_new_tokens=6, attempts=2, formats=2)

    def run(engine, questions):
        recording = _Recording(engine)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(writer, "acceptable", lambda text, original: True)  # a random model writes no questions
            entries = gated_paraphrases(recording, questions, cfg, gate)
        assert all(e["paraphrases"] for e in entries)
        return [Got((json.dumps(e, sort_keys=True), tuple(recording.raw[q]))) for e, q in zip(entries, questions,
                                                                                                  strict=True)]

    return run


SELECT_LOGP = torch.log_softmax(torch.randn(8, 500, generator=torch.Generator().manual_seed(1)) * 2, -1)
SELECT_SEEDS = [11, 12, 13, 2**40 + 1, 99, 7, 0, 2**63 - 1]
SELECT_KNOBS = [{"do_sample": False}, {"temperature": 1.3}, {"top_k": 20}, {"top_p": 0.9}, {"top_p": 0.5, "top_k": 50}]


def _select(engine, rows: list[int]) -> list[Got]:
    """Rows of logits, each with its own seed, 30 steps under each knob set."""
    keys = sample_keys([SELECT_SEEDS[r] for r in rows])
    picks = [[select_tokens(SELECT_LOGP[rows], **{"do_sample": True, **knobs}, keys=keys, step=t).tolist()
              for t in range(30)] for knobs in SELECT_KNOBS]
    return [Got(tuple(tuple(step[i] for step in steps) for steps in picks)) for i in range(len(rows))]


# -- the cases ---------------------------------------------------------------------------------------

ROW_LAYOUTS = ("origin", "avg", "flex", "per_prompt")  # one row; a fused group; one fused row; a row per prompt
# every architecture runs every row layout; greedy and sampled on llama, one of them on the others.
# FlexAttention (eager, the slow one) runs the prefill only, so sampling (streams, dropped rows: the
# decode) is the same code under either kernel: gemma-flex runs greedy.
MODELS = [("llama", "sdpa", (False, True)), ("gemma", "flex", (False,)), ("qwen2", "sdpa", (False,)),
          ("phi3", "sdpa", (True,))]
assert {arch for arch, _, _ in MODELS} == set(ARCHS)


def _cases() -> list:
    cases = [Case("select", _select, list(range(8)), arch=None, twins=False)]
    for arch, attention, decodings in MODELS:
        for method in ROW_LAYOUTS:
            for sampled in decodings:
                cases.append(Case(f"answer-{method}-{'sampled' if sampled else 'greedy'}-{arch}-{attention}",
                                  _answer(method, SAMPLED if sampled else GREEDY), QUERIES, arch, attention, sampled))
    for attention in ("sdpa", "flex"):  # the embedded model: its first query alone (a 135M model is slow on a CPU)
        for method in ("origin", "avg", "flex"):
            cases.append(Case(f"answer-{method}-greedy-smollm2-{attention}", _answer(method, GREEDY), QUERIES,
                              "smollm2", attention, alone=(0,), marks=[pytest.mark.slow]))
    cases += [Case("stream-avg-greedy", _stream("avg", GREEDY), QUERIES),
              Case("stream-flex-sampled", _stream("flex", SAMPLED), QUERIES, sampled=True),
              Case("sample-greedy", _sample(GREEDY), list(zip(QUERIES, COUNTS, strict=True))),
              Case("sample-sampled", _sample(SAMPLED), list(zip(QUERIES, COUNTS, strict=True)), sampled=True),
              Case("paraphrase-no-gate", _paraphrase(None), PARAPHRASED, sampled=True, twins=False),
              Case("paraphrase-gate", _paraphrase(GateConfig(min_similarity=-1.0)), PARAPHRASED, sampled=True,
                   twins=False)]
    return [pytest.param(c, id=c.id, marks=c.marks) for c in cases]


@pytest.fixture
def drops(monkeypatch) -> list[int]:
    """Rows left after each mid-decode drop of finished rows (the cache's batch_select_indices)."""
    from selfensemble.engine.cache import GrowingLayer

    seen: list[int] = []
    select = GrowingLayer.batch_select_indices
    monkeypatch.setattr(GrowingLayer, "batch_select_indices", lambda self, i: (seen.append(len(i)), select(self, i))[1])
    return seen


@pytest.mark.parametrize("case", _cases())
def test_a_rows_result_is_the_same_alone_and_in_any_batch(case: Case, request, drops, eager_flex):
    if case.arch is None:
        lm = None
    elif case.arch == "smollm2":
        lm = request.getfixturevalue("smollm")
    else:
        lm = request.getfixturevalue("random_lm")(case.arch)

    def engine(batch_size: int) -> Engine | None:
        return None if lm is None else Engine(lm, EngineConfig(attention=case.attention, batch_size=batch_size))

    items = list(case.items)
    batched = case.run(engine(8), items)
    if case.sampled and lm is not None:
        assert drops, "no finished row was dropped mid-decode: the case does not exercise the drop"
    assert case.run(engine(8), items[::-1])[::-1] == batched
    alone = engine(1)
    for i in range(len(items)) if case.alone is None else case.alone:
        assert case.run(alone, [items[i]]) == [batched[i]], items[i]
    # controls: results depend on the item; the twin question is one answer greedy, two draws sampled
    assert len({repr(g.exact) for g in batched}) >= len(items) // 2 + 1, [g.exact for g in batched]
    if case.twins:
        a, b = TWINS
        assert (batched[a] == batched[b]) != case.sampled
