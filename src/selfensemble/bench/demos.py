"""The demonstrations section: what per-item few-shot demonstrations cost next to one shared set.

Fill-in-the-blank items (the ParaRel sample bundled with the package) are asked two ways:

  shared     every item of a relation gets the same demonstrations (``--demos shared``): one prefix
             per relation, encoded once per engine and reused by every row after it
  per-item   each item draws its own demonstrations (``--demos per-item``, the default): no two
             items share a prefix, so every item's prefix is encoded for it (one-row methods
             batch such items with the prefix inside the row)

Reported per (mode, method): s/item, prefill tokens per item (rows plus prefix encodings), the
prefix tokens encoded, and × shared: s/item ÷ the same method's s/item with shared demonstrations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfensemble.bench.config import BenchConfig
from selfensemble.bench.sections import engine_config, fixed_gen, progress
from selfensemble.bench.timing import timed

if TYPE_CHECKING:
    from selfensemble.engine.models import LoadedModel
    from selfensemble.engine.queries import Query

MODES = ("shared", "per-item")


def demo_queries(config: BenchConfig, mode: str) -> list[Query]:
    """The first ``config.demo_items`` bundled ParaRel items by relation, N templates each,
    demonstrations drawn by ``mode``."""
    from selfensemble.data import load_dataset
    from selfensemble.data.bundled import sample_path
    from selfensemble.engine.prompts import PromptFormat
    from selfensemble.engine.queries import Query

    ds = load_dataset("pararel", sample_path("pararel"), split="test", seed=config.seed)
    # relation by relation, as a run meets them: shared demonstrations can then be reused
    items = sorted(ds.items, key=lambda it: it.group)[:config.demo_items]
    n = config.target_n
    return [Query(list(it.prompts[:n]), PromptFormat(instruction=ds.instruction,
                                                     examples=tuple(ds.few_shot(it, config.few_shot, config.seed, mode))))
            for it in items]


def demo_rows(lm: LoadedModel, config: BenchConfig) -> list[dict]:
    """One row per demonstration mode × timed method, at the largest batch size."""
    from selfensemble.engine.engine import Engine

    bs, gen = max(config.batch_sizes), fixed_gen(config.max_new_tokens)
    out: list[dict] = []
    for method in config.methods:
        for mode in MODES:
            queries = demo_queries(config, mode)
            # warm-up (compiles, allocator) on its own engine, so no prefix is cached before the timed pass
            Engine(lm, engine_config(config, bs)).answer_many(queries[:min(bs, len(queries))], method, gen)
            engine = Engine(lm, engine_config(config, bs))
            before = dict(engine.stats)
            run = timed(lambda e=engine, q=queries, m=method: e.answer_many(q, m, gen), lm.device)
            d = {k: engine.stats[k] - v for k, v in before.items()}
            q = len(queries)
            out.append({"demos": mode, "method": method, "items": q, "n": config.target_n, "batch_size": bs,
                        "seconds": run.seconds, "s_per_item": run.seconds / q,
                        "prefill_tokens_per_item": (d["prefill_tokens"] + d["prefix_tokens_encoded"]) / q,
                        "prefix_tokens_encoded": d["prefix_tokens_encoded"],
                        "distinct_prefixes": len({qq.fmt for qq in queries}),
                        "prefix_cache": engine.prefix_cache_info()})
            progress(f"demos {mode:8s} {method:7s} {out[-1]['s_per_item']:.3f} s/item, "
                     f"{out[-1]['prefill_tokens_per_item']:.0f} prefill tok/item")
    shared = {r["method"]: r["s_per_item"] for r in out if r["demos"] == "shared"}
    for r in out:
        r["ratio_vs_shared"] = r["s_per_item"] / shared[r["method"]] if shared.get(r["method"]) else None
    return out
