"""Prompt variants (--variants): formats carry the same content, sampling is seeded and blind to the
gold, the plain run keeps its exact tokens, and each variant inside a fused query is the variant
asked alone (segments isolated under flex, rows equal to the reference decoder under logit fusion)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.run import RunConfig
from selfensemble.config.variants import parse_variants
from selfensemble.data.base import Dataset, Example, Item
from selfensemble.engine.formats import FORMATS, FormatSpec, apply_format, parse_rendered
from selfensemble.engine.prompts import PromptFormat, build_parts, build_variant_parts
from selfensemble.engine.queries import Query, query_parts
from selfensemble.engine.rows import plan_rows
from selfensemble.engine.variants import levels, permutation, sample_variants, variant_query
from selfensemble.errors import ConfigError
from selfensemble.pipeline.build import build_queries

GOLDEN = Path(__file__).parent / "data" / "plain_prompt_rows.json"
EXAMPLES = (Example(("What is the capital of Italy?",), "Rome"), Example(("Who wrote the play Hamlet?",), "William Shakespeare"),
            Example(("Where is Suwayq located?",), "Oman"))


# --------------------------------------------------------------------------- the format grammar


@pytest.mark.parametrize("index", range(len(FORMATS)))
def test_every_format_renders_the_same_content(index):
    """A round-trip parser written from the spec recovers instruction, demonstrations and question."""
    spec = FORMATS[index]
    fmt = apply_format(PromptFormat(instruction="Answer the question in a few words.", examples=EXAMPLES), spec)
    question = "Which city is the capital of France?"
    text = fmt.prefix_text() + fmt.question_template.format(question=question) + fmt.cue
    got = parse_rendered(text, spec, has_instruction=True)
    assert got == {"instruction": "Answer the question in a few words.",
                   "examples": [(e.prompts[0], e.answer) for e in EXAMPLES], "question": question}


def _queries(ds, items, cfg):
    return build_queries(ds, items, cfg)[1]


def test_formats_are_distinct_surfaces_and_format_0_is_the_default():
    texts = set()
    for spec in FORMATS:
        fmt = apply_format(PromptFormat(examples=EXAMPLES), spec)
        texts.add(fmt.prefix_text() + fmt.question_template.format(question="Q?") + fmt.cue)
    assert len(texts) == len(FORMATS) >= 100
    default = PromptFormat(examples=EXAMPLES)
    assert apply_format(default, FORMATS[0]) == default


def test_the_parser_can_fail():
    """Control: a text rendered under one format does not parse as another."""
    a, b = FORMATS[0], FormatSpec(question_field="Question")
    fmt = apply_format(PromptFormat(examples=EXAMPLES), a)
    with pytest.raises(ValueError):
        parse_rendered(fmt.prefix_text() + fmt.question_template.format(question="Q?") + fmt.cue, b, False)


# --------------------------------------------------------------------------- sampling


def test_sampling_is_seeded_distinct_and_keeps_variant_0_first():
    counts = {"format": 50, "demos": 5, "order": 5}
    a = sample_variants(counts, 8, seed=3, key="item-1")
    assert a == sample_variants(counts, 8, seed=3, key="item-1")
    assert a != sample_variants(counts, 8, seed=4, key="item-1")
    assert a != sample_variants(counts, 8, seed=3, key="item-2")
    assert a[0] == {"format": 0, "demos": 0, "order": 0}
    assert len({json.dumps(v, sort_keys=True) for v in a}) == 8  # without replacement
    for key in range(20):  # 8 of 9 points: a draw with replacement would repeat one
        near_all = sample_variants({"format": 3, "order": 3}, 8, seed=0, key=str(key))
        assert len({(v["format"], v["order"]) for v in near_all}) == 8
    assert all(0 <= v[d] < counts[d] for v in a for d in counts)


def test_a_small_product_is_taken_whole_in_order():
    got = sample_variants({"format": 2, "order": 3}, 10, seed=0, key="x")
    assert got == [{"format": f, "order": o} for f in range(2) for o in range(3)]


def test_sampling_draws_uniformly_from_the_product():
    """Every non-base point is equally likely (chi-square-free check: counts within 5 sd)."""
    counts = {"format": 3, "order": 3}
    hits = {}
    for k in range(3000):
        for v in sample_variants(counts, 3, seed=0, key=str(k))[1:]:
            hits[(v["format"], v["order"])] = hits.get((v["format"], v["order"]), 0) + 1
    assert len(hits) == 8 and (0, 0) not in hits
    expected, sd = 3000 * 2 / 8, math.sqrt(3000 * 2 / 8)
    assert all(abs(h - expected) < 5 * sd for h in hits.values())


def test_levels_are_capped_by_what_exists():
    assert levels(("paraphrase", "format", "demos", "order"), 5, 3, 2) == {
        "paraphrase": 3, "format": 5, "demos": 5, "order": 2}
    assert levels(("demos",), 5, 1, 0) == {"demos": 1}
    assert permutation(3, 0) == (0, 1, 2)
    assert len({permutation(4, j) for j in range(24)}) == 24


def test_parse_variants():
    assert parse_variants("order,format") == ("format", "order")
    assert parse_variants(None) == ("paraphrase",)
    with pytest.raises(ConfigError, match="Did you mean 'format'"):
        parse_variants("formats")
    with pytest.raises(ConfigError, match="twice"):
        parse_variants("demos,demos")


def _dataset(golds: tuple[str, ...]) -> tuple[Dataset, list[Item]]:
    pool = [Example((f"Question {i}?",), f"answer {i}") for i in range(12)]
    items = [Item(f"i{k}", (f"What is thing {k}?", f"Thing {k} is what?"), (golds[k % len(golds)],), "g")
             for k in range(4)]
    return Dataset("toy", items, "Answer briefly.", {"g": pool}), items


def _run_cfg(**kw) -> RunConfig:
    return RunConfig(**{"num_paraphrases": 4, "few_shot": 3, "variants": ["format", "demos", "order"], **kw})


def test_variants_do_not_depend_on_the_gold_answers():
    ds_a, items_a = _dataset(("alpha",))
    ds_b, items_b = _dataset(("beta", "gamma"))
    qa, qb = _queries(ds_a, items_a, _run_cfg()), _queries(ds_b, items_b, _run_cfg())
    assert [q.variants for q in qa] == [q.variants for q in qb]
    fa, fb = _queries(ds_a, items_a, _run_cfg(variants=["format"])), _queries(ds_b, items_b, _run_cfg(variants=["format"]))
    assert [q.formats for q in fa] == [q.formats for q in fb] and [q.prompts for q in fa] == [q.prompts for q in fb]


def test_demos_variants_are_other_draws_and_order_variants_permute_draw_0():
    ds, items = _dataset(("alpha",))
    cfg = _run_cfg(variants=["demos", "order"], num_paraphrases=25, variant_levels=5)
    q = _queries(ds, items, cfg)[0]
    base = ds.few_shot(items[0], 3, cfg.seed, cfg.demos)
    for v, f in zip(q.variants, q.formats, strict=True):
        drawn = tuple(ds.few_shot(items[0], 3, _demo_seed(cfg.seed, v["demos"]), cfg.demos))
        assert sorted(f.examples, key=str) == sorted(drawn, key=str)
        if v["demos"] == 0:
            assert f.examples == tuple(base[i] for i in permutation(3, v["order"]))
    assert len({f.examples for f in q.formats}) > 5


def _demo_seed(seed: int, level: int) -> int:
    from selfensemble.engine.variants import demo_seed

    return demo_seed(seed, level)


# --------------------------------------------------------------------------- the plain run, token for token


@pytest.fixture(scope="module")
def tok(embedded_tokenizer):
    return embedded_tokenizer


def _golden_rows(parts, layout: str) -> dict:
    return {f"{m}/{layout}": [r.tokens for r in plan_rows(m, parts, None, EngineConfig(attention="sdpa", layout=layout),
                                                       cached_prefix=False).rows]
            for m in ("origin", "per_prompt", "avg", "flex")}


@pytest.mark.parametrize("case", range(4))
def test_plain_prompts_are_todays_tokens(tok, fewshot_fmt, case):
    """Rows of every method equal those the engine built before variants existed (frozen file), through
    the plain path and through the variant path with one format for all prompts."""
    frozen = json.loads(GOLDEN.read_text())[case]
    fmt = fewshot_fmt if frozen["format"] == "few_shot" else PromptFormat(instruction="Answer briefly.")
    plain = query_parts(tok, Query(frozen["prompts"], fmt))
    same = query_parts(tok, Query(frozen["prompts"], fmt, formats=[fmt] * len(frozen["prompts"])))
    for parts in (plain, same):
        got = {**_golden_rows(parts, "shared"), **_golden_rows(parts, "full")}
        assert got == frozen["rows"]


def test_a_plain_run_asks_what_it_asked_before(tok):
    """`--variants paraphrase` (the default) builds the queries the run built before: the item's first N
    prompts in one format with draw 0 of its demonstrations."""
    from selfensemble.pipeline.build import select_prompts
    ds, items = _dataset(("alpha",))
    cfg = RunConfig(num_paraphrases=2, few_shot=3)
    for it, q in zip(items, _queries(ds, items, cfg), strict=True):
        before = build_parts(tok, PromptFormat(instruction=ds.instruction, examples=tuple(ds.few_shot(it, 3, 0))),
                             select_prompts(it, cfg))
        got = query_parts(tok, q)
        assert (got.prefix, got.segments, got.cue, got.cues) == (before.prefix, before.segments, before.cue, None)
        assert q.variants == [{"paraphrase": 0}, {"paraphrase": 1}]


def test_each_variant_inside_a_query_is_the_variant_alone(tok):
    q = variant_query("Who wrote Hamlet?", "format,demos,order", n=6, seed=1)
    parts = query_parts(tok, q)
    assert parts.cues is not None and len(parts.prefix) > 0  # the instruction stays shared
    for i, (p, f) in enumerate(zip(q.prompts, q.formats, strict=True)):
        assert parts.full(i) == build_parts(tok, f, [p]).full(0)


def test_repeated_variants_are_dropped_with_a_note(tok):
    fmt = PromptFormat(examples=EXAMPLES)
    with pytest.warns(UserWarning, match="dropped duplicate prompt 2"):
        parts = build_variant_parts(tok, [fmt, apply_format(fmt, FORMATS[3]), fmt], ["Q?", "Q?", "Q?"])
    assert parts.kept_indices == [0, 1] and Query(["Q?"] * 3, formats=[fmt, apply_format(fmt, FORMATS[3]), fmt]
                                                  ).kept_indices() == [0, 1]


# --------------------------------------------------------------------------- the engine over variants


def _variant_parts(lm):
    q = variant_query(["What is the capital of France?", "Which city is the capital of France?"],
                      "paraphrase,format,order", n=4, fmt=PromptFormat(instruction="Answer briefly.", examples=EXAMPLES))
    return q, query_parts(lm.tokenizer, q)


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
@pytest.mark.parametrize("cached", [False, True])
@torch.inference_mode()
def test_flex_over_format_variants_isolates_each_segment(random_lm, attention, cached, eager_flex):
    """Under flex, each variant's segment (its own demonstrations, surface and question) gives the
    same last-token logits as that variant's prompt alone, with the shared prefix in the row or cached."""
    from selfensemble.engine.packing import PackedBatch
    from test_attention import causal_logits, packed_logits, prefix_cache

    lm = random_lm("llama")
    q, parts = _variant_parts(lm)
    assert len({tuple(s) for s in parts.segments}) == len(q.prompts) and len(parts.segments) == 4
    row = plan_rows("flex", parts, None, EngineConfig(attention="sdpa", positions="restart"), cached_prefix=cached).rows[0]
    P = len(parts.prefix) if cached else 0
    batch = PackedBatch.from_rows([row], prefix_len=P, pad_id=0, multiple_of=32)
    logits = packed_logits(lm.model, batch, attention, prefix_cache(lm.model, parts.prefix, 1) if cached else None)
    for k, (p, f) in enumerate(zip(q.prompts, q.formats, strict=True), start=1):
        alone = build_parts(lm.tokenizer, f, [p])
        last = int((batch.segment_ids[0] == k).nonzero().max())
        torch.testing.assert_close(logits[0, last], causal_logits(lm.model, alone.prefix + alone.segments[0])[-1],
                                   atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("method", ["avg", "max", "flex"])
def test_fusion_over_variants_equals_the_no_cache_reference(random_lm, method, eager_flex):
    """The KV-cached engine over variant prompts decodes what the slow reference decodes from rows
    built from each variant alone (logit fusion) or packed with the shared cue (flex)."""
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.packing import pack_row
    from selfensemble.engine.reference import reference_generate
    from selfensemble.methods.registry import get_method

    lm = random_lm("llama")
    q, parts = _variant_parts(lm)
    alone = [build_parts(lm.tokenizer, f, [p]) for p, f in zip(q.prompts, q.formats, strict=True)]
    if method == "flex":
        rows = [pack_row(parts.prefix, [a.full(0)[len(parts.prefix):-len(a.cue)] for a in alone], parts.cue)]
    else:
        rows = [pack_row([], [a.full(0)], []) for a in alone]
    want = reference_generate(lm.model, rows, get_method(method).fusion_fn(), 5, lm.eos_token_ids)
    cfg = EngineConfig(attention="sdpa", positions="restart", rescale=False, fusion_temperature=1.0, fusion_scale=1.0)
    got = Engine(lm, cfg).answer_many([q], method, GenerationConfig(max_new_tokens=5, stop_at_newline=False))[0]
    assert got.tokens == want and len(want) >= 3


def test_per_prompt_over_variants_is_each_variant_asked_alone(random_lm):
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.engine import Engine

    lm = random_lm("qwen2")
    q, _ = _variant_parts(lm)
    engine = Engine(lm, EngineConfig(attention="sdpa", batch_size=3))
    gen = GenerationConfig(max_new_tokens=4, stop_at_newline=False)
    each = engine.answer_many([q], "per_prompt", gen)[0].per_prompt_generation
    alone = [engine.answer_many([Query([p], f)], "origin", gen)[0].generation
             for p, f in zip(q.prompts, q.formats, strict=True)]
    assert each == alone and len(set(alone)) > 1


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def engine(load_random):
    from selfensemble.engine.engine import Engine

    return Engine(load_random("llama"), EngineConfig(attention="sdpa", batch_size=4))


def _pararel_cfg(out: Path, **kw) -> RunConfig:
    import selfensemble
    from selfensemble.config.load import LoadSpec

    sample = Path(selfensemble.__file__).parent / "samples" / "pararel"
    base = dict(dataset="pararel", data_path=str(sample), limit=4, num_paraphrases=4, few_shot=3, max_new_tokens=3,
                load=LoadSpec("random:llama"), engine=EngineConfig(attention="sdpa", batch_size=4), out=str(out),
                methods=["per_prompt", "avg", "flex"], variants=["format", "order"])
    return RunConfig(**{**base, **kw})


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_run_records_the_same_variants_for_every_method_and_reports_them(tmp_path, engine, monkeypatch):
    from selfensemble.analysis.report import report
    from selfensemble.pipeline.experiment import run_experiment

    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))
    run_experiment(_pararel_cfg(tmp_path), engine=engine)
    runs = {m: _lines(tmp_path / m / "results.jsonl") for m in ("per_prompt", "avg", "flex")}
    for recs in zip(*runs.values(), strict=True):
        assert len({json.dumps([r["variants"], r["prompts"]]) for r in recs}) == 1
        assert recs[0]["variants"][0] == {"format": 0, "order": 0} and len(recs[0]["variants"]) == 4
        assert len(recs[0]["per_prompt"]) == 4
    manifest = json.loads((tmp_path / "flex" / "manifest.json").read_text())
    assert manifest["config"]["variants"] == ["format", "order"]
    result = report([tmp_path], tmp_path / "report.png")
    block = result["prompt_sensitivity"][0]["by_dimension"]
    assert set(block) == {"format", "order"} and block["format"]["n_items"] == 4
    assert Path(result["sensitivity_png"]).exists() and result["sensitivity_chart"]["panels"]
    json.loads(Path(result["json"]).read_text())  # strict JSON (no NaN)


