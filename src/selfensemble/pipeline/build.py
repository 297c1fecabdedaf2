"""From the loaded items to what a run asks: each item's prompts, demonstrations and record fields.

``build_queries`` turns items into engine Queries — the prompts the run asks (``select_prompts``), the
few-shot demonstrations of ``--demos`` (data.base.Dataset.few_shot), the item's own sampling streams
and, with a weights file (pipeline.tuning), each prompt's dev-tuned weight — and puts in each item's
meta what its records should say about it (``item_fields``: the pool's majority answer, the templates
behind its prompts, a short demonstration draw), which store.records.make_record merges.
"""

from __future__ import annotations

from selfensemble.config.run import RunConfig
from selfensemble.data.base import Dataset, Item
from selfensemble.errors import ConfigError

__all__ = ["build_queries", "item_fields", "load_run_weights", "select_prompts"]


def select_prompts(item: Item, cfg: RunConfig) -> list[str]:
    """The prompts the run asks of ``item``: its first --num-paraphrases, then --prompt-indices of those."""
    return _selected(item, list(item.prompts), cfg)


def _selected(item: Item, values: list, cfg: RunConfig) -> list:
    """The entries of ``values`` (parallel to ``item.prompts``) for the prompts the run asks: the first
    --num-paraphrases, then --prompt-indices of those."""
    prompts = values[: cfg.num_paraphrases]
    if cfg.prompt_indices is None:
        return prompts
    bad = [i for i in cfg.prompt_indices if i >= len(prompts) or i < 0]
    if bad:
        raise ConfigError(f"prompt_indices {bad} out of range: item {item.id} has {len(prompts)} prompts.",
                          arguments=("prompt_indices",))
    return [prompts[i] for i in cfg.prompt_indices]


def item_fields(ds: Dataset, item: Item, shown: int, cfg: RunConfig) -> Item:
    """The item with what its records should say about it (meta["record"], merged by records.make_record):
    its group pool's most common answer (``prior_answer``, the no-model baseline report scores), the
    templates behind its prompts (``prompt_templates``, ParaRel; tune-weights keys on them), and a note
    when fewer than --few-shot demonstrations could be drawn (``shown`` of them)."""
    record = dict(item.meta.get("record") or {})
    record["prior_answer"] = ds.prior_answer(item)
    if item.meta.get("templates"):
        record["prompt_templates"] = _selected(item, list(item.meta["templates"]), cfg)
    if shown < cfg.few_shot:
        record["notes"] = [*record.get("notes", []), f"{shown} of {cfg.few_shot} demonstrations ({cfg.demos}): "
                           "the pool holds no more examples besides the item's own fact"]
    return Item(item.id, item.prompts, item.answers, item.group, {**item.meta, "record": record})


def build_queries(ds: Dataset, items: list[Item], cfg: RunConfig, weights: dict | None = None):
    """(items with their record fields, one Query per item): the run's prompts, its few-shot
    demonstrations (Dataset.few_shot under --demos), its own sampling streams, and with a weights
    file (pipeline.tuning) each prompt's dev-tuned weight, refused before any decoding when the file
    does not cover an item's group or prompts."""
    from selfensemble.engine.decoding import derive_seed
    from selfensemble.engine.prompts import PromptFormat
    from selfensemble.engine.queries import Query
    from selfensemble.pipeline.tuning import weights_for
    from selfensemble.pipeline.variants import variant_query

    plain = cfg.is_plain()
    if weights is not None and not plain:
        raise ConfigError("A weights file is keyed by template or prompt position; it cannot weight format/demos/"
                          f"order variants (variants={list(cfg.variants)}).")
    out_items, queries = [], []
    for it in items:
        examples = tuple(ds.few_shot(it, cfg.few_shot, cfg.seed, cfg.demos))
        it = item_fields(ds, it, len(examples), cfg)
        fmt = PromptFormat(instruction=ds.instruction, chat=cfg.chat, examples=examples)
        seed = derive_seed(cfg.seed, it.id)  # the item's own sampling streams
        if not plain:  # N variants of the item (pipeline/variants.py), each recorded as its dict of values
            out_items.append(it)
            queries.append(variant_query(ds, it, cfg, fmt, seed))
            continue
        prompts = select_prompts(it, cfg)
        indices = cfg.prompt_indices if cfg.prompt_indices is not None else range(len(prompts))
        tuned = None if weights is None else weights_for(weights, it.group, it.meta["record"].get("prompt_templates"),
                                                         len(prompts), where=f"--weights {cfg.weights}")
        out_items.append(it)
        queries.append(Query(prompts, fmt, weights=tuned, seed=seed, variants=[{"paraphrase": i} for i in indices]))
    return out_items, queries


def load_run_weights(cfg: RunConfig) -> dict | None:
    """The weights file ``cfg.weights`` names (pipeline.tuning), read and checked; None for a rule
    (confidence, entropy, agreement). ``select`` without a file is refused here, before the model loads."""
    from selfensemble.methods.registry import Rows, get_method
    from selfensemble.pipeline.tuning import WEIGHT_RULES, is_weights_file, load_weights

    if is_weights_file(cfg.weights):
        return load_weights(cfg.weights)
    chosen = [m for m in cfg.methods if get_method(m).rows is Rows.CHOSEN]
    if chosen:
        raise ConfigError(f"{chosen[0]} answers through the dev-best prompt of each item's group: give weights FILE, "
                          f"a file fit on a dev run (`selfensemble tune-weights DEV_RUN --out FILE`), not "
                          f"{cfg.weights!r} ({', '.join(WEIGHT_RULES)} are per-item rules).", arguments=("weights",))
    return None
