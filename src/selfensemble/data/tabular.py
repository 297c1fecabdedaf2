"""The user's own questions from a .jsonl or .csv file, with optional paraphrase columns.

CSV cells can't hold lists, so list-valued cells (answers, a paraphrase list) are split on "|".
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import SelfEnsembleError
from ._common import (
    check_limit,
    dedupe,
    get_str,
    option_list,
    read_jsonl,
    reject_unknown_options,
    require_path,
    where,
)
from .base import Dataset, Example, Item

INSTRUCTION = "Answer the question in a few words."
OPTIONS = (
    "question_column",
    "answers_column",
    "paraphrase_columns",
    "id_column",
    "train_path",
    "instruction",
)
LIST_SEP = "|"


def load_jsonl(path: str | Path | None, **kwargs: Any) -> Dataset:
    """Questions from a JSON-lines file (see load_table for the options)."""
    return load_table("jsonl", path, **kwargs)


def load_csv(path: str | Path | None, **kwargs: Any) -> Dataset:
    """Questions from a CSV file with a header row (see load_table for the options)."""
    return load_table("csv", path, **kwargs)


def load_table(
    fmt: str,
    path: str | Path | None,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    **options: Any,
) -> Dataset:
    """Items in file order, `limit` first ones; `split` and `seed` don't apply to a user file.

    Options: question_column ("question"), answers_column ("answers"; None = no gold answers),
    paraphrase_columns (list of columns each holding one paraphrase, or one column holding a
    list), id_column (default: line number), train_path (same format; becomes the few-shot
    pool), instruction (overrides the default). A JSONL row's ``paraphrase_gate`` object (the gate's
    verdicts, as `paraphrase` and the confirm protocol write them) is kept in the item's meta, so the
    run records it and never tops the question up with model-written paraphrases.
    """
    reject_unknown_options(fmt, options, OPTIONS)
    check_limit(limit)
    if path is None:
        raise SelfEnsembleError(f"Dataset {fmt!r} needs a file: pass data_path.", arguments=("data_path",))
    items = _read_items(fmt, Path(path), options, limit)
    examples: dict[str, list[Example]] = {}
    if options.get("train_path"):
        train = _read_items(fmt, Path(options["train_path"]), options, None, pool=True)
        pool = [Example(prompts=it.prompts, answer=it.answers[0]) for it in train if it.answers]
        examples[""] = pool
    instruction = options.get("instruction") or INSTRUCTION
    return Dataset(name=fmt, items=items, instruction=instruction, examples=examples)


def _records(fmt: str, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    require_path(path, f"{fmt.upper()} file", kind="file")
    if fmt == "jsonl":
        yield from read_jsonl(path)
        return
    try:
        fh = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise SelfEnsembleError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    with fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise SelfEnsembleError(f"{path}: empty CSV file (a header row is needed).")
        try:
            for row in reader:
                if None in row:
                    raise SelfEnsembleError(
                        f"{where(path, reader.line_num)}: more cells than header columns."
                    )
                if all(v in (None, "") for v in row.values()):
                    continue
                yield reader.line_num, row
        except csv.Error as exc:
            raise SelfEnsembleError(f"{where(path, reader.line_num)}: invalid CSV ({exc}).") from exc


def _as_list(value: Any, key: str, path: Path, line: int, *, split: bool) -> list[str]:
    """A cell as a list of strings: a JSON list as is; a string split on '|' (CSV) or kept whole (JSON)."""
    if value is None:
        return []
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise SelfEnsembleError(
                f"{where(path, line)}: field {key!r} should be a list of strings, got {value!r}."
            )
        return [v.strip() for v in value]
    if isinstance(value, str):
        return [v.strip() for v in (value.split(LIST_SEP) if split else [value])]
    raise SelfEnsembleError(
        f"{where(path, line)}: field {key!r} should be a string or list of strings, got {type(value).__name__}."
    )


def _read_items(
    fmt: str, path: Path, options: dict[str, Any], limit: int | None, *, pool: bool = False
) -> list[Item]:
    """Items of one file; for a few-shot `pool` file the id and paraphrase columns are optional."""
    q_col = options.get("question_column", "question")
    a_col = options.get("answers_column", "answers")
    id_col = options.get("id_column")
    raw_para = options.get("paraphrase_columns")
    para_cols = option_list(raw_para, "paraphrase_columns") or []
    csv_cells = fmt == "csv"

    items: list[Item] = []
    seen: set[str] = set()
    for line, rec in _records(fmt, path):
        if limit is not None and len(items) >= limit:
            break
        question = get_str(rec, q_col, path, line, what=f"question column {q_col!r}")
        paraphrases: list[str] = []
        for col in para_cols:
            if col not in rec:
                if pool:
                    continue
                raise SelfEnsembleError(f"{where(path, line)}: missing paraphrase column {col!r}.")
            cell = rec[col]
            if csv_cells and len(para_cols) > 1:
                paraphrases.append((cell or "").strip())  # one paraphrase per column: keep '|' as text
            else:
                paraphrases.extend(_as_list(cell, col, path, line, split=csv_cells))
        answers: tuple[str, ...] = ()
        if a_col is not None:
            if a_col not in rec:
                raise SelfEnsembleError(f"{where(path, line)}: missing answers column {a_col!r}.")
            answers = dedupe(_as_list(rec[a_col], a_col, path, line, split=csv_cells))
            if not answers:
                raise SelfEnsembleError(f"{where(path, line)}: answers column {a_col!r} is empty.")
        if id_col is not None and not (pool and rec.get(id_col) in (None, "")):
            if rec.get(id_col) in (None, ""):
                raise SelfEnsembleError(f"{where(path, line)}: missing id column {id_col!r}.")
            item_id = str(rec[id_col]).strip()
        else:
            item_id = str(line)
        if item_id in seen:
            raise SelfEnsembleError(f"{where(path, line)}: duplicate id {item_id!r}.")
        seen.add(item_id)
        meta = {}
        if isinstance(rec.get("paraphrase_gate"), dict) and not pool:
            meta["paraphrase_gate"] = rec["paraphrase_gate"]  # a fixed file's gate verdicts reach the records
        items.append(Item(id=item_id, prompts=dedupe([question, *paraphrases]), answers=answers, meta=meta))
    if not items and limit != 0:
        raise SelfEnsembleError(f"{path}: no records.")
    return items
