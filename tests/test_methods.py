"""Methods through the Engine: flex with one prompt is origin, fusion is real (order-free, not the
last paraphrase), answers do not depend on prefix reuse, how queries are cut into chunks, bad input
is a clear error. (Answers do not depend on batching either: tests/test_batch_invariance.py.)"""

from __future__ import annotations

import pytest
import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.packing import pack_row
from selfensemble.engine.prompts import PromptFormat, build_parts
from selfensemble.engine.queries import Query
from selfensemble.engine.reference import row_logits
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import METHODS, check_method, weighted_methods

GEN = GenerationConfig(max_new_tokens=6, stop_at_newline=False)
ONE = ["What is the capital of France?"]


KNOBS_ON = dict(rescale=True, fusion_temperature=0.5, fusion_scale=0.7)


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
@pytest.mark.parametrize("layout, reuse_prefix", [("shared", True), ("full", True), ("full", False)])
def test_flex_with_one_prompt_is_origin(any_lm, fewshot_fmt, layout, reuse_prefix, attention, eager_flex):
    """With one prompt every fusion knob is the identity and flex is origin, token for token.

    With layout "full" and no prefix reuse the flex row differs from the origin row (the prefix is
    part of the paraphrase segment, not SHARED), so a flex-specific mask or knob bug shows here.
    """
    from selfensemble.engine.rows import plan_rows

    cfg = EngineConfig(attention=attention, layout=layout, reuse_prefix=reuse_prefix, **KNOBS_ON)
    engine = Engine(any_lm, cfg)
    origin = engine.answer(ONE, "origin", GEN, fewshot_fmt)
    flex = engine.answer(ONE, "flex", GEN, fewshot_fmt)
    assert flex.tokens == origin.tokens and len(origin.tokens) >= 4
    assert flex.logprob == pytest.approx(origin.logprob, abs=1e-3)
    if layout == "full" and not reuse_prefix:
        parts = build_parts(any_lm.tokenizer, fewshot_fmt, ONE)
        rows = [plan_rows(m, parts, None, cfg, cached_prefix=False).rows[0] for m in ("origin", "flex")]
        assert rows[0].tokens == rows[1].tokens and rows[0].segments != rows[1].segments
    # per_prompt / avg / max with one prompt are origin as well
    for method in ("per_prompt", "avg", "max"):
        assert engine.answer(ONE, method, GEN, fewshot_fmt).tokens == origin.tokens, method


def test_one_prompt_flex_check_can_fail(random_lm, fewshot_fmt):
    """Control for the test above: knobs applied at N = 1 (the bug it guards against) change the answer."""
    from selfensemble.engine.attention.masks import AttentionFusion
    from selfensemble.engine.cache import new_cache
    from selfensemble.engine.decoding import generate
    from selfensemble.engine.packing import PackedBatch
    from selfensemble.engine.rows import plan_rows
    from selfensemble.methods import group_fusion

    lm = random_lm("llama")
    cfg = EngineConfig(attention="sdpa", layout="full", reuse_prefix=False, **KNOBS_ON)
    row = plan_rows("flex", build_parts(lm.tokenizer, fewshot_fmt, ONE), None, cfg, cached_prefix=False).rows[0]
    batch = PackedBatch.from_rows([row])
    knobs = AttentionFusion(0.5, 0.7, False)
    with torch.inference_mode():
        got = [generate(lm.model, lm.tokenizer, batch, new_cache(lm.model.config.num_hidden_layers,
                                                                  len(row.tokens) + GEN.max_new_tokens),
                        [[0]], group_fusion.identity_groups, GEN, attention="sdpa", eos_ids=lm.eos_token_ids, fusion=knobs,
                        fused_n=[n])[0].tokens for n in (1, 2)]  # n=2 on a 1-prompt row = knobs wrongly on
    assert got[0] == Engine(lm, cfg).answer(ONE, "origin", GEN, fewshot_fmt).tokens
    assert got[0] != got[1]


def test_methods_differ_on_random_model(random_lm, fewshot_fmt):
    """Control for the test above: with several prompts the methods do give different tokens."""
    engine = Engine(random_lm("llama"), EngineConfig(attention="sdpa"))
    prompts = ONE + ["Which city is the capital of France?", "Name France's capital city."]
    got = {m: tuple(engine.answer(prompts, m, GEN, fewshot_fmt).tokens) for m in ("origin", "avg", "flex")}
    assert len(set(got.values())) == 3, got


