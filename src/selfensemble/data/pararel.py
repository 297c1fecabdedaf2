"""ParaRel (Elazar et al., 2021): T-REx facts asked through human-written paraphrased templates.

Each fact becomes one Item whose prompts are every template of its relation, filled with the
subject and a [MASK] for the object. Paraphrases are exactly what self-ensembling fuses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import SelfEnsembleError, did_you_mean
from ._common import (
    DEFAULT_CLOZE_DEMO,
    ClozeFact,
    build_cloze_dataset,
    check_limit,
    dedupe,
    fill_template,
    get_str,
    option_int,
    option_list,
    read_jsonl,
    reject_unknown_options,
    require_path,
)
from .base import Dataset
from .bundled import announce, bundled_note, sample_path

OPTIONS = ("relations", "max_facts_per_relation", "max_templates", "num_train", "demo")
DEFAULT_NUM_TRAIN = 10


def load_pararel(
    path: str | Path | None,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    **options: Any,
) -> Dataset:
    """Items for `split` of the relations chosen; few-shot pools per relation (examples[relation]).

    Options: relations (e.g. ["P19", "P20"]), max_facts_per_relation, max_templates (first N
    templates of each relation), num_train (facts per relation held out as few-shot pool, default 10),
    demo (few-shot demonstration style, one of data._common.CLOZE_DEMOS; default "single").
    """
    reject_unknown_options("pararel", options, OPTIONS)
    check_limit(limit)
    why = None
    if path is None:
        folder = data_dir / "pararel" if data_dir is not None else None
        if folder is None or not folder.is_dir():
            # No hub copy of ParaRel: the bundled five relations, said loudly (bundled.py).
            why = f"no data folder at {folder}" if folder is not None else "no data folder found"
            folder = sample_path("pararel")
        path = folder
    ds = _load_root(path, split, limit, seed, options)
    if why is not None:
        note = bundled_note("pararel", len(ds.items), why)
        ds.notes.append(note)
        announce(note)
    return ds


def _load_root(path: str | Path, split: str, limit: int | None, seed: int, options: dict[str, Any]) -> Dataset:
    """Read patterns/ and facts/ under `path` for the relations `options` asks for."""
    root = require_path(path, "ParaRel data folder", kind="dir")
    patterns_dir = require_path(root / "patterns", "ParaRel patterns folder", kind="dir")
    facts_dir = require_path(root / "facts", "ParaRel facts folder", kind="dir")

    available = sorted((p.stem for p in patterns_dir.glob("P*.jsonl")), key=_relation_order)
    if not available:
        raise SelfEnsembleError(f"No patterns/P*.jsonl files in {patterns_dir}")
    wanted = option_list(options.get("relations"), "relations")
    if wanted is not None:
        for rel in wanted:
            if rel not in available:
                raise SelfEnsembleError(
                    f"Unknown ParaRel relation {rel!r} (available: {', '.join(available)}).{did_you_mean(rel, available)}"
                )
        relations = sorted(dict.fromkeys(wanted), key=_relation_order)
    else:
        relations = available
    max_templates = option_int(options.get("max_templates"), "max_templates", minimum=1)
    max_facts = option_int(options.get("max_facts_per_relation"), "max_facts_per_relation", minimum=0)
    num_train = option_int(options.get("num_train", DEFAULT_NUM_TRAIN), "num_train")

    facts: dict[str, list[ClozeFact]] = {}
    for rel in relations:
        templates = _read_templates(patterns_dir / f"{rel}.jsonl", max_templates)
        fact_file = facts_dir / f"{rel}.jsonl"
        if not fact_file.is_file():
            raise SelfEnsembleError(f"ParaRel facts file not found: {fact_file}")
        facts[rel] = _read_facts(fact_file, rel, templates)
    return build_cloze_dataset(
        "pararel",
        facts,
        split=split,
        seed=seed,
        limit=limit,
        num_train=num_train if num_train is not None else DEFAULT_NUM_TRAIN,
        max_facts_per_group=max_facts,
        demo=options.get("demo", DEFAULT_CLOZE_DEMO),
    )


def _relation_order(rel: str) -> tuple[int, str]:
    """P17 before P101: numeric order, as relations are usually listed."""
    m = re.fullmatch(r"P(\d+)", rel)
    return (int(m.group(1)), rel) if m else (1 << 30, rel)


def _read_templates(path: Path, max_templates: int | None) -> list[str]:
    templates = []
    for line_no, rec in read_jsonl(path):
        pattern = get_str(rec, "pattern", path, line_no)
        if "[X]" not in pattern or "[Y]" not in pattern:
            raise SelfEnsembleError(f"{path}:{line_no}: pattern {pattern!r} must contain both [X] and [Y].")
        templates.append(pattern)
    if not templates:
        raise SelfEnsembleError(f"{path}: no patterns.")
    return templates[:max_templates] if max_templates else templates


def _read_facts(path: Path, rel: str, templates: list[str]) -> list[ClozeFact]:
    """One fact per line; its golds are every object the relation pairs with its subject in the file.

    ParaRel lists an N-M relation one object per line ("Missouri shares border with Nebraska", "…
    Kansas"), so the line's object alone would mark another valid object wrong. As LAMA-style
    evaluation does, each fact's golds are its line's object first, then the subject's other objects
    in file order; ``meta["line_answer"]`` keeps the line's own. ``meta["templates"]`` names the
    pattern behind each prompt (a template that fills to an earlier prompt's text is dropped with it).
    """
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for line_no, rec in read_jsonl(path):
        sub = get_str(rec, "sub_label", path, line_no)
        obj = get_str(rec, "obj_label", path, line_no)
        uuid = get_str(rec, "uuid", path, line_no)
        if uuid in seen:
            raise SelfEnsembleError(f"{path}:{line_no}: duplicate uuid {uuid!r}.")
        seen.add(uuid)
        rows.append((sub, obj, uuid))
    objects: dict[str, list[str]] = {}
    for sub, obj, _ in rows:
        objects.setdefault(sub, []).append(obj)
    out: list[ClozeFact] = []
    for sub, obj, uuid in rows:
        filled: dict[str, str] = {}  # prompt text -> the first template that fills to it
        for t in templates:
            filled.setdefault(fill_template(t, sub), t)
        out.append(
            ClozeFact(
                id=f"{rel}:{uuid}",
                group=rel,
                prompts=tuple(filled),
                answers=dedupe([obj, *objects[sub]]),
                meta={"relation": rel, "subject": sub, "line_answer": obj, "templates": tuple(filled.values())},
            )
        )
    return out
