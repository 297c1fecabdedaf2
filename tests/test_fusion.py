"""Fusion rules on hand-made logits with exact expected values; token selection."""

from __future__ import annotations

import math

import pytest
import torch

from selfensemble.methods import fusion
from selfensemble.methods.fusion import (
    avg,
    identity,
    max_,
    weighted_avg,
    weighted_max,
)
from selfensemble.methods.registry import get_method, logit_fusion_methods

RULES = logit_fusion_methods()  # the registered methods that fuse logits: avg, max, weighted_avg, weighted_max


def rule(name: str):
    """The per-group rule the registered method ``name`` fuses by."""
    return get_method(name).fusion_fn()


def weighted(name: str) -> bool:
    return get_method(name).needs_weights

# The docstring example: probabilities [[.9, .1], [.2, .8]] given as logits (log-probs are logits).
PROBS = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
LOGITS = PROBS.log().float()


def probs(logp: torch.Tensor) -> list[float]:
    return logp.exp().double().tolist()


def test_avg_docstring_example():
    assert probs(avg(LOGITS)) == pytest.approx([0.55, 0.45], abs=1e-6)


def test_max_docstring_example():
    # max per token [.9, .8] → renormalised by 1.7
    assert probs(max_(LOGITS)) == pytest.approx([0.9 / 1.7, 0.8 / 1.7], abs=1e-6)
    assert probs(max_(LOGITS)) == pytest.approx([0.529, 0.471], abs=1e-3)


def test_weighted_avg_docstring_example():
    # (1 * .9 + 3 * .2) / 4 = .375 ; (1 * .1 + 3 * .8) / 4 = .625
    assert probs(weighted_avg(LOGITS, torch.tensor([1.0, 3.0]))) == pytest.approx([0.375, 0.625], abs=1e-6)


def test_weighted_max_exact():
    # w = [.25, .75]: per token max(.25*.9, .75*.2) = .225, max(.25*.1, .75*.8) = .6 → / .825
    out = probs(weighted_max(LOGITS, torch.tensor([1.0, 3.0])))
    assert out == pytest.approx([0.225 / 0.825, 0.6 / 0.825], abs=1e-6)


def test_rules_take_logits_not_probabilities():
    # Shifting a row's logits by a constant does not change its distribution.
    shifted = LOGITS + torch.tensor([[5.0], [-3.0]])
    for name in RULES:
        fn, w = rule(name), torch.tensor([1.0, 3.0]) if weighted(name) else None
        assert torch.allclose(fn(shifted, w), fn(LOGITS, w), atol=1e-6), name


def test_three_prompts_three_tokens_exact():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]], dtype=torch.float64)
    logits = p.log().float()
    assert probs(avg(logits)) == pytest.approx((p.sum(0) / 3).tolist(), abs=1e-6)
    m = p.max(0).values
    assert probs(max_(logits)) == pytest.approx((m / m.sum()).tolist(), abs=1e-6)
    w = torch.tensor([2.0, 1.0, 1.0])
    assert probs(weighted_avg(logits, w)) == pytest.approx(((w[:, None].double() / 4) * p).sum(0).tolist(), abs=1e-6)


@pytest.mark.parametrize("name", RULES)
def test_output_is_normalised_log_probs(name):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    w = torch.tensor([1.0, 2.0, 0.5, 0.0]) if weighted(name) else None
    out = rule(name)(logits, w)
    assert out.shape == (50,)
    assert torch.logsumexp(out, 0).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", RULES)
def test_inputs_not_modified(name):
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(1))
    w = torch.tensor([1.0, 2.0, 3.0])
    before_l, before_w = logits.clone(), w.clone()
    rule(name)(logits, w if weighted(name) else None)
    assert torch.equal(logits, before_l) and torch.equal(w, before_w)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_avg_and_max_of_identical_rows_is_identity(n):
    row = torch.randn(1, 30, generator=torch.Generator().manual_seed(2)) * 4
    rows = row.expand(n, -1).clone()
    want = identity(row)
    assert torch.allclose(avg(rows), want, atol=1e-5)
    assert torch.allclose(max_(rows), want, atol=1e-5)
    w = torch.arange(1.0, n + 1)
    assert torch.allclose(weighted_avg(rows, w), want, atol=1e-5)
    assert torch.allclose(weighted_max(rows, w), want, atol=1e-5)