def test_per_prompt_and_vote(random_lm, fewshot_fmt):
    lm = random_lm("phi3")
    engine = Engine(lm, EngineConfig(attention="sdpa"))
    prompts = ONE + ["Which city is the capital of France?"]
    gen = GenerationConfig(max_new_tokens=4)
    per = engine.answer(prompts, "per_prompt", gen, fewshot_fmt)
    singles = [engine.answer([p], "origin", gen, fewshot_fmt).answer for p in prompts]
    assert per.per_prompt == singles
    assert per.answer == singles[0]
    vote = engine.answer(prompts, "vote", gen, fewshot_fmt)
    assert vote.per_prompt == singles and vote.answer in singles


# --------------------------------------------------------------------------- fusion is real

PERMUTE = [
    ["What is the capital of France?", "Which city is the capital of France?", "France's capital city is which city?"],
    ["Who painted the Mona Lisa?", "The Mona Lisa was painted by whom?", "Which artist painted the Mona Lisa?"],
    ["What is the largest ocean on Earth?", "Which ocean is the biggest?", "Name the largest ocean in the world."],
]


@pytest.mark.slow
@pytest.mark.parametrize("prompts", PERMUTE, ids=["france", "mona-lisa", "ocean"])
def test_flex_answer_does_not_depend_on_paraphrase_order(smollm, fewshot_fmt, prompts):
    engine = Engine(smollm, EngineConfig(attention="sdpa", positions="restart"))
    gen = GenerationConfig(max_new_tokens=6, stop_at_newline=False)
    base = engine.answer(prompts, "flex", gen, fewshot_fmt)
    for order in ([2, 0, 1], [1, 2, 0]):
        assert engine.answer([prompts[i] for i in order], "flex", gen, fewshot_fmt).tokens == base.tokens


@pytest.mark.slow
def test_shared_cue_fuses_while_a_per_segment_cue_is_just_the_last_paraphrase(smollm, fewshot_fmt):
    """Two paraphrases ask about France, the last about Germany.

    The shared cue sees all three and answers Paris; packing each prompt with its own "A:" and
    reading the last position (the cue trap) gives exactly the last paraphrase's own answer.
    """
    prompts = ["What is the capital of France?", "Which city is the capital of France?",
               "What is the capital of Germany?"]
    tok = smollm.tokenizer
    engine = Engine(smollm, EngineConfig(attention="sdpa", positions="restart"))
    gen = GenerationConfig(max_new_tokens=6)
    fused = engine.answer(prompts, "flex", gen, fewshot_fmt)
    last_alone = engine.answer(prompts[-1:], "origin", gen, fewshot_fmt)
    assert fused.answer == "Paris"
    assert last_alone.answer == "Berlin"

    parts = build_parts(tok, fewshot_fmt, prompts)
    trap = pack_row(parts.prefix, [seg + parts.cue for seg in parts.segments], [])  # no shared cue
    trap_logits = row_logits(smollm.model, trap)
    alone_logits = row_logits(smollm.model, pack_row(parts.prefix, [parts.segments[-1]], parts.cue))
    torch.testing.assert_close(trap_logits, alone_logits, atol=1e-4, rtol=1e-5)
    assert int(trap_logits.argmax()) == last_alone.tokens[0] != fused.tokens[0]


# --------------------------------------------------------------------------- prefix reuse

TARGET = ["Who wrote the novel Pride and Prejudice?", "Pride and Prejudice was written by whom?"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["origin", "avg", "flex"])
def test_prefix_reuse_does_not_change_answers(smollm, fewshot_fmt, method):
    gen = GenerationConfig(max_new_tokens=6, stop_at_newline=False)
    reuse = Engine(smollm, EngineConfig(attention="sdpa", reuse_prefix=True))
    fresh = Engine(smollm, EngineConfig(attention="sdpa", reuse_prefix=False))
    a, b = reuse.answer(TARGET, method, gen, fewshot_fmt), fresh.answer(TARGET, method, gen, fewshot_fmt)
    assert a.tokens == b.tokens
    assert reuse.stats["prefix_tokens_encoded"] > 0 and fresh.stats["prefix_tokens_encoded"] == 0
    # the prefix is counted once with reuse, once per row without
    assert a.prefill_tokens <= b.prefill_tokens


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def engine(random_lm):
    return Engine(random_lm("llama"), EngineConfig(attention="sdpa"))


