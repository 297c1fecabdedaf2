"""The one shape every dataset loader yields: an Item with its prompts and gold answers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """A few-shot demonstration: one or more phrasings of a question and its answer.

    Several phrasings (MyriadLAMA style) show the model that paraphrases share one answer.
    """

    prompts: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class Item:
    """One question asked through several prompts.

    ``prompts[0]`` is the original question; the rest are paraphrases (possibly none yet).
    ``group`` names the pool few-shot examples come from (e.g. a ParaRel relation).
    """

    id: str
    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    group: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def question(self) -> str:
        return self.prompts[0]

    @property
    def paraphrases(self) -> tuple[str, ...]:
        return self.prompts[1:]


@dataclass
class Dataset:
    """Items to answer plus what the prompt needs around them (instruction, few-shot pool).

    ``examples`` maps a group name to its pool of few-shot examples ("" = one pool for all).
    ``notes`` says where the items came from when it is not what was asked for (e.g. the bundled
    sample read because no data folder was found); callers show them.
    """

    name: str
    items: list[Item]
    instruction: str = ""
    examples: dict[str, list[Example]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def few_shot(self, item: Item, k: int, seed: int = 0) -> list[Example]:
        """k examples from the item's group (or the global pool), deterministic in (seed, group)."""
        import random

        pool = self.examples.get(item.group) or self.examples.get("", [])
        pool = [ex for ex in pool if item.question not in ex.prompts]
        if k <= 0 or not pool:
            return []
        rng = random.Random(f"{seed}:{item.group}")
        return rng.sample(pool, min(k, len(pool)))
