"""What counts as the same run: the config keys compared on resume, and how they are compared.

Where the data lives is not what it is: a data folder moved, or a run folder resumed on another
machine, names other paths for the same items. Those keys (:func:`is_data_location`) may differ
on resume; :func:`item_differences` then checks what matters, that every stored answer answers
the item as loaded now (gold, question, demonstrations), which also catches data edited in place
under an unchanged path.

Kept apart from run_store.py (the run folder's files and locks), which uses these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from selfensemble.data.base import prompt_key
from selfensemble.errors import ResumeError

#: Config keys that may change between a run and its resumption because they do not change
#: any single item's answer: how many items to do, how they are batched, where output goes,
#: how much prefix KV is kept, and how chatty the run is. A key inside a nested section is named by
#: its path ("engine.batch_size"). ``engine.compile`` is compared as the decode path instead (the
#: manifest's attention_path), so --allow-mixed can resume across it.
VOLATILE_KEYS: frozenset[str] = frozenset(
    {"limit", "batch_size", "engine.batch_size", "engine.prefix_cache_mb", "engine.compile", "out", "out_dir",
     "output", "resume", "verbose", "quiet", "progress", "log_level"}
)


#: What a differing key means, for the refusal message (a bare "stored 1, given 2" says too little).
DIFFERENCE_HINTS: dict[str, str] = {
    "demo_draw": "the demonstration draw changed (config.demos: per-item draw 2 never reads the item's "
                 "gold; draw 1 left it out and so leaked it), so the stored answers saw other demonstrations",
}


def difference_lines(diffs: dict[str, tuple]) -> str:
    """'key: stored a, given b' per difference, with its DIFFERENCE_HINTS line where there is one."""
    return "; ".join(f"{k}: stored {a!r}, given {b!r}" + (f" ({DIFFERENCE_HINTS[k]})" if k in DIFFERENCE_HINTS else "")
                     for k, (a, b) in diffs.items())


def is_data_location(key: str) -> bool:
    """True for config keys that name where data is read from ("data_path", "dataset_options.train_path")."""
    return key == "data_path" or (key.startswith("dataset_options.") and key.endswith("_path"))


def split_moves(diffs: dict[str, tuple]) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(differences that refuse a resume, data locations that moved) from :func:`config_differences`.

    A location that appears or disappears is no move: it changes which data is read.
    """
    moved = {k: v for k, v in diffs.items() if is_data_location(k) and "<absent>" not in v and None not in v}
    return {k: v for k, v in diffs.items() if k not in moved}, moved


def item_differences(records: Iterable[dict], items: Iterable[Any], question_first: bool = True,
                     demos: dict[str, list[str]] | None = None, limit: int = 3) -> list[str]:
    """Up to ``limit`` sentences naming stored records whose item reads differently now.

    ``items``: data.base.Item (``id``, ``answers``, ``question``). A record is compared on its gold
    answers; when ``question_first`` (no --prompt-indices), on its first prompt against the item's
    question, whitespace-normalised; and, given ``demos`` ({item id: records.demo_answers of its
    query now}), on the answers of its few-shot demonstrations (another training file). Records of
    items not loaded now (a smaller --limit) are not compared.
    """
    by_id = {str(it.id): it for it in items}
    found: list[str] = []
    for rec in records:
        item = by_id.get(str(rec.get("id")))
        if item is None:
            continue
        if list(rec.get("gold", [])) != list(item.answers):
            found.append(f"item {item.id}: stored gold {rec.get('gold')!r}, data now {list(item.answers)!r}")
        elif question_first and rec.get("prompts") and prompt_key(rec["prompts"][0]) != prompt_key(item.question):
            found.append(f"item {item.id}: stored question {rec['prompts'][0]!r}, data now {item.question!r}")
        elif demos is not None and "demo_answers" in rec and rec["demo_answers"] != demos.get(str(item.id)):
            found.append(f"item {item.id}: stored demonstration answers {rec['demo_answers']!r}, "
                         f"data now {demos.get(str(item.id))!r}")
        if len(found) >= limit:
            break
    return found


def json_default(obj: Any) -> Any:
    """Let numpy/torch scalars and arrays, paths and sets through json.dumps."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def jsonable(obj: Any) -> Any:
    """The value as it will read back from JSON, so stored and given configs compare like for like."""
    return json.loads(json.dumps(obj, default=json_default))


def config_differences(stored: dict, given: dict, volatile: Iterable[str] = VOLATILE_KEYS) -> dict[str, tuple]:
    """{key: (stored, given)} for run-defining keys that differ; a key missing on one side counts as a difference.

    Where both sides hold a dict under a key, its keys are compared one by one and named by their
    path, so ``{"engine": {"positions": ...}}`` differs as "engine.positions" (and "engine.batch_size"
    can be volatile while the rest of the section is not).
    """
    return _differences(jsonable(stored), jsonable(given), set(volatile), "")


def _differences(stored: dict, given: dict, skip: set[str], prefix: str) -> dict[str, tuple]:
    missing = object()
    diffs: dict[str, tuple] = {}
    for key in sorted(set(stored) | set(given), key=str):
        name = f"{prefix}{key}"
        if name in skip:
            continue
        a, b = stored.get(key, missing), given.get(key, missing)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.update(_differences(a, b, skip, f"{name}."))
        elif a != b:
            diffs[name] = ("<absent>" if a is missing else a, "<absent>" if b is missing else b)
    return diffs


def same_settings(path: Path, manifest: dict, config: dict, volatile_keys: Iterable[str],
                  upgrade: Callable[[dict], dict] | None) -> dict[str, tuple]:
    """The data locations that moved ({key: (stored, given)}); raises ResumeError when ``config``
    differs from the manifest's on any other run-defining key."""
    stored = manifest.get("config", {})
    stored = upgrade(stored) if upgrade is not None else stored
    diffs, moved = split_moves(config_differences(stored, config, volatile_keys))
    if diffs:
        raise ResumeError(f"{path} holds a run with different settings ({difference_lines(diffs)}). Resuming would mix "
                          "results from both; use another output directory or the original settings.")
    return moved
