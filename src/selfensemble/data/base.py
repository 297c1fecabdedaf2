"""The one shape every dataset loader yields: an Item with its prompts and gold answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from selfensemble.errors import SelfEnsembleError, did_you_mean

# How few-shot demonstrations are drawn (Dataset.few_shot): per item (default), or one set per group.
DEMO_MODES = ("per-item", "shared")
DEFAULT_DEMOS = "per-item"


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

    def few_shot(self, item: Item, k: int, seed: int = 0, demos: str = "per-item") -> list[Example]:
        """k demonstrations for ``item`` from its group's pool (or the global pool).

        ``demos="per-item"`` (default) draws them per item, seeded by (seed, group, item id): never
        the item's own fact and never a demonstration whose answer contains one of the item's gold
        answers (so a right answer can never be a copy), with distinct answers where the pool allows.
        ``demos="shared"`` is the older draw, seeded by (seed, group) only: every item of a group
        gets the same demonstrations, so a relation's answers leak into all of its items.
        """
        import random

        if demos not in DEMO_MODES:
            raise SelfEnsembleError(f"Unknown demonstration mode {demos!r}; use one of {', '.join(DEMO_MODES)}."
                                    + did_you_mean(str(demos), list(DEMO_MODES)))
        pool = self.examples.get(item.group) or self.examples.get("", [])
        pool = [ex for ex in pool if item.question not in ex.prompts]
        if k <= 0 or not pool:
            return []
        if demos == "shared":
            return random.Random(f"{seed}:{item.group}").sample(pool, min(k, len(pool)))
        return _per_item_draw(pool, item, k, random.Random(f"{seed}:{item.group}:{item.id}"))


def _per_item_draw(pool: list[Example], item: Item, k: int, rng) -> list[Example]:
    """Up to k examples in a seeded order: gold answers excluded, distinct answers first."""
    from selfensemble.scoring import answer_key

    golds = [g for g in (answer_key(a) for a in item.answers) if g]
    order = rng.sample(range(len(pool)), len(pool))
    allowed = [pool[i] for i in order if not any(_has_span(answer_key(pool[i].answer), g) for g in golds)]
    chosen, seen, repeats = [], set(), []
    for ex in allowed:
        key = answer_key(ex.answer)
        (repeats if key in seen else chosen).append(ex)
        seen.add(key)
        if len(chosen) == k:
            return chosen
    return chosen + repeats[: k - len(chosen)]


def _has_span(tokens: tuple[str, ...], span: tuple[str, ...]) -> bool:
    """``span`` occurs contiguously in ``tokens`` ("new york city" has "new york")."""
    n = len(span)
    return any(tokens[i : i + n] == span for i in range(len(tokens) - n + 1))
