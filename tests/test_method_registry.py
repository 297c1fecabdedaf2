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
from selfensemble.methods import fusion, group_fusion
from selfensemble.methods import registry as method_registry
from selfensemble.methods.registry import (
    METHODS,
    Method,
    Rows,
    check_method,
    get_method,
    logit_fusion_methods,
    one_row_methods,
    register_method,
    unregister_method,
    weighted_methods,
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
        register_method(Method("toy_min", rows="each", fuse=_min_fusion))
    with pytest.raises(ValueError, match=r"needs a fusion rule over the rows \(fuse=...\)"):
        Method("toy_median", rows="each", fusion="median")  # a label is not a rule
    with pytest.raises(ValueError, match="any other plan has none"):
        Method("bad", rows="packed", fuse=_min_fusion)
    with pytest.raises(ValueError, match="fuse must be a function"):
        Method("bad", rows="each", fuse="avg")
    with pytest.raises(ValueError, match="per-prompt answers need rows 'each'"):
        Method("bad", rows="packed", per_prompt=True, scores_continuations=False)
    with pytest.raises(ValueError, match="needs a fusion rule"):
        Method("bad", rows="each")
    with pytest.raises(ValueError, match="rows must be one of"):
        Method("bad", rows="diagonal")
    with pytest.raises(TypeError, match="takes a Method"):
        register_method("avg")


def test_a_method_holds_its_rule_and_row_plan():
    """rows is a Rows plan (its string accepted); the built-in rules resolve to fusion.py's functions
    and their batched twins; a method without a rule fuses nothing (identity); labels are display only."""
    assert Method("x", rows="each", fuse=_min_fusion).rows is Rows.EACH and Rows.EACH == "each"
    for name, one, together in (("avg", fusion.avg, group_fusion.avg_groups), ("max", fusion.max_, group_fusion.max_groups),
                                ("weighted_avg", fusion.weighted_avg, group_fusion.weighted_avg_groups),
                                ("weighted_max", fusion.weighted_max, group_fusion.weighted_max_groups)):
        spec = get_method(name)
        assert spec.fusion_fn() is one and spec.group_fusion_fn() is together and spec.fusion == name
        assert torch.equal(spec.fuse(LOGITS, WEIGHTS), one(LOGITS, WEIGHTS))  # the rule object is the rule
    for name in ("origin", "per_prompt", "vote", "select", "flex"):
        spec = get_method(name)
        assert spec.fuse is None and spec.fusion == ""
        assert spec.fusion_fn() is fusion.identity and spec.group_fusion_fn() is group_fusion.identity_groups
    assert get_method("flex").combines_prompts and not get_method("origin").combines_prompts


LOGITS, WEIGHTS = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.5, 0.0]]), torch.tensor([1.0, 3.0])


def test_derived_sets_are_queries_on_the_registry(toy_min):
    """Weighted, one-row and logit-fusion methods are read off the registered methods, so a method
    registered later is in them (a hand-kept list of names would miss it)."""
    assert weighted_methods() == ("weighted_avg", "weighted_max", "select")
    assert one_row_methods() == ("origin", "select", "flex")
    assert logit_fusion_methods() == ("avg", "max", "weighted_avg", "weighted_max", "toy_min")
    register_method(Method("toy_weighted", rows="each", fuse=_min_fusion, needs_weights=True))
    register_method(Method("toy_alone", rows="alone"))
    try:
        assert weighted_methods()[-1] == "toy_weighted" and one_row_methods()[-1] == "toy_alone"
    finally:
        unregister_method("toy_weighted")
        unregister_method("toy_alone")


# -- no method-name branches outside the registry ----------------------------------------------
# A kernel name is not a method name: code compares attention kernels with config.engine's KERNEL_*
# constants, so a literal "flex" in a comparison is always a method name.