def test_resume_with_other_variants_is_refused(tmp_path, engine, monkeypatch):
    from selfensemble.errors import SelfEnsembleError
    from selfensemble.pipeline.experiment import run_experiment

    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))
    cfg = _pararel_cfg(tmp_path, methods=["origin"], limit=2)
    run_experiment(cfg, engine=engine)
    run_experiment(replace(cfg, limit=3), engine=engine)  # same variants: resumes
    assert len(_lines(tmp_path / "origin" / "results.jsonl")) == 3
    with pytest.raises(SelfEnsembleError, match="variants: stored"):
        run_experiment(replace(cfg, variants=["format", "demos"]), engine=engine)
    with pytest.raises(SelfEnsembleError, match="variant_levels: stored"):
        run_experiment(replace(cfg, variant_levels=7), engine=engine)


def test_bad_variant_settings_are_refused_before_any_model_loads(tmp_path):
    from selfensemble.pipeline.experiment import run_experiment

    with pytest.raises(ConfigError, match="few_shot"):
        run_experiment(_pararel_cfg(tmp_path, few_shot=0, variants=["demos"]))
    with pytest.raises(ConfigError, match="prompt_indices"):
        run_experiment(_pararel_cfg(tmp_path, prompt_indices=[0, 1]))
    with pytest.raises(ConfigError, match="Unknown variant dimension"):
        _pararel_cfg(tmp_path, variants=["fromat"])


def test_a_dimension_with_nothing_to_vary_is_said():
    pass
    from selfensemble.pipeline.variants import short_note

    _, items = _dataset(("alpha",))
    bare = Dataset("toy", items, "Answer briefly.", {})  # no demonstrations to permute
    cfg = _run_cfg(variants=["format", "order"])
    queries = _queries(bare, items, cfg)
    assert all(v["order"] == 0 for q in queries for v in q.variants)
    assert "order took value 0 only" in short_note(queries, cfg)
    assert short_note(_queries(*_dataset(("alpha",)), cfg), cfg) is None
