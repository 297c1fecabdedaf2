"""The KV-cached decode loop against the slow reference (no cache, no padding, hand-made mask),
stop rules, and sampling."""

from __future__ import annotations

import pytest
import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.attention.masks import attention_fusion
from selfensemble.engine.cache import new_cache
from selfensemble.engine.decoding import generate
from selfensemble.engine.engine import Engine
from selfensemble.engine.packing import PackedBatch
from selfensemble.engine.prompts import build_parts
from selfensemble.engine.queries import Query
from selfensemble.engine.reference import reference_generate
from selfensemble.engine.rows import plan_rows
from selfensemble.engine.stopping import stop_text
from selfensemble.methods import group_fusion
from selfensemble.methods.registry import get_method

PROMPTS = ["What is the capital of France?", "Which city is France's capital?", "Name the capital of France."]
WEIGHTS = [1.0, 2.0, 0.5]
STEPS = 6
GEN = GenerationConfig(max_new_tokens=STEPS, stop_at_newline=False)
NO_KNOBS = dict(rescale=False, fusion_temperature=1.0, fusion_scale=1.0)  # the reference decoder has no fusion knobs

CONFIGS = [
    ("origin", "shared", "restart"),
    ("avg", "shared", "restart"),
    ("max", "shared", "restart"),
    ("weighted_avg", "shared", "restart"),
    ("weighted_max", "shared", "restart"),
    *[("flex", layout, pos) for layout in ("shared", "full") for pos in ("restart", "right", "sequential")],
]


def reference_tokens(lm, fmt, method, layout, positions) -> list[int]:
    parts = build_parts(lm.tokenizer, fmt, PROMPTS)
    cfg = EngineConfig(attention="sdpa", layout=layout, positions=positions, **NO_KNOBS)
    w = torch.tensor(WEIGHTS) if get_method(method).needs_weights else None
    plan = plan_rows(method, parts, w, cfg, cached_prefix=False)
    assert len(plan.groups) == 1
    return reference_generate(lm.model, plan.rows, get_method(method).fusion_fn(), STEPS, lm.eos_token_ids, weights=w)


@pytest.mark.parametrize("method, layout, positions", CONFIGS)
def test_kv_cached_engine_equals_reference(any_lm, fewshot_fmt, method, layout, positions, eager_flex):
    want = reference_tokens(any_lm, fewshot_fmt, method, layout, positions)
    assert len(want) >= 4, "too few tokens before EOS for a meaningful comparison"
    for attention in ("sdpa", "flex"):
        engine = Engine(any_lm, EngineConfig(attention=attention, layout=layout, positions=positions, **NO_KNOBS))
        got = engine.answer(PROMPTS, method, GEN, fewshot_fmt, weights=WEIGHTS)
        assert got.tokens == want, (attention, got.tokens, want)
        assert got.finish == ("length" if len(want) == STEPS else "eos")


def test_reference_check_can_fail(random_lm, fewshot_fmt):
    """Control: the comparison above distinguishes layouts and positions on these models."""
    lm = random_lm("llama")
    restart = reference_tokens(lm, fewshot_fmt, "flex", "shared", "restart")
    assert restart != reference_tokens(lm, fewshot_fmt, "flex", "shared", "sequential")
    assert restart != reference_tokens(lm, fewshot_fmt, "avg", "shared", "restart")


KNOBS_ON = dict(rescale=True, fusion_temperature=0.5, fusion_scale=0.7, layout="full", positions="right")
KNOBS_OFF = dict(NO_KNOBS, layout="shared", positions="restart")


@pytest.mark.parametrize("arch", ["llama", "phi3"])
@pytest.mark.parametrize("knobs", [dict(rescale=True), dict(fusion_temperature=0.5),
                                   dict(rescale=True, fusion_temperature=0.7, fusion_scale=0.8)])
def test_fusion_knobs_same_on_both_kernels_and_change_fusion(random_lm, fewshot_fmt, arch, knobs, eager_flex):
    lm = random_lm(arch)
    out = {}
    for attention in ("sdpa", "flex"):
        for on in (False, True):
            engine = Engine(lm, EngineConfig(attention=attention, **{**NO_KNOBS, **(knobs if on else {})}))
            out[attention, on] = engine.answer(PROMPTS, "flex", GEN, fewshot_fmt).tokens
    assert out["sdpa", True] == out["flex", True]
    assert out["sdpa", False] == out["flex", False]
    assert out["sdpa", True] != out["sdpa", False]  # the knobs really reach the logits


