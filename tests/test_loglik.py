"""Teacher-forced continuation scoring against a from-scratch reference (no cache, no padding, no batching)."""

from __future__ import annotations

import math

import pytest
import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.attention.masks import attention_fusion
from selfensemble.engine.engine import Engine
from selfensemble.engine.loglik import score_continuations
from selfensemble.engine.packing import CUE, pack_row
from selfensemble.engine.prompts import PromptParts, build_parts
from selfensemble.engine.reference import _dense_row_mask, _fusion_terms
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import get_method

QUESTIONS = [
    ["What is the capital of France?", "Which city is the capital of France?", "Name the French capital."],
    ["Who wrote Hamlet?", "Hamlet was written by whom?", "Who is the author of the play Hamlet?"],
    ["What do bees make?", "Bees produce what?", "What substance do bees make?"],
]


@pytest.fixture(scope="module")
def lm(random_lm):
    return random_lm("llama")


@torch.inference_mode()
def _row_logprobs(model, tokens, segments, positions, cont, knobs=None) -> torch.Tensor:
    """(m, vocab) log-probs predicting each continuation token, one full forward, hand-written mask
    (with the reference decoder's attention-fusion terms when ``knobs`` apply to the row)."""
    ids = tokens + cont[:-1]
    seg = segments + [CUE] * (len(cont) - 1)
    start = max(positions) + 1
    pos = positions + list(range(start, start + len(cont) - 1))
    mask, extra = _dense_row_mask(seg), {}
    terms = _fusion_terms(seg, knobs)
    if terms is not None:
        mask = torch.where(mask, terms[1], torch.tensor(float("-inf")))
        if knobs.temperature != 1.0:
            extra["selfensemble_score_scale"] = terms[0]
    out = model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]),
                attention_mask=mask, use_cache=False, **extra).logits[0]
    return torch.log_softmax(out[len(tokens) - 1:].float(), dim=-1)


def reference_score(model, parts: PromptParts, cont: list[int], method: str) -> float:
    """Each prompt alone (or the packed flex row) from scratch; fusion written out by hand."""
    if method == "flex":  # the default flex configuration: its positions and fusion knobs
        cfg = EngineConfig()
        row = pack_row(parts.prefix, parts.segments, parts.cue, 0, cfg.positions)
        lp = _row_logprobs(model, row.tokens, row.segments, row.positions, cont, attention_fusion(cfg))
        return float(sum(lp[j, t] for j, t in enumerate(cont)))
    rows = [parts.full(k) for k in range(len(parts.segments))] if method != "origin" else [parts.full(0)]
    lps = torch.stack([_row_logprobs(model, r, [0] * len(r), list(range(len(r))), cont) for r in rows])
    total = 0.0
    for j, t in enumerate(cont):
        p = lps[:, j, :].exp()  # (N, vocab)
        fused = p.mean(0) if method != "max" else p.max(0).values / p.max(0).values.sum()
        total += math.log(float(fused[t]))
    return total


@pytest.mark.parametrize("reuse_prefix", [True, False])
@pytest.mark.parametrize("method", ["origin", "avg", "max", "flex"])
def test_scores_match_from_scratch_reference(lm, fewshot_fmt, method, reuse_prefix):
    engine = Engine(lm, EngineConfig(attention="sdpa", batch_size=2, reuse_prefix=reuse_prefix))
    parts = [build_parts(lm.tokenizer, fewshot_fmt, q) for q in QUESTIONS]
    conts = [lm.tokenizer(" Paris", add_special_tokens=False).input_ids,
             lm.tokenizer(" William Shakespeare wrote it", add_special_tokens=False).input_ids,
             lm.tokenizer(" honey", add_special_tokens=False).input_ids]
    got = score_continuations(engine, parts, conts, method)  # batches of 2: padding and a second chunk
    for p, c, s in zip(parts, conts, got, strict=True):
        assert s.logprob == pytest.approx(reference_score(lm.model, p, c, method), abs=2e-4)
        assert len(s.token_logprobs) == len(c)


