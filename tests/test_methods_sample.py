"""Engine.sample: K candidates of one prompt decoded from its one prefill, each exactly the origin
answer asked alone with the candidate's own stream, whatever shares the batch (a batch that drops
finished rows mid-decode included: tests/test_batch_invariance.py)."""

from __future__ import annotations

import pytest

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.decoding import candidate_seed
from selfensemble.engine.engine import Engine
from selfensemble.engine.prompts import build_parts
from selfensemble.engine.queries import Query
from selfensemble.engine.reference import hf_greedy
from selfensemble.errors import SelfEnsembleError

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "Where is Mount Kilimanjaro?",
             "What currency does Japan use?", "Who painted the Mona Lisa?", "When did the war end?",
             "What do pandas eat?", "How tall is the Eiffel Tower?"]
COUNTS = [3, 1, 2, 4, 0, 3, 2, 1]  # a query may ask for none
SAMPLED = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=1.5, top_p=0.95, seed=3, stop_at_newline=False)
GREEDY = GenerationConfig(max_new_tokens=6, stop_at_newline=False)


def _queries(fmt):
    return [Query([q], fmt, seed=None if i % 2 else 100 + i) for i, q in enumerate(QUESTIONS)]


@pytest.mark.parametrize("gen", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
def test_each_sample_is_the_origin_answer_alone_with_its_stream(random_lm, fewshot_fmt, gen):
    """Engine.sample in a batch of 8 queries against Engine.answer, one candidate at a time (that a
    query's samples are the same alone: tests/test_batch_invariance.py)."""
    lm = random_lm("llama")
    queries = _queries(fewshot_fmt)
    got = Engine(lm, EngineConfig(attention="sdpa", batch_size=8)).sample(queries, COUNTS, gen)
    assert [len(g) for g in got] == COUNTS
    alone = Engine(lm, EngineConfig(attention="sdpa", batch_size=1))
    for q, cands in zip(queries, got, strict=True):
        for j, c in enumerate(cands):
            ref = alone.answer(q.prompts, "origin", gen, q.fmt, seed=candidate_seed(q.stream_key, j))
            assert c.tokens == ref.tokens and c.method == "origin"
            assert c.logprob == pytest.approx(ref.logprob, abs=1e-3)
    texts = [tuple(c.tokens) for g in got for c in g]
    if gen.do_sample:  # each candidate its own stream: a query's samples are not copies of one another
        assert all(len({tuple(c.tokens) for c in g}) > 1 for g in got if len(g) >= 3)
    else:  # greedy: every sample is transformers' own greedy continuation of the prompt
        for q, cands in zip(queries, got, strict=True):
            p = build_parts(lm.tokenizer, q.fmt, list(q.prompts))
            ref = hf_greedy(lm.model, p.prefix + p.segments[0] + p.cue, gen.max_new_tokens, lm.eos_token_ids)
            assert all(c.tokens == ref for c in cands)
    assert len(set(texts)) > 1


def test_sample_prefills_each_prompt_once(random_lm, fewshot_fmt):
    lm = random_lm("llama")
    queries = _queries(fewshot_fmt)
    once = Engine(lm, EngineConfig(attention="sdpa", batch_size=4))
    once.answer_many(queries, "origin", GREEDY)
    eng = Engine(lm, EngineConfig(attention="sdpa", batch_size=4))
    eng.sample(queries, 5, SAMPLED)
    assert eng.stats["prefill_tokens"] == once.stats["prefill_tokens"]  # not 5× as many
    assert eng.stats["calls"] == 2 and eng.stats["decoded_rows"] == 5 * len(queries)


def test_sample_rejects_bad_counts(random_lm, fewshot_fmt):
    eng = Engine(random_lm("llama"), EngineConfig(attention="sdpa"))
    with pytest.raises(SelfEnsembleError, match="one count"):
        eng.sample(_queries(fewshot_fmt), [1, 2], SAMPLED)
    with pytest.raises(SelfEnsembleError, match="one count"):
        eng.sample(_queries(fewshot_fmt)[:1], [-1], SAMPLED)
