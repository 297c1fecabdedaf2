"""Shared helpers for the loaders: strict JSONL reading, field checks, seeded splits, cloze filling.

Every check raises SelfEnsembleError naming the file and line, because a bad record found
deep inside a run should point the user straight at what to fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SelfEnsembleError, did_you_mean
from .base import Dataset, Example, Item

MASK = "[MASK]"
CLOZE_INSTRUCTION = "Predict the [MASK] in the sentence in one word."
CLOZE_INSTRUCTION_FILL = "Fill in the blank: answer with only the word or name that replaces [MASK]."
# How few-shot demonstrations of fill-in-the-blank items look (measured in benchmarks/README.md):
#   single    one template per demonstration, the answer is the missing word
#   multi     three templates per demonstration (MyriadLAMA style), then the missing word
#   sentence  one template, the answer is the completed sentence
#   instruct  one template and the missing word, under a "fill in the blank" instruction
CLOZE_DEMOS = ("single", "multi", "sentence", "instruct")
DEFAULT_CLOZE_DEMO = "instruct"


def where(path: str | Path, line: int | None) -> str:
    """'file:line' (or just 'file') for error messages."""
    return f"{path}:{line}" if line is not None else str(path)


def require_path(path: str | Path, what: str, *, kind: str = "any") -> Path:
    """The path as a Path, or a clear error naming it when it is missing (or the wrong kind)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SelfEnsembleError(f"{what} not found: {p}")
    if kind == "dir" and not p.is_dir():
        raise SelfEnsembleError(f"{what} should be a folder, got a file: {p}")
    if kind == "file" and not p.is_file():
        raise SelfEnsembleError(f"{what} should be a file, got a folder: {p}")
    return p


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line; invalid JSON or a non-object is an error."""
    p = require_path(path, "Data file", kind="file")
    try:
        fh = p.open(encoding="utf-8")
    except OSError as exc:
        raise SelfEnsembleError(f"Cannot read {p}: {exc.strerror or exc}") from exc
    with fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SelfEnsembleError(f"{where(p, line_no)}: invalid JSON ({exc.msg}).") from exc
            if not isinstance(rec, dict):
                raise SelfEnsembleError(
                    f"{where(p, line_no)}: expected a JSON object, got {type(rec).__name__}."
                )
            yield line_no, rec


def get_str(rec: dict[str, Any], key: str, path: str | Path, line: int | None, *, what: str = "") -> str:
    """A required non-empty string field, stripped."""
    label = what or f"field {key!r}"
    if key not in rec or rec[key] is None:
        raise SelfEnsembleError(f"{where(path, line)}: missing {label}.")
    value = rec[key]
    if not isinstance(value, str):
        raise SelfEnsembleError(
            f"{where(path, line)}: {label} should be a string, got {type(value).__name__}."
        )
    value = value.strip()
    if not value:
        raise SelfEnsembleError(f"{where(path, line)}: {label} is empty.")
    return value


def get_str_list(
    value: Any, key: str, path: str | Path, line: int | None, *, allow_empty: bool = False
) -> tuple[str, ...]:
    """A list of strings (blank entries dropped, duplicates removed, order kept)."""
    if isinstance(value, tuple):
        value = list(value)
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SelfEnsembleError(
            f"{where(path, line)}: field {key!r} should be a list of strings, got {value!r}."
        )
    out = dedupe(v.strip() for v in value)
    if not out and not allow_empty:
        raise SelfEnsembleError(f"{where(path, line)}: field {key!r} is an empty list.")
    return out


def dedupe(values: Any) -> tuple[str, ...]:
    """Non-empty strings in first-seen order without repeats."""
    seen: dict[str, None] = {}
    for v in values:
        if v and v not in seen:
            seen[v] = None
    return tuple(seen)


# A protocol for honest numbers: choose settings on `dev`, report once on `heldout`; `test` stays the whole
# test side (dev + heldout). WebQuestions: dev = test questions 1-300 (file order). Fill-in-the-blank: dev =
# 20 test facts of every relation, drawn by a fixed shuffle (random.Random(f"0:{relation}"), independent of
# --seed) — the draw the flex defaults were tuned on, so those facts stay out of heldout.
SPLITS = ("train", "test", "dev", "heldout")
DEV_ITEMS = {"webqa": 300, "cloze": 20}


def carve(items: list, split: str, dev_items: int) -> list:
    """The `dev` (first ``dev_items``) or `heldout` (the rest) part of a test-side list; other splits whole.

    Example: 5 items, dev_items 2 → dev = items[:2], heldout = items[2:], test = all 5.
    """
    if split == "dev":
        return items[:dev_items]
    if split == "heldout":
        return items[dev_items:]
    return items


def carve_group(facts: list, group: str, split: str) -> list:
    """A relation's `dev` or `heldout` facts (file order kept); other splits whole. See DEV_ITEMS."""
    if split not in ("dev", "heldout"):
        return facts
    drawn = list(facts)
    random.Random(f"0:{group}").shuffle(drawn)
    dev = {f.id for f in drawn[: DEV_ITEMS["cloze"]]}
    return [f for f in facts if (f.id in dev) == (split == "dev")]


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    if split not in allowed:
        raise SelfEnsembleError(
            f"Unknown split {split!r}; choose one of {', '.join(allowed)}.{did_you_mean(split, list(allowed))}"
        )
    return split


def check_limit(limit: int | None) -> int | None:
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise SelfEnsembleError(f"limit must be a non-negative integer, got {limit!r}.")
    return limit


