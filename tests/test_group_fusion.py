"""Every group fused in one call: the same distributions as the per-group rules, a constant number
of kernels whatever the number of groups, and custom rules (batched or not) through the engine."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.cache import new_cache
from selfensemble.engine.decoding import generate
from selfensemble.engine.engine import Engine
from selfensemble.engine.packing import PackedBatch, pack_row
from selfensemble.engine.prompts import build_parts
from selfensemble.engine.reference import reference_generate
from selfensemble.engine.rows import plan_rows
from selfensemble.methods import fusion, group_fusion
from selfensemble.methods.group_fusion import Groups
from selfensemble.methods.registry import (
    Method,
    get_method,
    logit_fusion_methods,
    register_method,
    unregister_method,
)

# uneven groups whose rows interleave (the rules must not assume contiguous rows)
ROWS = [[0, 4, 7], [1], [2, 3], [5, 6, 8, 9, 10]]
PROMPTS = ["What is the capital of France?", "Which city is France's capital?", "Name the capital of France."]
RULES = logit_fusion_methods()  # avg, max, weighted_avg, weighted_max: each has a per-group rule and its batched twin


def batched(name: str):
    return get_method(name).group_fusion_fn()


def weighted(name: str) -> bool:
    return get_method(name).needs_weights


def random_logits(rows: int = 11, vocab: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def weights_for(kind: str) -> list:
    g = torch.Generator().manual_seed(1)
    numbers = [torch.rand(len(r), generator=g) + 0.1 for r in ROWS]
    return {"none": [None] * len(ROWS), "numbers": numbers, "entropy": ["entropy"] * len(ROWS),
            "agreement": ["agreement"] * len(ROWS), "mixed": ["agreement", numbers[1], "entropy", numbers[3]]}[kind]


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("kind", ["none", "numbers", "entropy", "agreement", "mixed"])
def test_batched_equals_per_group(name, kind):
    if weighted(name) and kind == "none":
        pytest.skip("weighted rules need weights")
    logits = random_logits()
    groups = Groups.build(ROWS, weights_for(kind))
    together = batched(name)(logits, groups)
    per_group = torch.stack([get_method(name).fusion_fn()(logits[r], w) for r, w in zip(ROWS, weights_for(kind), strict=True)])
    assert together.shape == (len(ROWS), logits.shape[1])
    torch.testing.assert_close(together, per_group, atol=2e-6, rtol=0)


def test_docstring_example_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    out = group_fusion.avg_groups(probs.log().float(), Groups.build([[0, 1], [2]]))
    assert out.exp().tolist() == [pytest.approx([0.55, 0.45], abs=1e-6), pytest.approx([0.6, 0.4], abs=1e-6)]
    top = group_fusion.max_groups(probs.log().float(), Groups.build([[0, 1], [2]]))
    assert top.exp().tolist() == [pytest.approx([0.9 / 1.7, 0.8 / 1.7], abs=1e-6), pytest.approx([0.6, 0.4], abs=1e-6)]


def test_identity_puts_rows_in_group_order():
    logits = random_logits(4)
    out = group_fusion.identity_groups(logits, Groups.build([[2], [0], [3], [1]]))
    torch.testing.assert_close(out, torch.log_softmax(logits[[2, 0, 3, 1]], dim=-1), atol=0, rtol=0)
    with pytest.raises(ValueError, match="one row per group"):
        group_fusion.identity_groups(logits, Groups.build([[0, 1], [2], [3]]))


def test_keep_renumbers_rows_and_keeps_weights():
    """Dropping finished groups: the kept groups fuse as they did (the decode loop drops rows)."""
    logits = random_logits()
    groups = Groups.build(ROWS, weights_for("mixed"))
    kept = groups.keep([0, 3])
    live = sorted(ROWS[0] + ROWS[3])
    assert kept.rows == ((0, 1, 4), (2, 3, 5, 6, 7))  # live rows 0 4 5 6 7 8 9 10 → 0..7
    for name in ("weighted_avg", "weighted_max"):
        full = batched(name)(logits, groups)
        torch.testing.assert_close(batched(name)(logits[live], kept), full[[0, 3]], atol=1e-6, rtol=0)


def test_bad_groups_and_weights():
    with pytest.raises(ValueError, match="exactly one group"):
        Groups.build([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="non-negative"):
        Groups.build([[0, 1]], [[1.0, -1.0]])
    with pytest.raises(ValueError, match="needs one weight"):
        group_fusion.weighted_avg_groups(random_logits(2), Groups.build([[0, 1]]))
    with pytest.raises(ValueError, match="shape"):
        group_fusion.avg_groups(random_logits(3), Groups.build([[0, 1]]))


class CountOps(TorchDispatchMode):
    """Counts the aten operations dispatched inside the block (≈ kernels launched)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", RULES)