def test_zero_weight_prompt_is_ignored():
    # weighted_avg with w = [1, 0] is prompt 0 alone.
    assert torch.allclose(weighted_avg(LOGITS, torch.tensor([1.0, 0.0])), identity(LOGITS[:1]), atol=1e-6)


@pytest.mark.parametrize("name", [*RULES, "origin"])  # origin: fusion.identity
@pytest.mark.parametrize("bad", [torch.zeros(5), torch.zeros(0, 5), torch.zeros(2, 3, 4)])
def test_bad_logit_shapes(name, bad):
    fn = rule(name)
    w = torch.ones(bad.shape[0]) if bad.dim() >= 1 and bad.shape[0] else None
    with pytest.raises(ValueError, match="shape"):
        fn(bad, w)


def test_identity_rejects_several_rows():
    with pytest.raises(ValueError, match="exactly one row"):
        identity(LOGITS)


@pytest.mark.parametrize("fn", [weighted_avg, weighted_max])
def test_weighted_rules_need_weights(fn):
    with pytest.raises(ValueError, match="needs one weight"):
        fn(LOGITS, None)


@pytest.mark.parametrize("fn", [avg, max_, weighted_avg, weighted_max])
@pytest.mark.parametrize(
    "w, match",
    [
        (torch.tensor([1.0]), "shape"),
        (torch.tensor([1.0, 2.0, 3.0]), "shape"),
        (torch.tensor([[1.0, 2.0]]), "shape"),
        (torch.tensor([1.0, -0.5]), "non-negative"),
        (torch.tensor([0.0, 0.0]), "not all zero"),
        (torch.tensor([1.0, math.nan]), "finite"),
        (torch.tensor([1.0, math.inf]), "finite"),
    ],
)
def test_bad_weights(fn, w, match):
    with pytest.raises(ValueError, match=match):
        fn(LOGITS, w)


def test_weights_as_list_are_accepted():
    assert torch.allclose(weighted_avg(LOGITS, [1.0, 3.0]), weighted_avg(LOGITS, torch.tensor([1.0, 3.0])))


@pytest.mark.parametrize("fn", [weighted_avg, weighted_max])
def test_checked_weights_fuse_as_the_numbers_they_came_from(fn):
    """check_weights validates once; the rules then use its tensor as it is, rule names stay names."""
    checked = fusion.check_weights([1.0, 3.0], 2)
    assert isinstance(checked, fusion.CheckedWeights) and checked.tensor.tolist() == [0.25, 0.75]
    assert torch.equal(fn(LOGITS, checked), fn(LOGITS, [1.0, 3.0]))
    assert fusion.check_weights("entropy", 2) == "entropy" and fusion.check_weights(None, 2) is None
    assert torch.allclose(fn(LOGITS, "entropy"), fn(LOGITS, fusion.entropy_weights(LOGITS)))
    with pytest.raises(ValueError, match="non-negative"):
        fusion.check_weights([1.0, -1.0], 2)
    with pytest.raises(ValueError, match="weights rule"):
        fusion.check_weights("loudest", 2)
    with pytest.raises(ValueError, match="shape"):
        fn(LOGITS, fusion.check_weights([1.0, 2.0, 3.0], 3))


# -- per-step weights from the logits themselves (issue 10) ---------------------------------------


def test_entropy_weights_favour_the_confident_prompt():
    # prompt 0 is sure of token 0 (p ≈ .98), prompt 1 hesitates between tokens 0 and 1
    logits = torch.tensor([[6.0, 2.0, 0.0], [0.0, 0.2, 0.0]])
    w = fusion.entropy_weights(logits)
    p = torch.softmax(logits, dim=-1)
    entropy = -(p * p.log()).sum(dim=-1)
    assert w.tolist() == pytest.approx(torch.exp(-entropy).tolist(), abs=1e-6)  # exp(-H), by hand
    assert w[0] > w[1]
    # the fused distribution leans to the confident prompt: closer to row 0 than plain avg is
    fused = weighted_avg(logits, "entropy").exp()
    expected = (w[0] * p[0] + w[1] * p[1]) / w.sum()
    assert fused.tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert fused[0] > avg(logits).exp()[0]
    # weighted_max by entropy too: a per-token max of w × p, renormalised
    m = torch.maximum(w[0] * p[0], w[1] * p[1])
    assert weighted_max(logits, "entropy").exp().tolist() == pytest.approx((m / m.sum()).tolist(), abs=1e-6)