@pytest.mark.parametrize("method", ["origin", "per_prompt", "avg", "max"])
@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_flex_knobs_do_not_touch_other_methods(random_lm, fewshot_fmt, method, attention, eager_flex):
    """Every flex-only knob on vs off: other methods give the very same tokens (the control above shows
    the same knobs do change flex on this model)."""
    lm = random_lm("llama")
    got = [Engine(lm, EngineConfig(attention=attention, **knobs)).answer(PROMPTS, method, GEN, fewshot_fmt)
           for knobs in (KNOBS_OFF, KNOBS_ON)]
    assert got[0].tokens == got[1].tokens and len(got[0].tokens) >= 4
    assert got[0].per_prompt == got[1].per_prompt
    assert got[0].logprob == got[1].logprob


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
@pytest.mark.parametrize("knobs", [dict(rescale=True), dict(rescale=True, fusion_temperature=0.5)])
def test_flex_knobs_use_each_querys_own_n(random_lm, fewshot_fmt, attention, knobs, eager_flex):
    """A flex query gives the same answer alone and batched with queries of other N (N is per row)."""
    lm = random_lm("llama")
    queries = [Query(PROMPTS[:2], fewshot_fmt), Query(PROMPTS, fewshot_fmt), Query(PROMPTS[:1], fewshot_fmt)]
    engine = Engine(lm, EngineConfig(attention=attention, batch_size=8, **{**NO_KNOBS, **knobs}))
    batched = engine.answer_many(queries, "flex", GEN)
    alone = [engine.answer_many([q], "flex", GEN)[0] for q in queries]
    assert [a.tokens for a in batched] == [a.tokens for a in alone]
    # control: with the batch's largest N forced on the 2-prompt query its answer changes
    two = Engine(lm, EngineConfig(attention=attention, **{**NO_KNOBS, **knobs}))
    parts = build_parts(lm.tokenizer, fewshot_fmt, PROMPTS[:2])
    wrong = attention_fusion(two.config)
    plan = plan_rows("flex", parts, None, two.config, cached_prefix=False)
    batch = PackedBatch.from_rows(plan.rows, 0, 0, 1)
    with torch.inference_mode():
        got = [generate(lm.model, lm.tokenizer, batch, new_cache(two._num_layers, batch.shape[1] + STEPS), [[0]],
                        group_fusion.identity_groups, GEN, attention=attention, eos_ids=lm.eos_token_ids, fusion=wrong,
                        fused_n=[n])[0].tokens
               for n in (2, 3)]
    assert got[0] != got[1], "N must matter for this check to mean anything"


@pytest.mark.parametrize("method", ["avg", "max"])
def test_n_identical_rows_fuse_to_origin(random_lm, fewshot_fmt, method):
    """The fusion math inside the engine: N copies of one prompt (bypassing dedupe) == the prompt alone."""
    lm = random_lm("qwen2")
    engine = Engine(lm, EngineConfig(attention="sdpa"))
    parts = build_parts(lm.tokenizer, fewshot_fmt, PROMPTS[:1])
    parts.segments = parts.segments * 3
    fused = engine._run_chunk_once(method, [parts], [None], parts.prefix, 1, GEN)[0]
    origin = engine.answer(PROMPTS[:1], "origin", GEN, fewshot_fmt)
    assert fused.tokens == origin.tokens and len(origin.tokens) == STEPS
    assert fused.logprob == pytest.approx(origin.logprob, abs=1e-3)


def test_generate_rejects_bad_groups(random_lm):
    lm = random_lm("llama")
    from selfensemble.engine.packing import pack_row

    batch = PackedBatch.from_rows([pack_row([], [[5, 6]], [7]), pack_row([], [[8]], [9])])
    with pytest.raises(ValueError, match="exactly one group"):
        generate(lm.model, lm.tokenizer, batch, None, [[0]], group_fusion.identity_groups, GEN, attention="sdpa",
                 eos_ids={2})


