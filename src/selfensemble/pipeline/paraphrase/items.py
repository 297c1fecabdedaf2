"""A run's items with the prompts they are asked through: their own, screened, or topped up by the model.

``ensure_paraphrases`` is the run's paraphrase phase (experiment.run_experiment calls it once, before
any method): a dataset's own paraphrases are screened when the gate is on for them, a question that
brings paraphrases of its own keeps exactly those, and every other question short of N prompts gets
model-written ones from the shared cache (``paraphrase_items``: written now when missing). What
happened to an item is put in its meta, so its records say so (``paraphrase_gate``, ``record.notes``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfensemble.config.gate import GateConfig
from selfensemble.config.run import RunConfig
from selfensemble.data.base import Item
from selfensemble.pipeline.paraphrase.gate import check, gate_record
from selfensemble.pipeline.progress import as_progress

__all__ = ["ensure_paraphrases", "paraphrase_items"]


def ensure_paraphrases(engine: Any, cfg: RunConfig, items: list[Item], progress=None) -> list[Item]:
    """Questions with fewer than N prompts get model-written paraphrases (cached on disk).

    Generated paraphrases pass the gate (paraphrase_gate.py) unless ``cfg.gate.enabled`` is False; a
    question whose candidates mostly fail is asked through fewer prompts, and its record says so
    (``paraphrase_gate`` in the item's meta → the run records). A dataset's own paraphrases are
    screened only when ``cfg.gate.enabled`` is True. A question that brings its own paraphrases (or a
    gate verdict, e.g. a fixed paraphrase file) is never topped up with model-written ones: it is asked
    through the prompts it has, and its record says so. Fill-in-the-blank items (templates with [MASK])
    keep the templates their dataset has: a relation with fewer than N templates is asked through fewer
    prompts, and the run says so. ``engine``: the run's Backend (or an Engine / engine-like stub:
    writing.write_paraphrases wraps what it is given). ``progress``: a progress.Progress (or a
    console: notes only).
    """
    progress = as_progress(console=progress)
    items = _screen_dataset_paraphrases(cfg, items) if cfg.gate.enabled else items
    short = [it for it in items if len(it.prompts) < cfg.num_paraphrases]
    blanks = [it for it in short if "[MASK]" in it.question]
    if blanks:
        progress.note(f"{len(blanks)} fill-in-the-blank items have fewer than {cfg.num_paraphrases} templates; "
                      "they are asked through the templates they have (no generated paraphrases).")
    own = [it for it in short if "[MASK]" not in it.question and _brings_own(it)]
    if own:
        progress.note(f"{len(own)} questions bring fewer than {cfg.num_paraphrases - 1} paraphrases of their own; "
                      "they are asked through the prompts they have (never topped up with model-written ones).")
        own_ids = {it.id for it in own}
        items = [_noted(it, cfg.num_paraphrases) if it.id in own_ids else it for it in items]
    need = [it for it in short if "[MASK]" not in it.question and not _brings_own(it)]
    if not need:
        return items
    return _topped_up(engine, cfg, items, need, progress)


def _brings_own(item: Item) -> bool:
    """True when the question came with paraphrases of its own (or a gate verdict on them)."""
    return bool(item.paraphrases or item.meta.get("paraphrase_gate"))


def _topped_up(engine: Any, cfg: RunConfig, items: list[Item], need: list[Item], progress) -> list[Item]:
    """``items`` with model-written paraphrases added to those in ``need`` (and their gate records)."""
    # writer loads torch and transformers; this module is imported when the CLI starts (`--help` stays fast)
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig

    pcfg = ParaphraseConfig(num_paraphrases=cfg.num_paraphrases, seed=cfg.seed)
    gate = cfg.gate_config(generated=True)
    cache = paraphrase_items(lambda: engine, cfg.load.model, need, pcfg, progress, gate)
    todo = {it.id for it in need}
    out, few = [], 0
    for it in items:
        if it.id not in todo:
            out.append(it)
            continue
        entry = cache.entry(it.question) or {"paraphrases": [], "checks": []}
        extra = [p for p in entry["paraphrases"] if p not in it.prompts]
        meta = dict(it.meta)
        if gate.enabled:
            meta["paraphrase_gate"] = gate_record(entry, len(extra), pcfg.wanted, gate)
            few += len(extra) < pcfg.wanted
        out.append(Item(it.id, tuple(it.prompts) + tuple(extra), it.answers, it.group, meta))
    if few:
        progress.note(f"[yellow]{few} questions kept fewer than {pcfg.wanted} paraphrases after the gate; "
                      "they are asked through fewer prompts (see 'paraphrase_gate' in their records).[/]")
    return out


def _noted(item: Item, wanted: int) -> Item:
    """The item with a note for its record: asked through its own prompts, fewer than ``wanted`` (unless its
    gate verdict already says so)."""
    if (item.meta.get("paraphrase_gate") or {}).get("note"):
        return item
    record = dict(item.meta.get("record") or {})
    note = (f"asked through its {len(item.prompts)} own prompts, fewer than {wanted}: questions that bring "
            "paraphrases are not topped up with model-written ones")
    record["notes"] = [*record.get("notes", []), note]
    return Item(item.id, item.prompts, item.answers, item.group, {**item.meta, "record": record})


def _screen_dataset_paraphrases(cfg: RunConfig, items: list[Item]) -> list[Item]:
    """--gate on a dataset that brings its own paraphrases: drop those that fail (no diversity cut)."""
    gate = cfg.gate_config(generated=False)
    out = []
    for it in items:
        if not it.paraphrases:
            out.append(it)
            continue
        verdicts = check(it.question, list(it.paraphrases), gate)
        kept = [v.paraphrase for v in verdicts if v.kept]
        entry = {"checks": [v.to_dict() for v in verdicts]}
        meta = {**it.meta, "paraphrase_gate": gate_record(entry, len(kept), len(it.paraphrases), gate)}
        out.append(Item(it.id, (it.question, *kept), it.answers, it.group, meta))
    return out


def paraphrase_items(engine_factory: Callable[[], Any], model: str, items: list[Item], pcfg, progress=None,
                     gate: GateConfig | None = None, **options):
    """The paraphrase entries of the items' questions: from the shared cache, else written now.

    ``pcfg``: a ParaphraseConfig (its num_paraphrases is N, the original included); ``gate``: a
    GateConfig (None = off). Returns writing.Paraphrases (``.entry(question)``, ``.path``).
    ``engine_factory()`` (a Backend, or an Engine wrapped in one) is called only when a question is
    missing. Every finished question is saved at once and the work in progress at least every
    minute, so a killed run loses at most one engine call; a question's paraphrases come from its
    own sampling streams, the same whichever call it lands in. ``progress``: a progress.Progress (or
    a console); ``options``: more of writing.write_paraphrases' arguments (on_event, budget, …).
    """
    # writing loads torch and transformers (through writer); see _topped_up
    from selfensemble.pipeline.paraphrase.writing import write_paraphrases

    return write_paraphrases(engine_factory, model, [it.question for it in items], pcfg, gate, progress, **options)