@pytest.mark.parametrize("method", ["origin", "avg", "weighted_max", "flex"])
def test_greedy_generation_scores_as_greedy_with_its_own_logprob(lm, fewshot_fmt, method):
    engine = Engine(lm, EngineConfig(attention="sdpa", batch_size=4))
    parts = [build_parts(lm.tokenizer, fewshot_fmt, q) for q in QUESTIONS]
    weights = [torch.tensor([1.0, 2.0, 0.5])] * 3 if get_method(method).needs_weights else None
    answers = engine.answer_parts(parts, method, GenerationConfig(max_new_tokens=5, stop_at_newline=False), weights)
    conts = [a.tokens for a in answers]
    scored = score_continuations(engine, parts, conts, method, weights)
    for a, s in zip(answers, scored, strict=True):
        assert s.is_greedy
        assert s.logprob == pytest.approx(a.logprob, abs=1e-4)
    # change the last token to one the fused distribution does not rank first: no longer greedy
    bumped = [c[:-1] + [(c[-1] + 1) % len(lm.tokenizer)] for c in conts]
    assert not any(s.is_greedy for s in score_continuations(engine, parts, bumped, method, weights))


def test_avg_over_identical_prompts_equals_plain_model(lm, fewshot_fmt):
    engine = Engine(lm, EngineConfig(attention="sdpa"))
    one = build_parts(lm.tokenizer, fewshot_fmt, [QUESTIONS[0][0]])
    same = PromptParts(one.prefix, one.segments * 4, one.cue, one.prompts * 4)  # no de-duplication here
    cont = [lm.tokenizer(" Paris, of course", add_special_tokens=False).input_ids]
    plain = score_continuations(engine, [one], cont, "origin")[0]
    fused = score_continuations(engine, [same], cont, "avg")[0]
    assert fused.logprob == pytest.approx(plain.logprob, abs=1e-5)
    assert fused.token_logprobs == pytest.approx(plain.token_logprobs, abs=1e-5)
    assert fused.is_greedy == plain.is_greedy


def test_per_prompt_methods_cannot_score(lm, fewshot_fmt):
    engine = Engine(lm, EngineConfig(attention="sdpa"))
    parts = [build_parts(lm.tokenizer, fewshot_fmt, QUESTIONS[0])]
    with pytest.raises(SelfEnsembleError, match="cannot score"):
        score_continuations(engine, parts, [[5]], "vote")


def _broken_block_mask(*args, **kwargs):
    raise RuntimeError("simulated flex kernel failure")


@pytest.mark.parametrize("method", ["flex", "avg"])
def test_failing_flex_kernel_falls_back_exactly_as_answer_does(lm, fewshot_fmt, monkeypatch, method, eager_flex):
    """attention="auto" and a block mask that fails: scoring falls back to SDPA loudly (the same warning,
    key and note as answer()) and scores what the SDPA engine scores; with "flex" it is a clear error."""
    from selfensemble.engine.attention import masks

    parts = [build_parts(lm.tokenizer, fewshot_fmt, q) for q in QUESTIONS]
    conts = [lm.tokenizer(" Paris", add_special_tokens=False).input_ids,
             lm.tokenizer(" William Shakespeare", add_special_tokens=False).input_ids,
             lm.tokenizer(" honey", add_special_tokens=False).input_ids]
    want = score_continuations(Engine(lm, EngineConfig(attention="sdpa", batch_size=2)), parts, conts, method)
    scoring, answering = (Engine(lm, EngineConfig(attention="auto", batch_size=2)) for _ in range(2))
    assert scoring.attention == answering.attention == "flex"
    monkeypatch.setattr(masks, "block_mask", _broken_block_mask)
    with pytest.warns(RuntimeWarning, match="simulated flex kernel failure"):
        got = score_continuations(scoring, parts, conts, method)
    with pytest.warns(RuntimeWarning, match="simulated flex kernel failure"):
        answering.answer(QUESTIONS[0], method, GenerationConfig(max_new_tokens=2), fewshot_fmt)
    assert (scoring.attention, scoring.attention_paths) == (answering.attention, answering.attention_paths) \
        == ("sdpa", {"prefill": "fallback-sdpa", "decode": "sdpa-dense"})
    assert scoring.attention_note == answering.attention_note and "FALLBACK" in scoring.attention_note
    assert [s.logprob for s in got] == pytest.approx([w.logprob for w in want], abs=1e-5)
    strict = Engine(lm, EngineConfig(attention="flex"))
    with pytest.raises(SelfEnsembleError, match="FlexAttention failed during a forward pass: RuntimeError"):
        score_continuations(strict, parts, conts, method)