def _literals(node: ast.AST) -> set[str]:
    """The string constants a collection literal (tuple, list, set, dict keys, set(...)) or a constant holds."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
        return _literals(node.args[0])  # frozenset({...}), tuple([...])
    elts = (node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set)
            else [node])
    return {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def _ident(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def name_collections(source: str, names: set[str], in_functions: bool = False) -> set[str]:
    """Names bound at module level (or, ``in_functions``, inside a function) to a hand-written
    collection of method names (WEIGHTED = {"weighted_avg", ...}). A class's fields are not: their
    defaults are a user's choice."""
    tree = ast.parse(source)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    found = set()
    for node in [n for f in functions for n in ast.walk(f)] if in_functions else tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if targets and getattr(node, "value", None) is not None and _literals(node.value) & names:
            found |= {t.id for t in targets if isinstance(t, ast.Name)}
    return found


def _is_lookup(node: ast.AST, names: set[str], collections: set[str]) -> bool:
    """x.startswith("flex"), TABLE.get(method), TABLE[method] (TABLE in ``collections``; a constant key,
    record["per_prompt"], reads a field and is not a lookup by method name)."""
    if isinstance(node, ast.Subscript):
        return _ident(node.value) in collections and not isinstance(node.slice, ast.Constant)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    if node.func.attr in ("startswith", "endswith"):
        return any(_literals(a) & names for a in node.args)
    return (node.func.attr == "get" and _ident(node.func.value) in collections and bool(node.args)
            and not isinstance(node.args[0], ast.Constant))


def name_branches(source: str, names: set[str], collections: set[str] = frozenset()) -> list[str]:
    """Comparisons against method-name literals (== "flex", in ("avg", "max"), .startswith("flex")) and
    membership tests or lookups in a hand-written collection of method names (method in WEIGHTED,
    TABLE[method], TABLE.get(method)), ``collections`` naming those collections."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            ops = [node.left, *node.comparators]
            member = [o for op, o in zip(node.ops, node.comparators, strict=True)
                      if isinstance(op, ast.In | ast.NotIn) and _ident(o) in collections]
            if any(_literals(o) & names for o in ops) or member:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif _is_lookup(node, names, collections):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_scan_finds_name_branches():
    """Control: each form the scan is meant to catch is caught, and a registry query is not."""
    code = ('WEIGHTED = {"weighted_avg", "weighted_max"}\nTABLE = {"avg": 1, "origin": 2}\n'
            'if method == "flex": pass\nif m in ("avg", "max"): pass\nif "vote" != x: pass\n'
            'if name.startswith("flex"): pass\nif self.attention == "flex": pass\nif method in WEIGHTED: pass\n'
            'if method not in fusion.WEIGHTED: pass\nx = TABLE[method]\nx = TABLE.get(method)\n'
            'if method in METHODS: pass\nif get_method(method).needs_weights: pass\n'
            'if self.attention == KERNEL_FLEX: pass\n'
            'def f(method):\n    LOCAL = ("avg", "max")\n    return method in LOCAL\n'
            'class Config:\n    methods: tuple = ("origin", "flex")\nif m in config.methods: pass\n'
            'x = TABLE["avg"]\n')
    collections = name_collections(code, set(METHODS)) | name_collections(code, set(METHODS), in_functions=True)
    assert collections == {"WEIGHTED", "TABLE", "LOCAL"}  # a class field's default is not a branch table
    assert [f.split(":")[0] for f in name_branches(code, set(METHODS), collections)] == [
        "3", "4", "5", "6", "7", "8", "9", "10", "11", "17"]


def test_no_method_name_branches_outside_the_registry():
    sources = {p: p.read_text() for p in sorted(SRC.rglob("*.py")) if p != Path(method_registry.__file__).resolve()}
    names = set(METHODS)
    shared = set().union(*(name_collections(s, names) for s in sources.values()))  # importable: any module's
    found = [f"{p.relative_to(SRC)}:{hit}" for p, s in sources.items()
             for hit in name_branches(s, names, shared | name_collections(s, names, in_functions=True))]
    assert not found, "branch on the Method's attributes (method_registry), not its name:\n" + "\n".join(found)