def test_unknown_attention_kernel(random_lm):
    from transformers import DynamicCache

    from selfensemble.engine.decoding import prefill
    from selfensemble.engine.packing import pack_row

    lm = random_lm("llama")
    batch = PackedBatch.from_rows([pack_row([], [[5, 6]], [7])])
    with pytest.raises(ValueError, match="attention must be"):
        prefill(lm.model, batch, DynamicCache(config=lm.model.config), "eager")


# --------------------------------------------------------------------------- stop rules


@pytest.mark.parametrize(
    "text, gen, want",
    [
        (" Paris\n\nQ: What", GenerationConfig(), (" Paris", "newline")),
        ("\n Paris\nQ", GenerationConfig(), ("\n Paris", "newline")),  # a leading newline is not a stop
        (" Paris\n", GenerationConfig(stop_at_newline=False), (" Paris\n", None)),
        (" Paris. Q: next", GenerationConfig(stop_strings=("Q:",)), (" Paris. ", "stop")),
        (" Paris Q:\n", GenerationConfig(stop_strings=("Q:",)), (" Paris ", "stop")),
        (" Par", GenerationConfig(), (" Par", None)),
        (" Who is he? Tell me\n", GenerationConfig(stop_after=("?",)), (" Who is he?", "stop")),
        (" Who is he", GenerationConfig(stop_after=("?",)), (" Who is he", None)),
        (" A. Q: x?", GenerationConfig(stop_strings=("Q:",), stop_after=("?",)), (" A. ", "stop")),
        (" Why?\nQ:", GenerationConfig(stop_strings=("Q:",), stop_after=("?",)), (" Why?", "stop")),
    ],
)
def test_stop_text(text, gen, want):
    assert stop_text(text, gen) == want


def test_max_new_tokens_must_be_positive():
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)


@pytest.mark.slow
def test_answer_stops_at_newline_on_the_real_model(smollm, fewshot_fmt):
    engine = Engine(smollm, EngineConfig(attention="sdpa"))
    a = engine.answer(PROMPTS, "flex", GenerationConfig(max_new_tokens=10), fewshot_fmt)
    assert a.answer == "Paris" and a.finish == "newline"
    assert a.generation.strip() == "Paris" and len(a.tokens) < 10
    assert a.logprob < 0 and 0 < a.prob <= 1


# --------------------------------------------------------------------------- sampling


@pytest.mark.slow
def test_sampling_reproducible_and_seed_dependent(smollm, fewshot_fmt):
    engine = Engine(smollm, EngineConfig(attention="sdpa"))
    question = ["Name something you might find in a kitchen."]

    def sample(seed, method="origin"):
        gen = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=2.0, seed=seed, stop_at_newline=False)
        return engine.answer(question, method, gen, fewshot_fmt).tokens

    first = sample(0)
    assert sample(0) == first
    others = {tuple(sample(s)) for s in (1, 2, 3)}
    assert others - {tuple(first)}, "different seeds should give different samples at temperature 2"
    greedy = engine.answer(question, "origin", GenerationConfig(max_new_tokens=8, stop_at_newline=False),
                           fewshot_fmt).tokens
    assert {tuple(first)} | others != {tuple(greedy)}


# --------------------------------------------------------------------------- answer log-probability


def test_logprob_counts_the_stop_token_whatever_the_stop(random_lm, fewshot_fmt, monkeypatch):
    """The same three chosen tokens score the same whether the third is EOS or carries a stop string:
    the stop token counts in both; a length cut after three tokens counts all three as well."""
    from selfensemble.engine.models import LoadedModel

    lm = random_lm("llama")
    eos: set[int] = set()
    monkeypatch.setattr(LoadedModel, "eos_token_ids", property(lambda self: set(eos)))
    engine = Engine(lm, EngineConfig(attention="sdpa"))
    free = engine.answer(PROMPTS, "origin", GenerationConfig(max_new_tokens=3, stop_at_newline=False), fewshot_fmt)
    assert free.finish == "length" and len(free.tokens) == 3
    t0, t1, t2 = free.tokens
    assert t2 not in (t0, t1), "pick a prompt whose third token is new"
    eos.add(t2)
    by_eos = engine.answer(PROMPTS, "origin", GenerationConfig(max_new_tokens=6, stop_at_newline=False), fewshot_fmt)
    assert by_eos.finish == "eos" and by_eos.tokens == [t0, t1]
    eos.clear()
    stop = lm.tokenizer.decode([t2])
    assert stop.strip() and stop not in lm.tokenizer.decode([t0, t1])
    by_stop = engine.answer(PROMPTS, "origin", GenerationConfig(max_new_tokens=6, stop_at_newline=False,
                                                                stop_strings=(stop,)), fewshot_fmt)
    assert by_stop.finish == "stop" and by_stop.tokens == [t0, t1, t2]
    assert by_eos.logprob == pytest.approx(free.logprob, abs=1e-5)
    assert by_stop.logprob == pytest.approx(free.logprob, abs=1e-5)
    two = engine.answer(PROMPTS, "origin", GenerationConfig(max_new_tokens=2, stop_at_newline=False), fewshot_fmt)
    assert two.logprob > free.logprob  # the stop token's log-prob (< 0) really is in the sum


