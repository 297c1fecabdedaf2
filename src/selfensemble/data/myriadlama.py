"""MyriadLAMA (Zhao et al., 2024): LAMA facts with many manual and generated templates per relation.

One row per (fact, template): uuid, rel_uri, sub_ent, obj_aliases, template ([X]/[Y]), is_manual.
Rows are grouped by fact, so each Item asks one fact through all its chosen templates.
Read from a local .jsonl / .parquet file or folder, or the hub (`iszhaoxin/MyriadLAMA`) via `datasets`.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    get_str_list,
    option_int,
    option_list,
    read_jsonl,
    reject_unknown_options,
    require_path,
    seeded_rank,
    where,
)
from .base import Dataset

HUB_NAME = "iszhaoxin/MyriadLAMA"
OPTIONS = ("templates", "num_auto", "max_templates", "relations", "max_facts_per_relation", "num_train", "demo")
TEMPLATE_MODES = ("manual", "auto", "mixed")
DEFAULT_NUM_AUTO = 4
DEFAULT_NUM_TRAIN = 10
_SUFFIXES = (".jsonl", ".json", ".parquet")

Row = tuple[str, int | None, dict[str, Any]]  # (source, line or row number, record)


def load_myriadlama(
    path: str | Path | None,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    **options: Any,
) -> Dataset:
    """Items for `split`, grouped per relation (rel_uri), with multi-prompt few-shot pools.

    Options: templates = "manual" (default) | "auto" | "mixed" (manual + `num_auto` seeded
    automatic ones, default 4), max_templates, relations, max_facts_per_relation, num_train,
    demo (few-shot demonstration style, one of data._common.CLOZE_DEMOS; default "single").
    """
    reject_unknown_options("myriadlama", options, OPTIONS)
    check_limit(limit)
    mode = options.get("templates", "manual")
    if mode not in TEMPLATE_MODES:
        raise SelfEnsembleError(
            f"Unknown templates option {mode!r}; choose one of {', '.join(TEMPLATE_MODES)}.{did_you_mean(str(mode), list(TEMPLATE_MODES))}"
        )
    num_auto = option_int(options.get("num_auto", DEFAULT_NUM_AUTO), "num_auto")
    max_templates = option_int(options.get("max_templates"), "max_templates", minimum=1)
    max_facts = option_int(options.get("max_facts_per_relation"), "max_facts_per_relation")
    num_train = option_int(options.get("num_train", DEFAULT_NUM_TRAIN), "num_train")
    wanted = option_list(options.get("relations"), "relations")

    if path is None and data_dir is not None and (data_dir / "myriadlama").exists():
        path = data_dir / "myriadlama"
    rows = _hub_rows() if path is None else _local_rows(path)
    facts = _group_facts(rows, mode, num_auto or 0, max_templates, seed)
    if wanted is not None:
        for rel in wanted:
            if rel not in facts:
                raise SelfEnsembleError(
                    f"Unknown MyriadLAMA relation {rel!r} (available: {', '.join(facts)}).{did_you_mean(rel, list(facts))}"
                )
        facts = {rel: facts[rel] for rel in dict.fromkeys(wanted)}
    return build_cloze_dataset(
        "myriadlama",
        facts,
        split=split,
        seed=seed,
        limit=limit,
        num_train=num_train if num_train is not None else DEFAULT_NUM_TRAIN,
        max_facts_per_group=max_facts,
        demo=options.get("demo", DEFAULT_CLOZE_DEMO),
    )


def _local_rows(path: str | Path) -> Iterator[Row]:
    p = require_path(path, "MyriadLAMA data")
    files = sorted(f for f in p.iterdir() if f.suffix in _SUFFIXES) if p.is_dir() else [p]
    if not files:
        raise SelfEnsembleError(f"No .jsonl or .parquet files in {p}")
    for f in files:
        if f.suffix == ".parquet":
            yield from _parquet_rows(f)
        else:
            for line_no, rec in read_jsonl(f):
                yield str(f), line_no, rec


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise SelfEnsembleError(f"Cannot read parquet file {path}: {exc}") from exc
    for i, rec in enumerate(frame.to_dict(orient="records")):
        yield f"{path} row", i, rec


def _hub_rows() -> Iterator[Row]:
    hint = "pass --data-path to a local MyriadLAMA .jsonl/.parquet file or folder"
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise SelfEnsembleError(
            f"MyriadLAMA needs the 'datasets' package to download {HUB_NAME} "
            f"(pip install 'selfensemble[hub]'), or {hint}."
        ) from None
    try:
        dsets = datasets.load_dataset(HUB_NAME)
    except Exception as exc:
        raise SelfEnsembleError(f"Could not load {HUB_NAME} from the hub ({exc}); {hint}.") from exc
    for split_name in sorted(dsets):
        for i, rec in enumerate(dsets[split_name]):
            yield f"{HUB_NAME}[{split_name}] row", i, rec


def _entity_label(value: Any, key: str, src: str, line: int | None) -> str:
    """sub_ent may be a plain string or a dict such as {"uri": ..., "label": ...}."""
    if isinstance(value, dict):
        for k in ("label", "name", "sub_label", "surface", "text"):
            if isinstance(value.get(k), str) and value[k].strip():
                return value[k].strip()
        aliases = value.get("aliases")
        if isinstance(aliases, list) and aliases and isinstance(aliases[0], str) and aliases[0].strip():
            return aliases[0].strip()
        raise SelfEnsembleError(f"{where(src, line)}: field {key!r} has no label/name: {value!r}.")
    return get_str({key: value}, key, src, line)


def _group_facts(
    rows: Iterator[Row], mode: str, num_auto: int, max_templates: int | None, seed: int
) -> dict[str, list[ClozeFact]]:
    """Collect rows per uuid (first-seen order), then choose and fill each fact's templates."""
    by_uuid: dict[str, dict[str, Any]] = {}
    for src, line, rec in rows:
        uuid = get_str({"uuid": _as_str(rec.get("uuid"))}, "uuid", src, line)
        rel = get_str(rec, "rel_uri", src, line)
        if "sub_ent" not in rec:
            raise SelfEnsembleError(f"{where(src, line)}: missing field 'sub_ent'.")
        subject = _entity_label(rec["sub_ent"], "sub_ent", src, line)
        if "obj_aliases" not in rec:
            raise SelfEnsembleError(f"{where(src, line)}: missing field 'obj_aliases'.")
        answers = get_str_list(rec["obj_aliases"], "obj_aliases", src, line)
        template = get_str(rec, "template", src, line)
        if "[Y]" not in template:
            raise SelfEnsembleError(f"{where(src, line)}: template {template!r} has no [Y].")
        manual = rec.get("is_manual")
        if not isinstance(manual, bool):
            raise SelfEnsembleError(
                f"{where(src, line)}: field 'is_manual' should be true/false, got {manual!r}."
            )
        fact = by_uuid.setdefault(
            uuid, {"rel": rel, "subject": subject, "answers": answers, "manual": [], "auto": []}
        )
        if fact["rel"] != rel:
            raise SelfEnsembleError(
                f"{where(src, line)}: uuid {uuid!r} has rel_uri {rel!r}, earlier {fact['rel']!r}."
            )
        fact["manual" if manual else "auto"].append(template)

    facts: dict[str, list[ClozeFact]] = {}
    for uuid, f in by_uuid.items():
        manual = list(dict.fromkeys(f["manual"]))
        auto = list(dict.fromkeys(f["auto"]))
        if mode == "manual":
            chosen = manual
        elif mode == "auto":
            chosen = auto
        else:
            picked = set(sorted(auto, key=lambda t, u=uuid: seeded_rank(f"{u}:{t}", seed))[:num_auto])
            chosen = manual + [t for t in auto if t in picked]
        if max_templates:
            chosen = chosen[:max_templates]
        prompts = dedupe(fill_template(t, f["subject"]) for t in chosen)
        if not prompts:
            continue  # no template of the requested kind for this fact
        facts.setdefault(f["rel"], []).append(
            ClozeFact(
                id=f"{f['rel']}:{uuid}",
                group=f["rel"],
                prompts=prompts,
                answers=f["answers"],
                meta={"relation": f["rel"], "subject": f["subject"]},
            )
        )
    if not facts:
        raise SelfEnsembleError(f"No MyriadLAMA facts with {mode!r} templates.")
    return facts


def _as_str(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
