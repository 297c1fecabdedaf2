"""The method registry: every Method's declared properties hold in what the engine does, a method
registered here runs through the Engine with no other module touched, and no module outside the
registry branches on a method's name."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.loglik import score_continuations
from selfensemble.engine.packing import SHARED, pack_row
from selfensemble.engine.prompts import build_parts
from selfensemble.engine.reference import reference_generate
from selfensemble.engine.rows import plan_rows
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods import fusion
from selfensemble.methods import registry as method_registry
from selfensemble.methods.registry import (
    METHODS,
    Method,
    check_method,
    get_method,
    register_method,
    unregister_method,
)
from selfensemble.scoring import majority_vote
from selfensemble.store.records import prompts_seen

GEN = GenerationConfig(max_new_tokens=4, stop_at_newline=False)
PROMPTS = ["What is the capital of France?", "Which city is the capital of France?", "Name France's capital city."]
SRC = Path(__file__).resolve().parents[1] / "src" / "selfensemble"


@pytest.fixture(scope="module")
def lm(random_lm):
    return random_lm("llama")


@pytest.fixture(scope="module")
def engine(lm):
    return Engine(lm, EngineConfig(attention="sdpa"))


def test_registry_holds_the_methods_in_their_order():
    assert list(METHODS) == ["origin", "per_prompt", "vote", "avg", "max", "weighted_avg", "weighted_max", "select",
                             "flex"]
    assert all(isinstance(m, Method) and m.name == n for n, m in METHODS.items())
    assert "flex" in METHODS and "nope" not in METHODS
    with pytest.raises(SelfEnsembleError, match="Unknown method 'flx'.*Did you mean 'flex'"):
        check_method("flx")
    assert method_registry.methods_where(one_row=True) == ("origin", "select", "flex")


@pytest.mark.parametrize("name", list(METHODS))
def test_row_plan_matches_the_declaration(name, lm, fewshot_fmt):
    """rows / per_prompt / one_row / packs_prompts / asks_original_only, read off the plan itself."""
    spec, n = METHODS[name], len(PROMPTS)
    parts = build_parts(lm.tokenizer, fewshot_fmt, PROMPTS)
    weights = torch.ones(n) if spec.needs_weights else None
    plan = plan_rows(name, parts, weights, EngineConfig(layout="shared"), cached_prefix=False)
    assert spec.one_row == (len(plan.rows) == 1)
    if spec.packs_prompts:  # every paraphrase's segment in the one row, one answer group
        segs = set(plan.rows[0].segments) - {SHARED}
        assert len(plan.rows) == 1 and plan.groups == [[0]] and len([s for s in segs if s > 0]) == n
    elif spec.asks_original_only:
        assert plan.rows[0].tokens == parts.full(0) and plan.groups == [[0]]
    elif spec.rows == "chosen":  # the prompt with the largest weight alone (ones: the first)
        assert plan.rows[0].tokens == parts.full(0) and plan.groups == [[0]]
        plan = plan_rows(name, parts, torch.tensor([1.0, 3.0, 2.0]), EngineConfig(), cached_prefix=False)
        assert [r.tokens for r in plan.rows] == [parts.full(1)] and plan.groups == [[0]]
    else:
        assert [r.tokens for r in plan.rows] == [parts.full(k) for k in range(n)]
        assert plan.groups == ([[k] for k in range(n)] if spec.per_prompt else [list(range(n))])


@pytest.mark.parametrize("name", list(METHODS))
def test_answers_match_the_declaration(name, engine, fewshot_fmt):
    """per_prompt: N answers; select: the reported answer is the selected prompt's; needs_weights:
    refused without weights; single_prompt: echo judged against one prompt."""
    spec = METHODS[name]
    if spec.needs_weights:
        with pytest.raises(SelfEnsembleError, match="needs one weight per prompt"):
            engine.answer(PROMPTS, name, GEN, fewshot_fmt)
    ans = engine.answer(PROMPTS, name, GEN, fewshot_fmt, weights=[1.0, 2.0, 0.5] if spec.needs_weights else None)
    assert ans.method == name
    if spec.per_prompt:
        assert len(ans.per_prompt) == len(PROMPTS) and len(ans.per_prompt_generation) == len(PROMPTS)
        alone = [engine.answer([p], "origin", GEN, fewshot_fmt).answer for p in PROMPTS]
        assert ans.per_prompt == alone  # each answer is its prompt asked alone
        want = majority_vote(ans.per_prompt)[1] if spec.select is not None else 0
        assert ans.answer == ans.per_prompt[want]
    else:
        assert ans.per_prompt is None
    if spec.rows == "chosen":  # weights [1, 2, .5]: prompt 1 asked alone
        assert ans.answer == engine.answer(PROMPTS[1:2], "origin", GEN, fewshot_fmt).answer
    assert len(prompts_seen(name, PROMPTS, 1)) == (1 if spec.single_prompt else len(PROMPTS))


@pytest.mark.parametrize("name", list(METHODS))
def test_loglik_follows_scores_continuations(name, engine, lm, fewshot_fmt):
    spec = METHODS[name]
    parts = [build_parts(lm.tokenizer, fewshot_fmt, PROMPTS)]
    weights = [torch.tensor([1.0, 2.0, 0.5])] if spec.needs_weights else None
    if not spec.scores_continuations:
        with pytest.raises(SelfEnsembleError, match=f"Method {name} .*cannot score a continuation. Use origin, avg"):
            score_continuations(engine, parts, [[5, 6]], name, weights)
        return
    scored = score_continuations(engine, parts, [[5, 6]], name, weights)
    assert len(scored) == 1 and math.isfinite(scored[0].logprob) and scored[0].logprob < 0


def test_derived_and_compared_methods_are_registered():
    for spec in METHODS.values():
        for other in (spec.derived_from, spec.compared_with):
            assert other is None or other in METHODS
        if spec.derived_from is not None:  # a derived method's rows are its source's rows, or one of them
            source = METHODS[spec.derived_from]
            assert (spec.rows, spec.per_prompt) == (source.rows, source.per_prompt) or (
                spec.rows == "chosen" and source.rows == "each" and source.per_prompt)


def _min_fusion(logits: torch.Tensor, weights=None) -> torch.Tensor:
    """Per-token min probability over the prompts, renormalised (a test-only rule): (N, vocab) → (vocab,)."""
    logp = torch.log_softmax(logits.float(), dim=-1).amin(dim=0)
    return logp - torch.logsumexp(logp, dim=0)


@pytest.fixture
def toy_min():
    calls = []

    def fuse(logits, weights=None):
        calls.append(tuple(logits.shape))
        return _min_fusion(logits, weights)

    spec = register_method(Method("toy_min", rows="each", fusion="min", fuse=fuse, summary="test only"))
    try:
        yield spec, calls
    finally:
        unregister_method("toy_min")
    assert "toy_min" not in METHODS


def test_a_registered_method_runs_through_the_engine(toy_min, engine, lm, fewshot_fmt):
    """A new fusion rule is one register_method call: the engine answers with it, token for token as
    the from-scratch reference decoder fuses the same rows by the same rule, and loglik scores with it."""
    spec, calls = toy_min
    ans = engine.answer(PROMPTS, "toy_min", GEN, fewshot_fmt)
    assert calls and all(shape[0] == len(PROMPTS) for shape in calls)  # the rule fused all three rows
    parts = build_parts(lm.tokenizer, fewshot_fmt, PROMPTS)
    rows = [parts.full(k) for k in range(len(PROMPTS))]  # each prompt alone, written out
    want = reference_generate(lm.model, [pack_row([], [r], []) for r in rows], _min_fusion, GEN.max_new_tokens,
                              lm.eos_token_ids)
    assert ans.tokens == want and len(want) >= 2
    avg = engine.answer(PROMPTS, "avg", GEN, fewshot_fmt)
    assert ans.tokens != avg.tokens or ans.logprob != pytest.approx(avg.logprob)  # min is not avg
    scored = score_continuations(engine, [parts], [ans.tokens], "toy_min")[0]
    assert scored.is_greedy and scored.logprob == pytest.approx(ans.logprob, abs=1e-4)


def test_a_registered_selection_picks_the_reported_answer(engine, fewshot_fmt):
    """select is the engine's only say in which per-prompt answer is reported: a toy method picking
    the last prompt reports the last prompt asked alone; vote's select is the majority."""
    register_method(Method("toy_last", rows="each", per_prompt=True, select=lambda answers: len(answers) - 1,
                           scores_continuations=False))
    try:
        ans = engine.answer(PROMPTS, "toy_last", GEN, fewshot_fmt)
    finally:
        unregister_method("toy_last")
    assert ans.answer == engine.answer(PROMPTS[-1:], "origin", GEN, fewshot_fmt).answer == ans.per_prompt[-1]
    assert ans.per_prompt[0] != ans.per_prompt[-1]  # else the check above could not tell first from last
    assert METHODS["vote"].select(["Paris", "Lyon", "lyon"]) == 1 and METHODS["per_prompt"].select is None