# --------------------------------------------------------------------------- host syncs per step


@pytest.mark.parametrize("gen, per_step", [
    (GenerationConfig(max_new_tokens=8, stop_at_newline=False), 1),
    (GenerationConfig(max_new_tokens=8, stop_at_newline=False, do_sample=True, top_p=0.9), 2),  # + nucleus check
])
def test_one_host_sync_per_decode_step_for_all_groups(random_lm, gen, per_step):
    """Four groups (avg over three rows, three single rows) decode with ``per_step`` tensor → Python
    copies per step in all, not one per group: counted by wrapping Tensor.tolist/item/__bool__/..."""
    from selfensemble.bench.timing import count_host_syncs
    from selfensemble.engine.packing import pack_row

    lm = random_lm("llama")
    rows = [pack_row([], [[5 + i, 6, 7 + i]], [9]) for i in range(6)]
    groups = [[0, 1, 2], [3], [4], [5]]
    batch = PackedBatch.from_rows(rows)
    with count_host_syncs() as counted:
        out = generate(lm.model, lm.tokenizer, batch, new_cache(lm.model.config.num_hidden_layers, batch.shape[1] + 8), groups,
                       group_fusion.avg_groups, gen, attention="sdpa", eos_ids=set())
    steps = max(len(d.tokens) for d in out)
    assert steps == 8
    prefill_syncs = 2  # the fusion-temperature probe and the group check are per call, not per step
    assert counted["syncs"] <= per_step * steps + prefill_syncs, counted


@pytest.mark.parametrize("weights", [
    [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([1.0])],
    ["entropy", "agreement", "entropy", "entropy"],
], ids=["numbers", "rules"])
def test_weighted_fusion_adds_no_host_sync_per_step(random_lm, weights):
    """Weights are checked once per call, not at every step: decoding 8 more tokens costs 8 more
    syncs (the one batched token copy per step), for numbers and for per-step rules alike."""
    from selfensemble.bench.timing import count_host_syncs
    from selfensemble.engine.packing import pack_row

    lm = random_lm("llama")
    rows = [pack_row([], [[5 + i, 6, 7 + i]], [9]) for i in range(6)]
    groups, batch, counts = [[0, 1, 2], [3], [4], [5]], PackedBatch.from_rows(rows), []
    for steps in (8, 16):
        gen = GenerationConfig(max_new_tokens=steps, stop_at_newline=False)
        with count_host_syncs() as counted:
            out = generate(lm.model, lm.tokenizer, batch, new_cache(lm.model.config.num_hidden_layers,
                           batch.shape[1] + steps), groups, group_fusion.weighted_avg_groups, gen, attention="sdpa",
                           eos_ids=set(), weights=weights)
        assert max(len(d.tokens) for d in out) == steps
        counts.append(counted["syncs"])
    assert counts[1] - counts[0] == 8, counts


def test_count_host_syncs_counts_and_restores():
    from selfensemble.bench.timing import count_host_syncs

    t = torch.tensor([1.0, 2.0])
    with count_host_syncs() as counted:
        t.tolist(), t[0].item(), bool(t[0]), float(t[1])
    assert counted["syncs"] == 4
    t.tolist()
    assert counted["syncs"] == 4  # unwrapped after the block
