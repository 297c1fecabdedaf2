"""The prefix KV store: every entry, whatever its copy count, under one memory bound, least recently used out."""

from __future__ import annotations

import pytest
import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.cache import PrefixCaches, cache_bytes, new_cache
from selfensemble.engine.engine import Engine
from selfensemble.engine.prompts import PromptFormat
from selfensemble.engine.queries import Query
from selfensemble.errors import SelfEnsembleError


def one_cache(tokens: int):
    cache = new_cache(1, tokens)
    cache.update(torch.zeros(1, 1, tokens, 4), torch.zeros(1, 1, tokens, 4), 0)
    return cache


def test_lru_under_a_byte_bound():
    size = cache_bytes(one_cache(8))
    assert size == 2 * 8 * 4 * 4  # keys and values, 8 slots of 4 float32
    store = PrefixCaches(3 * size)
    for key in "abc":
        store.put(key, one_cache(8))
    assert store.get("a") is not None  # a is now the most recently used
    store.put("d", one_cache(8))
    assert store.get("b") is None and all(store.get(k) is not None for k in "acd")  # b was least recent
    assert (len(store), store.bytes, store.evictions) == (3, 3 * size, 1)
    store.put("big", one_cache(8 * 4))  # larger than the whole bound: used once, never kept
    assert store.get("big") is None and len(store) == 3
    store.put("e", one_cache(16))  # two entries' worth: the two least recent go
    assert store.bytes <= 3 * size and store.get("e") is not None and store.evictions == 3
    assert store.info()["hits"] == 5 and store.info()["misses"] == 2


def test_500_distinct_full_layout_prefixes_keep_the_store_at_its_bound(random_lm):
    """Per-item instructions give every question its own prefix; the full layout caches it once per
    paraphrase (3 copies) next to its one-copy encoding. The store never passes its bound."""
    lm = random_lm("llama")
    prompts = ["What is the capital of France?", "Which city is France's capital?", "France's capital?"]
    queries = [Query(prompts, PromptFormat(instruction=f"Instruction number {i}: answer in a few words."))
               for i in range(500)]
    gen = GenerationConfig(max_new_tokens=1, stop_at_newline=False)
    knobs = dict(attention="sdpa", layout="full", positions="restart", batch_size=8)
    probe = Engine(lm, EngineConfig(**knobs))
    probe.answer_many(queries[:1], "flex", gen)
    entry_mb = probe.prefix_cache_info()["mb"]  # one prefix: its one-copy and its 3-copy encodings
    assert probe.prefix_cache_info()["entries"] == 2
    engine = Engine(lm, EngineConfig(**knobs, prefix_cache_mb=entry_mb * 5))
    seen = []
    got = engine.answer_many(queries, "flex", gen,
                             on_done=lambda i, a: seen.append(engine.prefix_cache_info()))
    info = engine.prefix_cache_info()
    assert max(s["mb"] for s in seen) <= engine.config.prefix_cache_mb
    assert max(s["entries"] for s in seen) <= 10 and info["evictions"] >= 2 * 500 - 10
    assert engine.stats["prefix_cache_misses"] >= 500 and engine.stats["prefix_tokens_encoded"] > 0
    # evicting never changes an answer: the first questions as an engine with room for all of them answers them
    roomy = Engine(lm, EngineConfig(**knobs, prefix_cache_mb=entry_mb * 1000))
    assert [a.tokens for a in roomy.answer_many(queries[:5], "flex", gen)] == [a.tokens for a in got[:5]]


def test_a_repeated_prefix_hits():
    """Hits are counted where the same prefix comes back (shared demonstrations)."""
    store = PrefixCaches(10**6)
    store.put(((1, 2), 1), one_cache(2))
    assert store.get(((1, 2), 1)) is not None and store.get(((1, 2), 3)) is None
    assert (store.hits, store.misses) == (1, 1)


def test_bound_is_checked():
    with pytest.raises(SelfEnsembleError, match="prefix_cache_mb"):
        EngineConfig(prefix_cache_mb=-1)