def test_entropy_weights_worked_example():
    # probabilities [1, 0] (H = 0) and [.5, .5] (H = log 2) → weights [1, .5]
    logits = torch.tensor([[0.0, -math.inf], [0.0, 0.0]])
    assert fusion.entropy_weights(logits).tolist() == pytest.approx([1.0, 0.5])


@pytest.mark.parametrize("rule", ["entropy", "agreement"])
def test_dynamic_weights_with_identical_prompts_equal_avg(rule):
    row = torch.tensor([1.5, -0.3, 0.2, 2.0])
    logits = row.repeat(4, 1)
    assert torch.allclose(weighted_avg(logits, rule), avg(logits), atol=1e-6)
    assert torch.allclose(weighted_max(logits, rule), avg(logits), atol=1e-6)


def test_agreement_weights_favour_the_prompt_that_agrees():
    # two prompts agree on token 0, one dissents on token 2
    logits = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    w = fusion.agreement_weights(logits)
    assert w[0] == pytest.approx(w[1]) and w[0] > w[2]
    assert ((w >= 1 / 3 - 1e-6) & (w <= 1 + 1e-6)).all()  # bounded in [1/N, 1]
    logp = torch.log_softmax(logits, -1)
    mix = logp.exp().mean(0)
    kl = (logp.exp() * (logp - mix.log())).sum(-1)
    assert w.tolist() == pytest.approx(torch.exp(-kl).tolist(), abs=1e-6)


def test_dynamic_weights_do_not_modify_input_and_reject_unknown_rules():
    logits = torch.tensor([[1.0, 2.0], [0.5, 0.1]])
    before = logits.clone()
    weighted_avg(logits, "entropy")
    weighted_max(logits, "agreement")
    assert torch.equal(logits, before)
    with pytest.raises(ValueError, match="weights rule"):
        weighted_avg(logits, "bogus")


@pytest.mark.parametrize("method, rule", [("weighted_avg", "entropy"), ("weighted_max", "agreement")])
def test_dynamic_weights_in_the_decode_loop_equal_the_no_cache_reference(random_lm, fewshot_fmt, method, rule):
    """--weights entropy/agreement through the engine = the slow reference fusing each step's logits."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.prompts import build_parts
    from selfensemble.engine.reference import reference_generate
    from selfensemble.engine.rows import plan_rows

    lm = random_lm("llama")
    prompts = ["What is the capital of France?", "Which city is France's capital?", "Name the capital of France."]
    parts = build_parts(lm.tokenizer, fewshot_fmt, prompts)
    plan = plan_rows(method, parts, None, EngineConfig(attention="sdpa"), cached_prefix=False)
    want = reference_generate(lm.model, plan.rows, get_method(method).fusion_fn(), 6, lm.eos_token_ids, weights=rule)
    engine = Engine(lm, EngineConfig(attention="sdpa"))
    got = engine.answer(prompts, method, GenerationConfig(max_new_tokens=6, stop_at_newline=False), fewshot_fmt,
                        weights=rule)
    assert len(want) >= 4 and got.tokens == want
    # control: the rule matters on this model (static equal weights give another answer or probability)
    same = engine.answer(prompts, method, GenerationConfig(max_new_tokens=6, stop_at_newline=False), fewshot_fmt,
                         weights=[1.0, 1.0, 1.0])
    assert (same.tokens, round(same.logprob, 4)) != (got.tokens, round(got.logprob, 4))


def test_unknown_weights_rule_is_a_user_error(random_lm, fewshot_fmt):
    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.errors import SelfEnsembleError

    engine = Engine(random_lm("llama"), EngineConfig(attention="sdpa"))
    with pytest.raises(SelfEnsembleError, match="Unknown weights rule"):
        engine.answer(["Q?", "P?"], "weighted_avg", fmt=fewshot_fmt, weights="entropyy")