def test_kernel_count_does_not_grow_with_the_groups(name):
    counts = []
    for n_groups in (1, 8):
        rows = [[3 * g, 3 * g + 1, 3 * g + 2] for g in range(n_groups)]
        groups = Groups.build(rows, ["entropy"] * n_groups if weighted(name) else None)
        logits = random_logits(3 * n_groups)
        with CountOps() as counted:
            batched(name)(logits, groups)
        counts.append(counted.ops)
    assert counts[0] == counts[1], counts
    per_group = group_fusion.per_group(get_method(name).fusion_fn())  # control: the fallback does grow
    with CountOps() as one:
        per_group(random_logits(3), Groups.build([[0, 1, 2]], ["entropy"] if weighted(name) else None))
    with CountOps() as eight:
        per_group(random_logits(24), Groups.build([[3 * g, 3 * g + 1, 3 * g + 2] for g in range(8)],
                                                  ["entropy"] * 8 if weighted(name) else None))
    assert eight.ops > one.ops


def step_ops(lm, method: str, n_questions: int, fuse=None) -> int:
    """Aten operations of one more decode step (fusion, selection, masks, the model) of ``n_questions``."""
    per_q = 1 if method == "origin" else 3
    rows = [pack_row([], [[5 + q, 6, 7 + q + k]], [9]) for q in range(n_questions) for k in range(per_q)]
    groups = [list(range(q * per_q, (q + 1) * per_q)) for q in range(n_questions)]
    fuse = fuse or (group_fusion.identity_groups if method == "origin" else group_fusion.avg_groups)
    batch = PackedBatch.from_rows(rows)
    ops = []
    for steps in (3, 4):
        gen = GenerationConfig(max_new_tokens=steps, stop_at_newline=False)
        cache = new_cache(lm.model.config.num_hidden_layers, batch.shape[1] + steps)
        with torch.inference_mode(), CountOps() as counted:
            out = generate(lm.model, lm.tokenizer, batch, cache, groups, fuse, gen, attention="sdpa", eos_ids=set())
        assert all(len(d.tokens) == steps for d in out)
        ops.append(counted.ops)
    return ops[1] - ops[0]


@pytest.mark.parametrize("method", ["origin", "avg"])
def test_decode_step_kernels_do_not_grow_with_the_batch(random_lm, method):
    """A whole decode step launches as many kernels for 8 questions as for 1."""
    lm = random_lm("llama")
    assert step_ops(lm, method, 1) == step_ops(lm, method, 8) > 0
    # control: fusing group by group (the fallback a per-group rule gets) does grow with the batch
    slow = group_fusion.per_group(fusion.identity if method == "origin" else fusion.avg)
    assert step_ops(lm, method, 8, slow) > step_ops(lm, method, 1, slow)


def min_rule(logits: torch.Tensor, weights=None) -> torch.Tensor:
    """A custom per-group rule: the per-token min probability over prompts, renormalised."""
    low = torch.log_softmax(logits.float(), dim=-1).amin(dim=0)
    return low - torch.logsumexp(low, dim=0)


def min_rule_batched(logits: torch.Tensor, groups: Groups) -> torch.Tensor:
    """The same rule over every group at once (amin as a segment reduction)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    low = logp.new_full((groups.count, logp.shape[1]), float("inf"))
    low = low.scatter_reduce_(0, groups.index[:, None].expand_as(logp), logp, "amin")
    return low - torch.logsumexp(low, dim=-1, keepdim=True)


@pytest.mark.parametrize("batched", [False, True])
def test_custom_rule_runs_in_the_engine(random_lm, fewshot_fmt, batched):
    """A registered custom rule decodes what the no-cache reference decodes with the same rule,
    alone and with other questions in its batch; a per-group rule runs through the fallback."""
    lm = random_lm("llama")
    method = Method("minfuse", rows="each", fuse=min_rule_batched if batched else min_rule,
                    batched=batched)
    register_method(method)
    try:
        gen = GenerationConfig(max_new_tokens=6, stop_at_newline=False)
        parts = build_parts(lm.tokenizer, fewshot_fmt, PROMPTS)
        plan = plan_rows("minfuse", parts, None, EngineConfig(), cached_prefix=False)
        want = reference_generate(lm.model, plan.rows, min_rule, 6, lm.eos_token_ids)
        assert len(want) >= 4
        engine = Engine(lm, EngineConfig(attention="sdpa", batch_size=4))
        from selfensemble.engine.queries import Query

        queries = [Query(PROMPTS, fewshot_fmt), Query(["Who wrote Hamlet?", "Hamlet's author?"], fewshot_fmt)]
        got = engine.answer_many(queries, "minfuse", gen)
        assert got[0].tokens == want
        assert got[0].tokens != engine.answer(PROMPTS, "avg", gen, fewshot_fmt).tokens  # the rule matters
        assert method.fusion_fn()(torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]])), None).exp().tolist() == \
            pytest.approx([0.2 / 0.3, 0.1 / 0.3], abs=1e-6)
    finally:
        unregister_method("minfuse")