def seeded_rank(key: str, seed: int) -> str:
    """A stable pseudo-random sort key: same (seed, key) → same rank on every machine and Python run."""
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def round_robin(groups: dict[str, list[Item]], limit: int | None) -> list[Item]:
    """At most `limit` items taken one group at a time, so a small limit still spans many groups.

    The result keeps group order, then each group's own order, so output stays easy to read.
    """
    if limit is None:
        return [it for items in groups.values() for it in items]
    quota = dict.fromkeys(groups, 0)
    left = limit
    while left > 0:
        progressed = False
        for g, items in groups.items():
            if left == 0:
                break
            if quota[g] < len(items):
                quota[g] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return [it for g, items in groups.items() for it in items[: quota[g]]]


_ARTICLE_Y = re.compile(r"\b([Aa])n? \[Y\]")


def fill_template(template: str, subject: str) -> str:
    """[X] → subject, [Y] → [MASK], tidy spacing ("[Y] ." → "[MASK].") and capitalise a
    lowercase template start ("the capital of ..." → "The capital of ...").

    "a [Y]" / "an [Y]" both become "a(n) [MASK]": the article would otherwise leak the answer's
    first sound, and the two templates collapse into one instead of counting as two paraphrases.
    """
    text = _ARTICLE_Y.sub(lambda m: f"{m.group(1)}(n) [Y]", template.strip())
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    text = text.replace("[X]", subject).replace("[Y]", MASK)
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class ClozeFact:
    """One fact before the train/test split: its filled prompts and gold answers."""

    id: str
    group: str
    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    meta: dict = field(default_factory=dict)


def build_cloze_dataset(
    name: str,
    facts: dict[str, list[ClozeFact]],
    *,
    split: str,
    seed: int,
    limit: int | None,
    num_train: int,
    max_facts_per_group: int | None,
    demo: str = DEFAULT_CLOZE_DEMO,
) -> Dataset:
    """Split each group's facts into a few-shot pool and test items, deterministically in `seed`.

    The `num_train` facts with the smallest seeded hash of their id go to "train" (at most half a
    group), so the split doesn't depend on file order and adding facts barely moves it. Facts
    whose subject occurs once in the group are taken first, keeping subjects out of both sides.
    `max_facts_per_group` caps the selected items per group (the few-shot pool stays whole).
    `demo` (one of CLOZE_DEMOS) shapes the few-shot demonstrations and the instruction.
    """
    check_split(split)
    if demo not in CLOZE_DEMOS:
        raise SelfEnsembleError(f"Unknown demo style {demo!r}; use one of {', '.join(CLOZE_DEMOS)}."
                                + did_you_mean(str(demo), list(CLOZE_DEMOS)))
    if num_train < 0:
        raise SelfEnsembleError(f"num_train must be >= 0, got {num_train}.")
    groups: dict[str, list[Item]] = {}
    examples: dict[str, list[Example]] = {}
    for group, group_facts in facts.items():
        n_train = min(num_train, len(group_facts) // 2)
        subjects = Counter(f.meta.get("subject") for f in group_facts)
        # Prefer facts whose subject is unique in the group: a shared subject ("France borders
        # [MASK]" with several objects) in the pool would show the test question answered.
        ranked = sorted(
            group_facts, key=lambda f: (subjects[f.meta.get("subject")] > 1, seeded_rank(f.id, seed))
        )
        train_ids = {f.id for f in ranked[:n_train]}
        train = [f for f in group_facts if f.id in train_ids]
        test = [f for f in group_facts if f.id not in train_ids]
        examples[group] = [_demonstration(f, i, demo) for i, f in enumerate(train)]
        chosen = train if split == "train" else carve_group(test, group, split)
        if max_facts_per_group is not None:
            chosen = chosen[:max_facts_per_group]
        groups[group] = [
            Item(id=f.id, prompts=f.prompts, answers=f.answers, group=group, meta=f.meta) for f in chosen
        ]
    items = round_robin(groups, limit)
    instruction = CLOZE_INSTRUCTION_FILL if demo == "instruct" else CLOZE_INSTRUCTION
    return Dataset(name=name, items=items, instruction=instruction, examples=examples)


def _demonstration(fact: ClozeFact, index: int, demo: str) -> Example:
    """One few-shot example of `fact` in the `demo` style (templates rotate across the pool)."""
    prompts = _rotate(fact.prompts, index, 3 if demo == "multi" else 1)
    subject = str(fact.meta.get("subject") or "")
    if demo == "sentence":
        return Example(prompts=prompts, answer=prompts[0].replace(MASK, fact.answers[0]), fact=subject)
    return Example(prompts=prompts, answer=fact.answers[0], fact=subject)


def _rotate(prompts: tuple[str, ...], start: int, k: int) -> tuple[str, ...]:
    """k prompts starting at a fact-dependent offset, so the pool shows varied templates."""
    n = len(prompts)
    if n <= k:
        return prompts
    return tuple(prompts[(start + j) % n] for j in range(k))


def option_list(value: Any, name: str) -> list[str] | None:
    """Accept a list of strings or one comma-separated string (as typed on a command line)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SelfEnsembleError(f"Option {name!r} should be a list of strings, got {value!r}.")


def option_int(value: Any, name: str, *, minimum: int = 0) -> int | None:
    if value is None:
        return None
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise SelfEnsembleError(f"Option {name!r} should be an integer, got {value!r}.") from None
    if out < minimum:
        raise SelfEnsembleError(f"Option {name!r} should be >= {minimum}, got {out}.")
    return out


def reject_unknown_options(loader: str, options: dict[str, Any], known: tuple[str, ...]) -> None:
    """Typos in options would otherwise be silently ignored."""
    for key in options:
        if key not in known:
            hint = did_you_mean(key, list(known))
            choices = ", ".join(known) or "none"
            raise SelfEnsembleError(
                f"Unknown option {key!r} for dataset {loader!r} (options: {choices}).{hint}"
            )


def env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None
