"""The questions the benchmark times, read through ``data.load_dataset`` like any run's.

WebQuestions from the shared data folder when it is there, else the trivia sample bundled with
the package (``experiment.SAMPLE_DATA``). Every question is asked with one prompt format (the
dataset's instruction and few-shot examples drawn once), so the prefix KV is encoded once per
engine, as in a real run. Paraphrases are made by templates: their quality does not matter for
timing, their length variety does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selfensemble.errors import SelfEnsembleError

if TYPE_CHECKING:
    from selfensemble.engine.prompts import PromptFormat
    from selfensemble.engine.queries import Query

PARAPHRASE_TEMPLATES = (
    "Question: {q}",
    "Please answer: {q}",
    "I wonder, {q}",
    "Tell me: {q}",
    "Can you tell me {q}",
    "Quick trivia question for you: {q}",
    "Here is something I have always wanted to know: {q}",
    "{q} Answer in a few words.",
    "Do you happen to know {q}",
    "Help me with this one, please. {q}",
    "My friend asked me this and I was not sure: {q}",
)
MAX_N = len(PARAPHRASE_TEMPLATES) + 1


@dataclass(frozen=True)
class QuestionSet:
    """Questions to ask, the prompt format around them, and where they came from."""

    questions: list[str]
    fmt: PromptFormat
    source: str


def _source(data_dir: str | Path | None) -> tuple[str, Path, dict]:
    """(dataset name, path, loader options): the shared WebQuestions folder, else the bundled sample."""
    from selfensemble.data import default_data_dir
    from selfensemble.pipeline.experiment import SAMPLE_DATA

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = root / "webquestions" if root is not None else None
    if folder is not None and (folder / "test.jsonl").is_file():
        return "webqa", folder, {}
    # the sample is its own few-shot pool: for timing only the prompt's length matters
    return "jsonl", SAMPLE_DATA, {"train_path": str(SAMPLE_DATA), "instruction": "Answer the question in a few words."}


def load_questions(count: int, few_shot: int = 5, data_dir: str | Path | None = None,
                   seed: int = 0) -> QuestionSet:
    """``count`` test questions (cycled when the dataset has fewer) and one few-shot format for all.

    ``make_queries`` rotates templates per index, so cycled questions still give different prompts.
    """
    from selfensemble.data import load_dataset
    from selfensemble.engine.prompts import PromptFormat

    if count < 1:
        raise SelfEnsembleError(f"count must be >= 1, got {count}")
    name, path, options = _source(data_dir)
    ds = load_dataset(name, path, split="test", limit=count, seed=seed, **options)
    if not ds.items:
        raise SelfEnsembleError(f"{path} holds no questions to time.")
    questions = [ds.items[i % len(ds.items)].question for i in range(count)]
    examples = tuple(ds.few_shot(ds.items[0], few_shot, seed))
    return QuestionSet(questions, PromptFormat(instruction=ds.instruction, examples=examples), f"{name} ({path})")


def paraphrases(question: str, n: int, rotate: int = 0) -> list[str]:
    """The question plus n-1 template paraphrases; ``rotate`` varies which (and so the lengths)."""
    if not 1 <= n <= MAX_N:
        raise SelfEnsembleError(f"N must be between 1 and {MAX_N}, got {n}.")
    k = len(PARAPHRASE_TEMPLATES)
    return [question] + [PARAPHRASE_TEMPLATES[(rotate + i) % k].format(q=question) for i in range(n - 1)]


def make_queries(qs: QuestionSet, n: int, count: int | None = None) -> list[Query]:
    """One Query per question (``count`` cycles the questions), N prompts each."""
    from selfensemble.engine.queries import Query

    chosen = qs.questions if count is None else [qs.questions[i % len(qs.questions)] for i in range(count)]
    return [Query(paraphrases(q, n, rotate=i), qs.fmt) for i, q in enumerate(chosen)]
