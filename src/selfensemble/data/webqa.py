"""WebQuestions (Berant et al., 2013): open questions about Freebase entities with short answers.

Read from a local folder with train.jsonl / test.jsonl (the shared data layout), or from the
Hugging Face hub (`stanfordnlp/web_questions`) when no local copy exists and `datasets` is installed,
else from the bundled 200 + 200 question sample (loudly: see bundled.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SelfEnsembleError
from ._common import (
    DEV_ITEMS,
    carve,
    check_limit,
    check_split,
    get_str,
    get_str_list,
    read_jsonl,
    reject_unknown_options,
)
from .base import Dataset, Example, Item
from .bundled import announce, bundled_note, hub_unreachable, sample_path

INSTRUCTION = "Answer the question in a few words."
HUB_NAME = "stanfordnlp/web_questions"


def load_webqa(
    path: str | Path | None,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    **options: Any,
) -> Dataset:
    """Items from `split`; the train split is the few-shot pool (examples[""]).

    `path` may be the folder or one .jsonl file (then few-shot examples come from a sibling
    train.jsonl when there is one). With no path, the shared data folder is used, else the hub.
    Splits `dev` / `heldout` are the test file's first 300 questions / the rest (data._common.carve).
    """
    reject_unknown_options("webqa", options, ())
    check_split(split)
    check_limit(limit)
    if path is None:
        folder = data_dir / "webquestions" if data_dir is not None else None
        if folder is None or not folder.is_dir():
            return _hub_or_sample(split, limit, folder)
        path = folder
    return _load_path(Path(path).expanduser(), split, limit)


def _load_path(p: Path, split: str, limit: int | None) -> Dataset:
    """A folder with {split}.jsonl (+ train.jsonl as few-shot pool) or one .jsonl file; dev and heldout
    are carved from test.jsonl."""
    file_split = "train" if split == "train" else "test"
    if not p.exists():
        raise SelfEnsembleError(f"WebQuestions data not found: {p} (expected a folder with {file_split}.jsonl).")
    if p.is_dir():
        item_file, train_file = p / f"{file_split}.jsonl", p / "train.jsonl"
        if not item_file.is_file():
            raise SelfEnsembleError(f"WebQuestions split file not found: {item_file}")
    else:
        item_file, train_file = p, p.parent / "train.jsonl"
    items = carve(_read_items(item_file, file_split, None), split, DEV_ITEMS["webqa"])[:limit]
    examples = (
        [Example(prompts=it.prompts, answer=it.answers[0]) for it in _read_items(train_file, "train", None)]
        if train_file.is_file()
        else []
    )
    return Dataset(name="webqa", items=items, instruction=INSTRUCTION, examples={"": examples})


def _read_items(path: Path, split: str, limit: int | None) -> list[Item]:
    items: list[Item] = []
    seen: set[str] = set()
    for line_no, rec in read_jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        question = get_str(rec, "question", path, line_no)
        if "answers" not in rec:
            raise SelfEnsembleError(f"{path}:{line_no}: missing field 'answers'.")
        answers = get_str_list(rec["answers"], "answers", path, line_no)
        item_id = rec.get("id")
        item_id = str(item_id) if item_id not in (None, "") else f"{split}-{line_no}"
        if item_id in seen:
            raise SelfEnsembleError(f"{path}:{line_no}: duplicate id {item_id!r}.")
        seen.add(item_id)
        items.append(Item(id=item_id, prompts=(question,), answers=answers))
    return items


def _hub_or_sample(split: str, limit: int | None, looked_at: Path | None) -> Dataset:
    """The hub copy when `datasets` is installed and the hub answers, else the bundled sample.

    The hub is probed once with a short timeout first (hub_unreachable), so an offline machine
    does not sit through the `datasets` retry loop before falling back.
    """
    where = f"no data folder at {looked_at}" if looked_at is not None else "no data folder found"
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        why = "the 'datasets' package for the hub is not installed"
    else:
        why = hub_unreachable()
        if why is None:
            try:
                return _load_from_hub(datasets, split, limit)
            except Exception as exc:  # network and hub errors come in many types
                why = f"the hub failed: {type(exc).__name__}: {exc}"
    ds = _load_path(sample_path("webquestions"), split, limit)
    note = bundled_note("webqa", len(ds.items), f"{where}; {why}")
    ds.notes.append(note)
    announce(note)
    return ds


def _load_from_hub(datasets: Any, split: str, limit: int | None) -> Dataset:
    """The hub copy; `datasets` is passed in because it is an optional extra imported lazily."""
    file_split = "train" if split == "train" else "test"
    test = datasets.load_dataset(HUB_NAME, split=file_split)
    train = datasets.load_dataset(HUB_NAME, split="train")

    def to_items(rows: Any, name: str, cap: int | None) -> list[Item]:
        out = []
        for i, row in enumerate(rows):
            if cap is not None and len(out) >= cap:
                break
            where = f"{HUB_NAME}[{name}] row {i}"
            question = (row.get("question") or "").strip()
            answers = tuple(a.strip() for a in row.get("answers") or [] if isinstance(a, str) and a.strip())
            if not question or not answers:
                raise SelfEnsembleError(f"{where}: empty question or answers.")
            out.append(Item(id=f"{name}-{i}", prompts=(question,), answers=answers))
        return out

    items = carve(to_items(test, file_split, None), split, DEV_ITEMS["webqa"])[:limit]
    examples = [Example(prompts=it.prompts, answer=it.answers[0]) for it in to_items(train, "train", None)]
    return Dataset(name="webqa", items=items, instruction=INSTRUCTION, examples={"": examples})