def test_empty_prompt_list(engine):
    with pytest.raises(SelfEnsembleError, match="No prompts given"):
        engine.answer([], "flex")


def test_whitespace_paraphrase(engine):
    with pytest.raises(SelfEnsembleError, match="Prompt 1 is empty or whitespace"):
        engine.answer(["What is the capital of France?", "  \n\t"], "avg")


def test_duplicate_paraphrases_are_dropped_with_a_note(engine, fewshot_fmt):
    prompts = ONE + ["  What is the capital  of France? ", "Which city is the capital of France?", ONE[0]]
    with pytest.warns(UserWarning, match="dropped duplicate prompt 1"):
        answer = engine.answer(prompts, "avg", GEN, fewshot_fmt)
    assert answer.prompts == [ONE[0], "Which city is the capital of France?"]
    assert len(answer.notes) == 2
    assert "dropped duplicate prompt 1 (same as prompt 0)" in answer.notes[0]
    assert "dropped duplicate prompt 3 (same as prompt 0)" in answer.notes[1]
    clean = engine.answer(answer.prompts, "avg", GEN, fewshot_fmt)
    assert answer.tokens == clean.tokens and clean.notes == []


def test_all_duplicates_leave_origin(engine, fewshot_fmt):
    with pytest.warns(UserWarning):
        avg = engine.answer(ONE * 3, "avg", GEN, fewshot_fmt)
    assert avg.prompts == ONE and len(avg.notes) == 2
    assert avg.tokens == engine.answer(ONE, "origin", GEN, fewshot_fmt).tokens


def test_weights_follow_dedupe(engine, fewshot_fmt):
    """Weights are given per original prompt; a dropped duplicate drops its weight."""
    prompts = ONE + ONE + ["Which city is the capital of France?"]
    with pytest.warns(UserWarning):
        a = engine.answer(prompts, "weighted_avg", GEN, fewshot_fmt, weights=[1.0, 5.0, 0.0])
    assert a.tokens == engine.answer(ONE, "origin", GEN, fewshot_fmt).tokens


@pytest.mark.parametrize("layout, hint", [("shared", "few-shot examples."), ("full", "or layout 'shared'.")])
def test_prompt_longer_than_context(random_lm, fewshot_fmt, monkeypatch, layout, hint):
    lm = random_lm("qwen2")
    short = (["Capital of France?"], "flex", GenerationConfig(max_new_tokens=2), PromptFormat())
    want = Engine(lm, EngineConfig(attention="sdpa", layout=layout)).answer(*short)
    monkeypatch.setattr(lm.model.config, "max_position_embeddings", 64)
    assert lm.max_context == 64
    engine = Engine(lm, EngineConfig(attention="sdpa", layout=layout))
    with pytest.raises(SelfEnsembleError, match="Prompt too long for the model's context") as err:
        engine.answer(ONE + ["Which city is the capital of France?"], "flex", GEN, fewshot_fmt)
    assert "> 64" in str(err.value) and str(err.value).endswith(hint)
    # a short prompt without few-shot still fits
    got = engine.answer(*short)
    assert got.prefill_tokens + 2 <= 64 and got.tokens == want.tokens and got.generation == want.generation


@pytest.mark.parametrize("method", weighted_methods())
def test_weights_missing_or_wrong(engine, method):
    prompts = ONE + ["Which city is the capital of France?"]
    with pytest.raises(SelfEnsembleError, match=f"Method {method} needs one weight per prompt"):
        engine.answer(prompts, method)
    with pytest.raises(SelfEnsembleError, match="got 3 weights for 2 prompts"):
        engine.answer(prompts, method, weights=[1, 2, 3])
    with pytest.raises(SelfEnsembleError, match="non-negative"):
        engine.answer(prompts, method, weights=[1, -1])
    with pytest.raises(SelfEnsembleError, match="not all zero"):
        engine.answer(prompts, method, weights=[0, 0])


def test_unknown_method(engine):
    with pytest.raises(SelfEnsembleError, match="Unknown method 'flx'.*Did you mean 'flex'"):
        engine.answer(ONE, "flx")
    assert [check_method(m) for m in METHODS] == list(METHODS)


