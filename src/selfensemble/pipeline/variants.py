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
        raise ConfigError("--prompt-indices picks paraphrases of a plain run; with --variants (or --variant-levels) "
                          "the variants are drawn per item. Drop one of them.")
    bare = [d for d in ("demos", "order") if d in cfg.variants]
    if bare and cfg.few_shot < 1:
        raise ConfigError(f"--variants {','.join(bare)} varies the demonstrations, but --few-shot is 0.")
    if "order" in cfg.variants and cfg.few_shot < 2:
        raise ConfigError("--variants order permutes the demonstrations: it needs --few-shot 2 or more.")


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