def test_registration_is_checked(toy_min):
    with pytest.raises(ValueError, match="already registered"):
        register_method(Method("toy_min", rows="each", fusion="avg"))
    with pytest.raises(ValueError, match="not built in; give its fuse function"):
        register_method(Method("toy_median", rows="each", fusion="median"))
    with pytest.raises(ValueError, match="per-prompt answers need rows 'each'"):
        Method("bad", rows="packed", fusion="attention", per_prompt=True, scores_continuations=False)
    with pytest.raises(ValueError, match="needs a fusion rule"):
        Method("bad", rows="each")
    with pytest.raises(ValueError, match="rows must be one of"):
        Method("bad", rows="diagonal")
    assert get_method("avg").fusion_fn() is fusion.avg and get_method("flex").fusion_fn() is fusion.identity


# -- no method-name branches outside the registry ----------------------------------------------
_ATTENTION_OPERAND = ("attention", "requested")  # "flex" is also an attention implementation's name


def _literals(node: ast.AST) -> set[str]:
    elts = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def name_branches(source: str, names: set[str]) -> list[str]:
    """Comparisons against method-name literals (== "flex", in ("avg", "max"), .startswith("flex"))."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            ops = [node.left, *node.comparators]
            named = [o for o in ops if _literals(o) & names]
            rest = " ".join(ast.unparse(o) for o in ops if o not in named)
            if named and not any(word in rest for word in _ATTENTION_OPERAND):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith") and any(_literals(a) & names for a in node.args)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_finds_name_branches():
    """Control: each form the scan is meant to catch is caught; attention comparisons are not."""
    code = ('if method == "flex": pass\nif m in ("avg", "max"): pass\nif "vote" != x: pass\n'
            'if name.startswith("flex"): pass\nif self.attention == "flex": pass\nif method in METHODS: pass\n')
    assert [f.split(":")[0] for f in name_branches(code, set(METHODS))] == ["1", "2", "3", "4"]


def test_no_method_name_branches_outside_the_registry():
    found = [f"{p.relative_to(SRC)}:{hit}" for p in sorted(SRC.rglob("*.py"))
             if p != Path(method_registry.__file__).resolve()
             for hit in name_branches(p.read_text(), set(METHODS))]
    assert not found, "branch on the Method's attributes (method_registry), not its name:\n" + "\n".join(found)
