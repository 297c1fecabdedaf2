"""The benchmark's sections, each timing one question about cost on one loaded model.

  engine     s/question per method × N × batch size × layout, after a warm-up pass (compile time
             reported apart), plus an HF ``generate`` row as the outside reference
  naive      the full-recompute reference decoder (no KV cache) for avg and flex
  prefix     prefill tokens per question with and without the shared prefix's KV reused
  storm      flex over ~100 questions of varying length: how many graphs dynamo compiles
  batching   questions/s at each batch size ÷ at batch 1
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from selfensemble.bench.config import BenchConfig
from selfensemble.bench.questions import QuestionSet, make_queries
from selfensemble.bench.targets import STORM_COMPILE_TARGET
from selfensemble.bench.timing import count_host_syncs, timed
from selfensemble.engine.attention.masks import attention_fusion

if TYPE_CHECKING:
    from selfensemble.engine.models import LoadedModel
    from selfensemble.engine.queries import Query

BASELINE = "origin"  # every row's ratio_vs_origin divides by this method's row at the same batch size
NAIVE_METHODS = ("avg", "flex")  # timed against the full-recompute reference (when configured)
STORM_METHOD = "flex"  # the packed method, whose varying row lengths could recompile the kernel


#: Where the bench reports progress; ``selfensemble bench`` shows it on stderr (stdout holds only
#: the table), a library caller sees it only if it configures this logger.
LOG = logging.getLogger("selfensemble.bench")


def progress(message: str) -> None:
    """One progress line (INFO on the ``selfensemble.bench`` logger)."""
    LOG.info(message)


def fixed_gen(max_new_tokens: int):
    """Fixed-length answers (no newline stop): every method decodes the same number of steps unless EOS comes first."""
    from selfensemble.config.generation import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, stop_at_newline=False)


# -- engine rows -------------------------------------------------------------------------------
def engine_config(config: BenchConfig, batch_size: int, layout: str = "shared", **overrides: Any):
    """The EngineConfig of a bench row: the bench's attention and flex knobs, this row's batch and layout
    (the decode step eager unless ``compile=True`` is among ``overrides``)."""
    from selfensemble.config.engine import EngineConfig

    settings = dict(attention=config.attention, layout=layout, batch_size=batch_size,
                    pad_multiple=config.pad_multiple, positions=config.positions, rescale=config.rescale,
                    fusion_temperature=config.fusion_temperature, fusion_scale=config.fusion_scale,
                    prefix_cache_mb=config.prefix_cache_mb)
    return EngineConfig(**{**settings, **overrides})


def engine_row(lm: LoadedModel, queries: list[Query], method: str, n: int, batch_size: int,
               layout: str | None, config: BenchConfig, decode: str = "eager") -> tuple[dict, list]:
    """Warm up, then time all questions; returns the row and the answers.

    The warm-up covers at least one full batch, so the timed pass meets no batch shape the warm-up
    did not compile; compiles that still happen in the timed pass (new lengths) are counted apart.
    ``decode``: "eager" or "compiled" (the decode step under torch.compile).
    """
    from selfensemble.engine.engine import Engine

    engine = Engine(lm, engine_config(config, batch_size, layout or "shared", compile=decode == "compiled"))
    gen = fixed_gen(config.max_new_tokens)
    warm_q = min(max(config.warmup_questions, batch_size), len(queries))
    warm = timed(lambda: engine.answer_many(queries[:warm_q], method, gen), lm.device)
    before = dict(engine.stats)
    run = timed(lambda: engine.answer_many(queries, method, gen), lm.device)
    delta = {k: engine.stats[k] - v for k, v in before.items()}
    q = len(queries)
    steps = engine.stats["decode_steps"]
    with count_host_syncs() as syncs:  # one untimed batch (a per-step ratio): the wrapping costs time
        engine.answer_many(queries[:batch_size], method, gen)
    steps = engine.stats["decode_steps"] - steps
    s_per_q = run.seconds / q
    row = {
        "method": method, "n": n, "batch_size": batch_size, "layout": layout, "decode_mode": decode, "questions": q,
        "seconds": run.seconds, "s_per_q": s_per_q, "q_per_s": q / run.seconds,
        "prefill_tokens_per_q": delta["prefill_tokens"] / q,
        "prefix_tokens_encoded": engine.stats["prefix_tokens_encoded"],
        "generated_tokens": delta["generated_tokens"],
        "gen_tokens_per_s": delta["generated_tokens"] / run.seconds,
        "warmup_seconds": warm.seconds,
        # warm-up time beyond what its questions cost once warm: compilation, mostly
        "compile_seconds": max(0.0, warm.seconds - warm_q * s_per_q),
        "compiles_warmup": warm.compiles, "compiles_timed": run.compiles,
        "peak_rss_mb": max(warm.peak_rss_mb, run.peak_rss_mb), "cuda_peak_mb": run.cuda_peak_mb,
        # the kernels that ran, per phase (store.provenance keys), and the sentence about them
        "prefill": engine.attention_key, "decode": engine.decode_key, "attention_note": engine.attention_note,
        "prefix_cache_hits": delta["prefix_cache_hits"], "prefix_cache_misses": delta["prefix_cache_misses"],
        # every tensor → Python value of one batch (packing and prefill included) ÷ its decode steps
        "host_syncs_per_step": syncs["syncs"] / max(1, steps),
    }
    return row, run.value


def engine_rows(lm: LoadedModel, qs: QuestionSet, config: BenchConfig) -> tuple[list[dict], dict]:
    """The method × N × batch × layout × decode mode grid; ``layout`` is None where it does not apply
    (not flex). Eager and compiled rows of one setting come next to each other.

    origin ignores paraphrases, so it runs once per batch size (N=1). Answers are kept by key for
    the naive rows' agreement check (the first decode mode's).
    """
    from selfensemble.methods.registry import get_method

    rows, answers = [], {}
    for method in config.methods:
        spec = get_method(method)
        for n in ((1,) if spec.asks_original_only else config.ns):
            queries = make_queries(qs, n)
            for bs in config.batch_sizes:
                for layout in (config.layouts if spec.packs_prompts else (None,)):
                    for decode in config.decode_modes:
                        row, ans = engine_row(lm, queries, method, n, bs, layout, config, decode)
                        rows.append(row)
                        answers.setdefault((method, n, bs, layout), ans)
                        progress(f"{method:7s} N={n:<2d} batch={bs:<2d} layout={layout or '-':6s} {decode:8s} "
                                 f"{row['s_per_q']:.3f} s/q, compiles {row['compiles_warmup']}/{row['compiles_timed']}")
    return rows, answers


def hf_generate_row(lm: LoadedModel, qs: QuestionSet, config: BenchConfig) -> dict:
    """``model.generate`` on each original question alone, batch 1: the outside 1.0× reference.

    Our models run under the 'selfensemble' attention, which insists on explicit masks; generate
    builds its own, so it runs under SDPA and the implementation is restored afterwards.
    """
    import torch

    from selfensemble.engine.attention.dispatch import ATTN_IMPLEMENTATION
    from selfensemble.engine.prompts import build_parts

    ids = [build_parts(lm.tokenizer, qs.fmt, [q]).full(0) for q in qs.questions]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id

    def generate(tokens: list[int]) -> int:
        x = torch.tensor([tokens], device=lm.device)
        out = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=config.max_new_tokens,
                                do_sample=False, pad_token_id=pad)
        return out.shape[1] - x.shape[1]

    lm.model.set_attn_implementation("sdpa")
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            timed(lambda: generate(ids[0]), lm.device)
            run = timed(lambda: sum(generate(t) for t in ids), lm.device)
            with count_host_syncs() as syncs:  # untimed, one question: HF generate's own syncs per step
                steps = generate(ids[0])
    finally:
        lm.model.set_attn_implementation(ATTN_IMPLEMENTATION)
    q = len(ids)
    return {"method": "hf_generate", "n": 1, "batch_size": 1, "layout": None, "decode_mode": "eager", "questions": q,
            "seconds": run.seconds, "s_per_q": run.seconds / q, "q_per_s": q / run.seconds,
            "prefill_tokens_per_q": sum(map(len, ids)) / q, "prefix_tokens_encoded": 0,
            "generated_tokens": run.value, "gen_tokens_per_s": run.value / run.seconds,
            "warmup_seconds": None, "compile_seconds": None, "compiles_warmup": 0, "compiles_timed": run.compiles,
            "peak_rss_mb": run.peak_rss_mb, "cuda_peak_mb": run.cuda_peak_mb, "prefill": "hf-sdpa", "decode": "hf-sdpa",
            "attention_note": "model.generate under transformers' own SDPA", "prefix_cache_hits": 0,
            "prefix_cache_misses": 0,
            "host_syncs_per_step": syncs["syncs"] / max(1, steps)}


def add_ratios(rows: list[dict]) -> None:
    """× origin (same batch size and decode mode, same run) and × HF generate, on every row, in place."""
    origin = {(r["batch_size"], r["decode_mode"]): r["s_per_q"] for r in rows if r["method"] == BASELINE}
    hf = next((r["s_per_q"] for r in rows if r["method"] == "hf_generate"), None)
    for r in rows:
        base = origin.get((r["batch_size"], r["decode_mode"]))
        r["ratio_vs_origin"] = r["s_per_q"] / base if base and r["method"] != "hf_generate" else None
        r["ratio_vs_hf"] = r["s_per_q"] / hf if hf else None


# -- naive full-recompute rows -------------------------------------------------------------------
def naive_row(lm: LoadedModel, queries: list[Query], method: str, n: int, config: BenchConfig,
              cached: dict | None, cached_answers: list | None) -> dict:
    """Time ``reference_generate`` (every step recomputes every row from scratch) on a few questions."""
    from selfensemble.engine.prompts import build_parts
    from selfensemble.engine.reference import reference_generate
    from selfensemble.engine.rows import plan_rows
    from selfensemble.methods.registry import get_method

    spec = get_method(method)
    fuse = spec.fusion_fn()
    plans = [plan_rows(method, build_parts(lm.tokenizer, q.fmt, list(q.prompts)), None, engine_config(config, 1),
                       False)
             for q in queries]

    def run_all(max_new: int) -> list[list[int]]:
        return [reference_generate(lm.model, p.rows, fuse, max_new, lm.eos_token_ids) for p in plans]

    timed(lambda: run_all(1), lm.device)  # warm-up: allocator, kernels
    run = timed(lambda: run_all(config.max_new_tokens), lm.device)
    q = len(queries)
    generated = sum(len(t) for t in run.value)
    row = {"method": method, "n": n, "questions": q, "s_per_q": run.seconds / q,
           "gen_tokens_per_s": generated / run.seconds if run.seconds else None,
           "prompt_tokens_per_q": sum(len(r.tokens) for p in plans for r in p.rows) / q,
           "cached_s_per_q": cached["s_per_q"] if cached else None, "speedup": None, "agree": None}
    if cached:
        row["speedup"] = row["s_per_q"] / cached["s_per_q"]
    knobs = attention_fusion(engine_config(config, 1)).active
    if cached_answers is not None and not (spec.packs_prompts and knobs):  # the reference has no fusion knobs
        row["agree"] = sum(a.tokens == t for a, t in zip(cached_answers, run.value, strict=False))
    return row


def naive_rows(lm: LoadedModel, qs: QuestionSet, config: BenchConfig, rows: list[dict],
               answers: dict) -> list[dict]:
    """avg and flex (shared layout) against their cached batch-1 engine rows, for every N."""
    out = []
    count = min(config.naive_questions, len(qs.questions))
    from selfensemble.methods.registry import get_method

    for method in (m for m in NAIVE_METHODS if m in config.methods):
        for n in config.ns:
            layout = "shared" if get_method(method).packs_prompts else None
            cached = next((r for r in rows if (r["method"], r["n"], r["batch_size"], r["layout"])
                           == (method, n, 1, layout)), None)
            got = answers.get((method, n, 1, layout))
            out.append(naive_row(lm, make_queries(qs, n)[:count], method, n, config, cached,
                                 got[:count] if got else None))
            progress(f"naive {method} N={n}: {out[-1]['s_per_q']:.2f} s/q")
    return out


# -- prefix KV reuse -----------------------------------------------------------------------------
PREFIX_SETTINGS = (  # (method, layout, reuse_prefix)
    ("origin", None, True), ("origin", None, False),
    ("avg", None, True), ("avg", None, False),
    ("flex", "shared", True), ("flex", "shared", False), ("flex", "full", True), ("flex", "full", False),
)


def prefix_rows(lm: LoadedModel, qs: QuestionSet, config: BenchConfig) -> list[dict]:
    """Prefill tokens per question and time to the first token, with and without prefix KV reuse.

    One new token only: this section is about prefill. ``prefix_tokens_once`` is the shared
    instruction + few-shot prefix, encoded once per engine and reused by every row and question.
    """
    from selfensemble.engine.engine import Engine

    n = config.target_n
    queries = make_queries(qs, n)
    gen = fixed_gen(1)
    out = []
    for method, layout, reuse in PREFIX_SETTINGS:
        if method not in config.methods:
            continue
        # the full layout shares one prefix encoding only when its copies sit at the same (restarted) positions
        pos = {"positions": "restart"} if layout == "full" else {}
        engine = Engine(lm, engine_config(config, 1, layout or "shared", reuse_prefix=reuse, **pos))
        engine.answer_many(queries[:1], method, gen)  # warm-up; encodes the prefix if reused
        before = engine.stats["prefill_tokens"]
        run = timed(lambda e=engine, m=method: e.answer_many(queries, m, gen), lm.device)
        q = len(queries)
        row_tokens = (engine.stats["prefill_tokens"] - before) / q
        once = engine.stats["prefix_tokens_encoded"]
        out.append({"method": method, "layout": layout, "reuse_prefix": reuse, "n": n, "questions": q,
                    "positions": engine.config.positions if layout is not None else None,  # packed rows only
                    "row_prefill_tokens_per_q": row_tokens, "prefix_tokens_once": once,
                    "amortised_prefill_tokens_per_q": row_tokens + once / q,
                    "first_token_s_per_q": run.seconds / q, "compiles": run.compiles})
    return out


# -- compile storm -------------------------------------------------------------------------------
def storm_run(lm: LoadedModel, queries: list[Query], pad_multiple: int, config: BenchConfig) -> dict:
    """flex, shared layout, batch 1 over all ``queries`` from a clean dynamo state; counts compiles.

    The engine's own availability probe compiles once on creation; that is counted apart so the
    number reported is what the questions themselves cost.
    """
    import torch

    from selfensemble.engine.engine import Engine
    from selfensemble.engine.prompts import build_parts

    if config.compile_flex:
        torch._dynamo.reset()  # as if a fresh process: earlier sections' graphs do not count
    probe = timed(lambda: Engine(lm, replace(engine_config(config, 1), pad_multiple=pad_multiple)), lm.device)
    engine = probe.value
    run = timed(lambda: engine.answer_many(queries, STORM_METHOD, fixed_gen(config.storm_new_tokens)), lm.device)
    lengths = set()
    for q in queries:
        parts = build_parts(lm.tokenizer, q.fmt, list(q.prompts))
        row_len = sum(map(len, parts.segments)) + len(parts.cue)
        lengths.add(row_len)
    padded = {-(-x // pad_multiple) * pad_multiple for x in lengths}
    return {"pad_multiple": pad_multiple, "questions": len(queries), "new_tokens": config.storm_new_tokens,
            "compiles": run.compiles, "probe_compiles": probe.compiles, "seconds": run.seconds,
            "s_per_q": run.seconds / len(queries), "distinct_lengths": len(lengths),
            "distinct_padded_lengths": len(padded), "prefill": engine.attention_key}


def storm_section(lm: LoadedModel, qs: QuestionSet, config: BenchConfig) -> dict:
    """Run the storm with the configured pad multiple; if it compiles too often, sweep others."""
    if STORM_METHOD not in config.methods or config.storm_questions == 0:
        return {"runs": [], "recommended_pad_multiple": None}
    queries = make_queries(qs, config.target_n, config.storm_questions)
    runs = [storm_run(lm, queries, config.pad_multiple, config)]
    progress(f"storm pad={config.pad_multiple}: {runs[0]['compiles']} compiles")
    if runs[0]["compiles"] > STORM_COMPILE_TARGET:
        for m in config.storm_pad_multiples:
            if m != config.pad_multiple:
                runs.append(storm_run(lm, queries, m, config))
                progress(f"storm pad={m}: {runs[-1]['compiles']} compiles")
    best = min(runs, key=lambda r: (r["compiles"], r["s_per_q"]))
    return {"runs": runs, "recommended_pad_multiple": best["pad_multiple"], "compile_flex": config.compile_flex}


# -- batching --------------------------------------------------------------------------------
def batching_rows(rows: list[dict]) -> list[dict]:
    """questions/s at each larger batch size ÷ at batch 1, per method, N, layout and decode mode."""
    one = {(r["method"], r["n"], r["layout"], r["decode_mode"]): r for r in rows if r["batch_size"] == 1}
    out = []
    for r in rows:
        base = one.get((r["method"], r["n"], r["layout"], r["decode_mode"]))
        if r["batch_size"] > 1 and base and r["method"] != "hf_generate":
            out.append({"method": r["method"], "n": r["n"], "layout": r["layout"], "decode_mode": r["decode_mode"],
                        "batch_size": r["batch_size"],
                        "q_per_s": r["q_per_s"], "q_per_s_batch1": base["q_per_s"],
                        "speedup": r["q_per_s"] / base["q_per_s"]})
    return out
