"""Engine.stream: text deltas of the reported answer as it is decoded, on tiny random models.

The reference is ``Engine.answer`` on a second engine over the same model (not streamed): the
concatenated deltas must be its answer exactly, for every method that streams, with stop strings
that cut mid-answer, and the first delta must come while the answer is still being decoded.
"""

from __future__ import annotations

import pytest

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.queries import Query
from selfensemble.engine.streaming import TextDeltas
from selfensemble.errors import ConfigError

QUESTIONS = [
    ["What is the capital of France?", "Which city is the capital of France?", "Name France's capital."],
    ["Who wrote Hamlet?", "Hamlet was written by whom?", "Which author wrote the play Hamlet?"],
    ["What do bees make?", "Bees produce what?", "What is made by bees?"],
]
GEN = GenerationConfig(max_new_tokens=24, stop_at_newline=False)


@pytest.fixture(scope="module")
def engines(random_lm):
    lm = random_lm("llama")
    return Engine(lm, EngineConfig(attention="sdpa")), Engine(lm, EngineConfig(attention="sdpa"))


@pytest.mark.parametrize("method", ["origin", "avg", "flex", "per_prompt"])
def test_deltas_concatenate_to_the_answer(engines, fewshot_fmt, method):
    streamer, reference = engines
    for prompts in QUESTIONS:
        expected = reference.answer(prompts, method, GEN, fewshot_fmt)
        assert len(expected.answer) > 8, "too short an answer to see streaming"
        s = streamer.stream(prompts, method, GEN, fewshot_fmt)
        deltas = list(s)
        assert "".join(deltas) == expected.answer
        assert len(deltas) > 1 and all(deltas)
        assert s.answer.answer == expected.answer and s.answer.tokens == expected.tokens
        assert s.answer.attention == expected.attention and s.answer.per_prompt == expected.per_prompt


@pytest.mark.parametrize("method", ["avg", "flex"])
def test_stop_strings_and_newlines_are_held_back(engines, fewshot_fmt, method):
    """A stop string taken from the middle of the unstopped answer: what comes after it (or any
    part of it) must never be sent, nor a space before it; the same for a newline that ends the
    answer. A stop string that begins with the answer's last characters but never comes: they are
    held back to the end, then sent."""
    streamer, reference = engines
    checked = 0
    for prompts in QUESTIONS:
        full = reference.answer(prompts, method, GEN, fewshot_fmt).answer
        stop = full[len(full) // 2:len(full) // 2 + 3]
        space = full.index(" ", 1)  # a stop right after a space: the space is sent only if a word follows
        for gen in (GenerationConfig(max_new_tokens=24, stop_at_newline=False, stop_strings=(stop,)),
                    GenerationConfig(max_new_tokens=24, stop_at_newline=False, stop_strings=(full[space + 1:space + 3],)),
                    GenerationConfig(max_new_tokens=24),
                    GenerationConfig(max_new_tokens=24, stop_at_newline=False, stop_strings=(full[-2:] + "\x00",))):
            expected = reference.answer(prompts, method, gen, fewshot_fmt)
            assert "".join(streamer.stream(prompts, method, gen, fewshot_fmt)) == expected.answer, (gen, stop)
            checked += expected.finish == "stop"
    assert checked >= 2, "the stop strings never ended an answer"


def test_deltas_come_while_the_answer_is_decoded(engines, fewshot_fmt):
    """Each delta is sent at the step that fixes it: the first long before the last token."""
    streamer, reference = engines
    seen: list[tuple[int, str]] = []
    deltas = TextDeltas(streamer.lm.tokenizer, GEN, lambda d: seen.append((len(deltas.tokens), d)))
    ans = streamer.answer_many([Query(QUESTIONS[0], fewshot_fmt)], "flex", GEN, streams=[deltas])[0]
    assert "".join(d for _, d in seen) == ans.answer
    assert seen[0][0] < len(ans.tokens) // 2 and len({n for n, _ in seen}) > 2


def test_leaving_the_loop_stops_the_decode_at_the_next_step(engines, fewshot_fmt):
    streamer, reference = engines
    gen = GenerationConfig(max_new_tokens=200, stop_at_newline=False)
    assert len(reference.answer(QUESTIONS[1], "avg", gen, fewshot_fmt).tokens) > 100  # a long answer unless stopped
    before = streamer.stats["decode_steps"]
    s = streamer.stream(QUESTIONS[1], "avg", gen, fewshot_fmt)
    for _ in s:
        break
    s.close()
    assert s.answer is None
    assert streamer.stats["decode_steps"] - before < 20  # stopped, not decoded to 200 tokens


def test_vote_refuses_to_stream(engines, fewshot_fmt):
    with pytest.raises(ConfigError, match="vote cannot stream"):
        engines[0].stream(QUESTIONS[0], "vote", GEN, fewshot_fmt)


def test_bad_prompts_are_refused_before_anything_runs(engines):
    from selfensemble.errors import SelfEnsembleError

    with pytest.raises(SelfEnsembleError):
        engines[0].stream(["What?", "  "], "avg")