@pytest.mark.parametrize("field, value, match", [("attention", "flash", "Unknown attention 'flash'"),
                                                  ("layout", "packed", "Unknown layout 'packed'"),
                                                  ("positions", "left", "Unknown positions 'left'"),
                                                  ("batch_size", 0, "batch_size must be >= 1"),
                                                  ("fusion_temperature", 0.0, "temperature must be a finite"),
                                                  ("fusion_scale", -1.0, "scale must be a finite")])
def test_bad_engine_config(field, value, match):
    with pytest.raises(SelfEnsembleError, match=match):
        EngineConfig(**{field: value})


def test_answer_record(engine, fewshot_fmt):
    a = engine.answer(ONE, "flex", GenerationConfig(max_new_tokens=3), fewshot_fmt)
    d = a.to_dict()
    assert d["method"] == "flex" and d["prompts"] == ONE and d["tokens"] == a.tokens
    assert d["prob"] == pytest.approx(a.prob) and a.prefill_tokens > len(a.tokens)
    assert engine.stats["prefill_tokens"] > 0 and engine.stats["generated_tokens"] >= len(a.tokens)


def test_full_layout_encodes_its_prefix_once_and_matches_no_reuse(random_lm, fewshot_fmt):
    """Full layout, restart positions: one encoding of the prefix serves every paraphrase's copy."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.engine import Engine

    lm = random_lm("llama")
    prompts = ["What is the capital of France?", "Which city is France's capital?", "Name France's capital."]
    gen = GenerationConfig(max_new_tokens=5, stop_at_newline=False)
    # one encoding serves every copy only when the copies sit at the same (restarted) positions
    reuse = Engine(lm, EngineConfig(attention="sdpa", layout="full", positions="restart"))
    plain = Engine(lm, EngineConfig(attention="sdpa", layout="full", positions="restart", reuse_prefix=False))
    a, b = reuse.answer(prompts, "flex", gen, fewshot_fmt), plain.answer(prompts, "flex", gen, fewshot_fmt)
    assert a.tokens == b.tokens
    assert reuse.stats["prefill_tokens"] < plain.stats["prefill_tokens"] / 2
    assert reuse.stats["prefix_tokens_encoded"] > 0 and plain.stats["prefix_tokens_encoded"] == 0


def _own_demos(i: int) -> PromptFormat:
    """A few-shot format unique to query i (per-item demonstrations give every query its own prefix)."""
    from selfensemble.data.base import Example

    return PromptFormat(instruction="Answer briefly.", examples=(
        Example(("Capital of Italy?",), "Rome"), Example((f"What is {i} plus {i}?",), str(2 * i))))


@pytest.mark.parametrize("method", ["origin", "flex", "avg", "per_prompt"])
def test_queries_with_their_own_prefix_share_a_chunk_only_in_one_row_methods(random_lm, method):
    """Queries whose prefixes differ: one-row methods batch them (prefix inside the row), others run
    each with its cached prefix (that either way each answer is the query's alone:
    tests/test_batch_invariance.py)."""
    lm = random_lm("llama")
    engine = Engine(lm, EngineConfig(attention="sdpa", batch_size=8))
    queries = [Query(["Who wrote Hamlet?", f"Hamlet's author {i}?"], _own_demos(i)) for i in range(3)]
    parts = [build_parts(lm.tokenizer, q.fmt, list(q.prompts)) for q in queries]
    chunks = list(engine.chunks(method, parts))
    assert len(chunks) == (1 if method in ("origin", "flex") else 3)
    assert sorted(i for _, _, idx in chunks for i in idx) == [0, 1, 2]


def test_queries_sharing_a_prefix_still_reuse_its_kv(random_lm, fewshot_fmt):
    lm = random_lm("llama")
    engine = Engine(lm, EngineConfig(attention="sdpa", batch_size=8))
    queries = [Query([q], fewshot_fmt) for q in ("Who wrote Hamlet?", "Capital of Peru?")]
    parts = [build_parts(lm.tokenizer, q.fmt, list(q.prompts)) for q in queries]
    [(prefix, copies, idx)] = list(engine.chunks("origin", parts))
    assert prefix == parts[0].prefix and copies == 1 and idx == [0, 1]
    engine.answer_many(queries, "origin", GEN)
    assert engine.stats["prefix_tokens_encoded"] == len(parts[0].prefix)  # once for both
