"""The one shape every dataset loader yields: an Item with its prompts and gold answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from selfensemble.config.demos import DEFAULT_DEMOS, DEMO_MODES
from selfensemble.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Example:
    """A few-shot demonstration: one or more phrasings of a question and its answer.

    Several phrasings (MyriadLAMA style) show the model that paraphrases share one answer.
    ``fact`` names what it asks about (a ParaRel subject; "" when the loader does not say): an item of
    the same group asking about the same fact never gets it as a demonstration.
    """

    prompts: tuple[str, ...]
    answer: str
    fact: str = ""  # what it asks about (a ParaRel subject): an item on the same fact never sees it


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

    def few_shot(self, item: Item, k: int, seed: int = 0, demos: str = DEFAULT_DEMOS) -> list[Example]:
        """Up to k demonstrations for ``item`` (config.demos describes the modes).

        ``demos="per-item"`` (default): a seeded sample without replacement, seeded by (seed, group,
        item id), from the item's group pool (or the global pool) with only the item's own fact left
        out — its answers are never read, so two items that differ only in their gold get the same
        demonstrations. ``"other-groups"``: the same draw from the pools of every other group (a
        dataset with one pool has none: a ConfigError). ``"shared"``: the older draw seeded by
        (seed, group) only, one set for all items of a group. Fewer than k come back when the pool
        is smaller; the run notes it in the item's record.
        """
        import random

        pool = self.demo_pool(item, demos)
        if k <= 0 or not pool:
            return []
        if demos == "shared":
            return random.Random(f"{seed}:{item.group}").sample(pool, min(k, len(pool)))
        return random.Random(f"{seed}:{item.group}:{item.id}").sample(pool, min(k, len(pool)))

    def demo_pool(self, item: Item, demos: str = DEFAULT_DEMOS) -> list[Example]:
        """The examples ``item``'s demonstrations are drawn from, in pool order, its own fact left out.

        The item's group pool (else the global pool ""), or for ``demos="other-groups"`` the pools of
        every other group in name order. Own fact: an example asking the item's question, or of the
        same group about the same fact (``Example.fact`` = the item's ``meta["subject"]``).
        """
        if demos not in DEMO_MODES:
            raise ConfigError(f"Unknown demonstration mode {demos!r}; use one of {', '.join(DEMO_MODES)}."
                              + did_you_mean(str(demos), list(DEMO_MODES)))
        if demos == "other-groups":
            others = [g for g in sorted(self.examples) if g != item.group]
            if not any(self.examples[g] for g in others):
                raise ConfigError(f"demos='other-groups' draws demonstrations from other groups' pools, but "
                                  f"dataset {self.name!r} has none besides {item.group or 'its one pool'!r}; "
                                  "use a dataset whose items come in groups (ParaRel relations).")
            return [ex for g in others for ex in self.examples[g] if item.question not in ex.prompts]
        pool = self.examples.get(item.group) or self.examples.get("", [])
        subject = item.meta.get("subject")
        return [ex for ex in pool if item.question not in ex.prompts and not (subject and ex.fact == subject)]

    def prior_answer(self, item: Item) -> str | None:
        """The most common answer of ``item``'s group pool (its own fact left out): what a rule that
        reads no question would answer. Answers count as one by scoring.answer_key; a tie goes to
        the answer seen first in the pool. None for an empty pool. Example: pool answers Paris,
        Rome, paris, Rome → "Paris" (2 each, Paris first).
        """
        from selfensemble.scoring import answer_key

        counts: dict[tuple[str, ...], list] = {}
        for ex in self.demo_pool(item, "per-item"):
            key = answer_key(ex.answer)
            if key:
                counts.setdefault(key, [0, ex.answer])[0] += 1
        if not counts:
            return None
        return max(counts.values(), key=lambda c: c[0])[1]  # max keeps the first of equal counts


def prompt_key(text: str) -> str:
    """The form two prompts are compared by: whitespace runs collapsed, ends stripped."""
    return " ".join(text.split())
