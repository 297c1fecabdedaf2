"""A run's prompts under ``--variants``: which variants each item gets, read from the run's config.

``paraphrase`` alone (the default, no ``variant_levels``) is the plain run: the item's first N
prompts in one format (experiment.select_prompts), each prompt recorded as ``{"paraphrase": i}``.
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
from selfensemble.errors import ConfigError


def is_plain(cfg: RunConfig) -> bool:
    """True for the plain run: paraphrases only, N of them (the prompts every earlier run asked)."""
    return list(cfg.variants) == ["paraphrase"] and cfg.variant_levels is None


def n_levels(cfg: RunConfig) -> int:
    """Values per variant dimension: ``variant_levels``, else N (``num_paraphrases``)."""
    return cfg.variant_levels or cfg.num_paraphrases


def paraphrases_needed(cfg: RunConfig) -> int:
    """Prompts each item needs written or found (ensure_paraphrases): 1 when wording is not varied."""
    return n_levels(cfg) if "paraphrase" in cfg.variants else 1


def check_variants(cfg: RunConfig) -> None:
    """Refuse combinations that cannot mean anything, before any model loads."""
    if is_plain(cfg):
        return
    if cfg.prompt_indices is not None:
        raise ConfigError("prompt_indices picks paraphrases of a plain run; with variants (or variant_levels) "
                          "the prompts are drawn per item. Drop one of them.",
                          arguments=("prompt_indices", "variants", "variant_levels"))
    bare = [d for d in ("demos", "order") if d in cfg.variants]
    if bare and cfg.few_shot < 1:
        raise ConfigError(f"variants {','.join(bare)} varies the demonstrations, but few_shot is 0.",
                          arguments=("variants", "few_shot"))
    if "order" in cfg.variants and cfg.few_shot < 2:
        raise ConfigError("variants order permutes the demonstrations: it needs few_shot 2 or more.",
                          arguments=("variants", "few_shot"))


def variant_query(ds: Dataset, item: Item, cfg: RunConfig, base: PromptFormat, seed: int) -> Query:
    """The item asked through its N variants. ``base``: its plain-run format (draw 0 of its
    demonstrations, as ``ds.few_shot(item, k, cfg.seed, cfg.demos)`` gives them); ``seed``: the
    item's sampling-stream seed."""
    def draw(j: int):
        return ds.few_shot(item, cfg.few_shot, demo_seed(cfg.seed, j), cfg.demos)

    counts = levels(cfg.variants, n_levels(cfg), len(item.prompts), len(base.examples))
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
    if is_plain(cfg):
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
