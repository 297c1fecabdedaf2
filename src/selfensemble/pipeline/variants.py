"""A run's prompts under ``--variants``: which variants each item gets, read from the run's config.

``paraphrase`` alone (the default, no ``variant_levels``; ``RunConfig.is_plain``) is the plain run: the
item's first N prompts in one format (build.select_prompts), each prompt recorded as ``{"paraphrase": i}``.
Any other choice asks each item through N variants of the product of its dimensions
(engine/variants.py), drawn from (seed, item id) and the number of values each dimension has —
never from the gold answers or the method, so every method of the run fuses over the same prompts.
"""

from __future__ import annotations

from selfensemble.config.run import RunConfig
from selfensemble.data.base import Dataset, Item
from selfensemble.engine.prompts import PromptFormat
from selfensemble.engine.queries import Query
from selfensemble.engine.variants import demo_seed, levels, render, sample_variants


def variant_query(ds: Dataset, item: Item, cfg: RunConfig, base: PromptFormat, seed: int) -> Query:
    """The item asked through its N variants. ``base``: its plain-run format (draw 0 of its
    demonstrations, as ``ds.few_shot(item, k, cfg.seed, cfg.demos)`` gives them); ``seed``: the
    item's sampling-stream seed."""
    def draw(j: int):
        return ds.few_shot(item, cfg.few_shot, demo_seed(cfg.seed, j), cfg.demos)

    counts = levels(cfg.variants, cfg.levels(), len(item.prompts), len(base.examples))
    chosen = sample_variants(counts, cfg.num_paraphrases, cfg.seed, str(item.id))
    r = render(list(item.prompts), base, chosen, draw)
    return Query(r.prompts, base, seed=seed, formats=r.formats, variants=r.variants)


def recorded_variants(query: Query) -> list[dict] | None:
    """The ``variants`` field of a record: one dict per prompt the engine asked (repeats dropped)."""
    if query.variants is None:
        return None
    return [query.variants[i] for i in query.kept_indices()]


def short_note(queries: list[Query], cfg: RunConfig) -> str | None:
    """A run note when items have fewer than N variants (a product smaller than N: few templates, too
    few demonstrations to draw or order), or a dimension never leaves value 0 (nothing to vary: no
    demonstrations in the pool); each record lists the variants it asked."""
    if cfg.is_plain():
        return None
    notes = []
    short = sum(len(q.kept_indices()) < cfg.num_paraphrases for q in queries)
    if short:
        notes.append(f"{short} of {len(queries)} items have fewer than {cfg.num_paraphrases} distinct variants; "
                     "they are asked through the variants they have")
    flat = [d for d in cfg.variants if all(v.get(d, 0) == 0 for q in queries for v in q.variants or [])]
    if flat:
        notes.append(f"{', '.join(flat)} took value 0 only (nothing to vary: no demonstrations or templates?)")
    return "; ".join(notes) + " (see 'variants' in the records)." if notes else None
