"""The static decode step (engine/step.py) against independent references.

Every family, batch 1 and batch 8, greedy and sampled, avg and flex in both layouts, with finished
rows dropped from the batch mid-answer: each answer equals the slow no-cache reference decoder's
(reference.reference_generate: every row recomputed from scratch, sampling from the same stream).
The step's tables are checked by hand, and the per-step hook sees exactly the final answers' tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.attention.masks import attention_fusion
from selfensemble.engine.cache import GrowingLayer, new_cache
from selfensemble.engine.decoding import derive_seed, generate
from selfensemble.engine.engine import Engine
from selfensemble.engine.models import LoadedModel
from selfensemble.engine.packing import CUE, PAD, PackedBatch, pack_row
from selfensemble.engine.prompts import build_parts
from selfensemble.engine.queries import Query
from selfensemble.engine.reference import reference_generate
from selfensemble.engine.rows import plan_rows
from selfensemble.engine.step import StepMasks
from selfensemble.methods import group_fusion
from selfensemble.methods.registry import get_method
from test_families import FAMILIES

STEPS = 6
QUERIES = [
    ["What is the capital of France?", "Which city is the capital of France?", "Name France's capital city."],
    ["Who wrote the novel Moby Dick?", "Moby Dick was written by whom?", "Name the author of Moby Dick."],
    ["How many legs does a spider have?", "A spider has how many legs?", "Count the legs of a spider."],
    ["What color is a clear sky?", "Which colour does the sky have on a clear day?", "The clear sky is what colour?"],
    ["Which planet is closest to the sun?", "Name the planet nearest the sun.", "What is the innermost planet?"],
    ["What language do people speak in Brazil?", "Brazilians speak which language?", "Brazil's language?"],
    ["Who painted the Mona Lisa?", "The Mona Lisa is by which painter?", "Name the Mona Lisa's artist."],
    ["At what temperature does water boil?", "Water boils at how many degrees?", "The boiling point of water?"],
]
GREEDY = GenerationConfig(max_new_tokens=STEPS, stop_at_newline=False)
SAMPLED = GenerationConfig(max_new_tokens=STEPS, stop_at_newline=False, do_sample=True, temperature=1.5, seed=4)


def answers(lm, fmt, method: str, layout: str, gen: GenerationConfig, batch_size: int) -> list[list[int]]:
    engine = Engine(lm, EngineConfig(attention="sdpa", layout=layout, batch_size=batch_size))
    return [a.tokens for a in engine.answer_many([Query(q, fmt) for q in QUERIES], method, gen)]


def reference(lm, fmt, method: str, layout: str, gen: GenerationConfig, eos: set[int]) -> list[list[int]]:
    cfg = EngineConfig(attention="sdpa", layout=layout)
    out = []
    for prompts in QUERIES:
        plan = plan_rows(method, build_parts(lm.tokenizer, fmt, prompts), None, cfg, cached_prefix=False)
        # the engine keys a query's stream by its prompts (Query.stream_key) and its group (0)
        sample = None if not gen.do_sample else {"temperature": gen.temperature, "seed":
                                                  derive_seed(gen.seed, tuple(prompts), 0)}
        out.append(reference_generate(lm.model, plan.rows, get_method(method).fusion_fn(), STEPS, eos,
                                      fusion=attention_fusion(cfg), sample=sample))
    return out


def ending_half(free: list[list[int]]) -> set[int]:
    """EOS ids that end at least half the answers mid-answer (after one or more steps, before the last)
    while one answer goes on longer, so the loop drops rows that had decoded; found among the answers'
    own tokens."""
    def ends(eos: set[int]) -> list[int]:  # the step each answer stops at (STEPS: never)
        return [next((i for i, t in enumerate(a) if t in eos), STEPS) for a in free]

    tokens = sorted({t for a in free for t in a[1:STEPS - 1]})
    half = len(free) // 2
    picks = [list(range(half)), list(range(half, len(free))), list(range(0, len(free), 2))]
    by_step = [{free[q][k] for q in chosen} for k in range(2, STEPS - 1) for chosen in picks]  # varied answers
    for eos in [{t} for t in tokens] + [{t, u} for t in tokens for u in tokens if t < u] + by_step:
        stop = sorted(ends(eos))
        at = stop[half - 1]  # by this step half the answers have ended
        if stop[0] >= 1 and at < STEPS - 1 and stop[-1] > at:
            return eos
    raise AssertionError(f"no EOS choice ends half of these answers mid-answer: {free}")


def cut(tokens: list[int], eos: set[int]) -> list[int]:
    """An answer as it reads when EOS ends it: the tokens before the first EOS id."""
    return tokens[:next((i for i, t in enumerate(tokens) if t in eos), len(tokens))]


# a plain family and a windowed, softcapped one in the fast lane; the other eight marked slow (~15 s each here)
FAST = ("llama", "gemma2")


@pytest.mark.parametrize("gen", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("method, layout", [("avg", "shared"), ("flex", "shared"), ("flex", "full")])
@pytest.mark.parametrize("arch", [a if a in FAST else pytest.param(a, marks=pytest.mark.slow) for a in FAMILIES])
def test_batch_1_and_8_equal_the_no_cache_reference(random_lm, fewshot_fmt, monkeypatch, arch, method, layout, gen):
    lm = random_lm(arch)
    eos: set[int] = set()
    monkeypatch.setattr(LoadedModel, "eos_token_ids", property(lambda self: set(eos)))
    want = reference(lm, fmt=fewshot_fmt, method=method, layout=layout, gen=gen, eos=set())
    assert answers(lm, fewshot_fmt, method, layout, gen, batch_size=1) == want  # every step of every answer
    assert answers(lm, fewshot_fmt, method, layout, gen, batch_size=8) == want
    # now half the answers end mid-answer: the batch of 8 drops their rows and decodes on without them
    eos.update(ending_half(want))
    drops = []
    select = GrowingLayer.batch_select_indices
    monkeypatch.setattr(GrowingLayer, "batch_select_indices",
                        lambda self, idx: (drops.append(len(idx)), select(self, idx))[1])
    batched = answers(lm, fewshot_fmt, method, layout, gen, batch_size=8)
    assert drops, "no finished rows were dropped: the check would not cover dropping"
    assert batched == [cut(t, eos) for t in want]  # the reference stops at the first EOS: these tokens


def test_sampled_reference_differs_from_greedy(random_lm, fewshot_fmt):
    """Control: the sampled comparison above really samples (its answers are not the greedy ones)."""
    lm = random_lm("llama")
    assert reference(lm, fewshot_fmt, "avg", "shared", SAMPLED, set()) != \
        reference(lm, fewshot_fmt, "avg", "shared", GREEDY, set())


def test_step_tables_by_hand():
    """One row with a padding slot and a cached prefix of 2: bias, key positions and the future mask."""
    row = pack_row([], [[5, 6]], [7], start=2)  # tokens at positions 2, 3, 4 after a 2-token prefix
    batch = PackedBatch.from_rows([row, pack_row([], [[5, 6, 8]], [7], start=2)], prefix_len=2)
    assert batch.segment_ids[0, 0] == PAD
    tables = StepMasks.build(batch, None, capacity=8)  # 2 prefix + 4 row slots + 2 answer slots
    inf = -math.inf
    assert tables.bias[0].tolist() == [0, 0, inf, 0, 0, 0, 0, 0]
    assert tables.key_pos[0].tolist() == [0, 1] + batch.position_ids[0].tolist() + [5, 6]
    assert tables.future.tolist() == [[0] * 7 + [inf], [0] * 8]
    assert tables.slots.tolist() == [6, 7] and tables.scale is None
    mask, scale, windows = tables.at(torch.tensor([0]), batch.next_position[:, None], torch.float32)
    assert mask.shape == (2, 1, 1, 8) and mask[0, 0, 0].tolist() == [0, 0, inf, 0, 0, 0, 0, inf]
    # a window of 3 positions: the token at position 5 sees positions 3, 4, 5 only
    assert windows(3)[0, 0, 0].tolist() == [inf, inf, inf, inf, 0, 0, 0, inf]
    kept = tables.rows(torch.tensor([1]))
    assert kept.bias.shape == (1, 8) and kept.bias[0].tolist() == tables.bias[1].tolist()


def test_on_step_hook_sees_exactly_the_answers(random_lm):
    """Streaming builds on the hook: per group, the tokens it reports are the answer's tokens, its
    last report carries the answer's finish, and nothing is reported for a group after that."""
    lm = random_lm("llama")
    rows = [pack_row([], [[5 + i, 6, 7 + i]], [9]) for i in range(6)]
    groups = [[0, 1, 2], [3], [4], [5]]
    batch = PackedBatch.from_rows(rows)
    for gen in (GenerationConfig(max_new_tokens=8, stop_at_newline=False),
                GenerationConfig(max_new_tokens=8, stop_at_newline=False, do_sample=True, seed=2)):
        with torch.inference_mode():  # as the engine calls it: the shared random model may hold inference tensors
            free = generate(lm.model, lm.tokenizer, batch, new_cache(2, batch.shape[1] + 8), groups,
                            group_fusion.avg_groups, gen, attention="sdpa", eos_ids=set())
        eos = {free[1].tokens[2]}  # group 1 ends by EOS at its third step (others may too)
        seen: dict[int, list] = {g: [] for g in range(len(groups))}
        finished: dict[int, str] = {}

        def hook(step, chosen, seen=seen, finished=finished):
            for c in chosen:
                assert c.group not in finished, "a group was reported after it finished"
                seen[c.group].append(c.token)
                if c.finish:
                    finished[c.group] = c.finish

        with torch.inference_mode():
            out = generate(lm.model, lm.tokenizer, batch, new_cache(2, batch.shape[1] + 8), groups,
                           group_fusion.avg_groups, gen, attention="sdpa", eos_ids=eos, on_step=hook)
        assert out[1].finish == "eos"
        for g, d in enumerate(out):
            assert [t for t in seen[g] if t is not None] == d.tokens
            assert finished[g] == d.finish


def test_generated_token_sees_the_whole_row_and_earlier_answer_tokens():
    """The decode tables give a generated token what the packed mask gives a cue token, plus the answer
    slots written so far (the flex rule: fusion queries see every paraphrase)."""
    row = pack_row([1, 2], [[3, 4], [5]], [6])
    batch = PackedBatch.from_rows([row])
    tables = StepMasks.build(batch, None, capacity=batch.shape[1] + 3)
    for j in range(3):
        mask, _, _ = tables.at(torch.tensor([j]), batch.next_position[:, None] + j, torch.float32)
        visible = (mask[0, 0, 0] == 0).tolist()
        assert visible == [s != PAD for s in batch.segment_ids[0].tolist()] + [k <= j for k in range(3)]
    assert CUE in batch.segment_ids[0].tolist()
