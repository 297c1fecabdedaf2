"""Prompt variants: one question asked through N points of a product of dimensions, each its own prompt.

Dimensions (config/variants.py): ``paraphrase`` (the item's prompt ``j``), ``format`` (FORMATS[j],
engine/formats.py), ``demos`` (the demonstrations of draw ``j``: Dataset.few_shot with seed
``demo_seed(seed, j)``) and ``order`` (the demonstrations permuted by ``permutation(k, j)``). A
variant is a dict of values, one per chosen dimension, e.g. ``{"format": 3, "demos": 1}``; value 0
of every dimension is the prompt a plain run asks, so variant 0 (all zeros) is always prompt 0 and
``origin`` means the same in every run.

Which N variants an item gets (``sample_variants``) depends on the run seed, the item id and how
many values each dimension has, never on the gold answers or the method: every method of a run
fuses over the same prompts. Each variant becomes a (prompt, PromptFormat) pair (``render``); the
engine gives each prompt its own prefix and cue (prompts.build_variant_parts).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from selfensemble.config.variants import parse_variants
from selfensemble.data.base import Dataset, Example, Item
from selfensemble.engine.formats import FORMATS, apply_format
from selfensemble.engine.prompts import DEFAULT_EXAMPLES, PromptFormat, default_format
from selfensemble.engine.queries import Query
from selfensemble.errors import ConfigError

#: `ask` and Python queries have no dataset: ``demos`` variants draw from these generic examples
#: (value 0 keeps prompts.DEFAULT_EXAMPLES, the demonstrations a plain `ask` shows).
GENERIC_POOL: tuple[Example, ...] = DEFAULT_EXAMPLES + (
    Example(("What is the largest ocean on Earth?",), "the Pacific Ocean"),
    Example(("Who painted the Mona Lisa?",), "Leonardo da Vinci"),
    Example(("In which country is the city of Kyoto?",), "Japan"),
    Example(("What is the chemical symbol for gold?",), "Au"),
    Example(("Who was the first person to walk on the Moon?",), "Neil Armstrong"),
    Example(("Which river flows through Cairo?",), "the Nile"),
    Example(("What currency is used in the United Kingdom?",), "the pound sterling"),
    Example(("How many legs does a spider have?",), "eight"),
)


def levels(dims: Sequence[str], n_levels: int, n_prompts: int, n_demos: int) -> dict[str, int]:
    """Values per chosen dimension: ``n_levels`` each, capped by what exists.

    paraphrase: the item's prompts; format: len(FORMATS); order: k! orders of k demonstrations;
    demos: 1 without demonstrations (nothing to draw). Example: dims (format, order), 5 levels,
    3 demonstrations → {"format": 5, "order": 5}; with 2 demonstrations → order 2.
    """
    cap = {"paraphrase": n_prompts, "format": len(FORMATS), "demos": n_levels if n_demos else 1,
           "order": math.factorial(n_demos)}
    return {d: max(1, min(n_levels, cap[d])) for d in dims}


def sample_variants(counts: dict[str, int], n: int, seed: int, key: str) -> list[dict]:
    """``n`` distinct points of the product of ``counts`` ({dimension: values}): variant 0 (all zeros)
    first, then n - 1 drawn without replacement from the rest, seeded by (seed, key) alone.

    All of them, in order, when the product has no more than n points. Points are numbered in
    mixed radix (first dimension most significant), so ``random.sample`` draws from a ``range``
    without listing the product. Example: {"format": 2, "order": 3}, n = 6 → all six, (0, 0) ... (1, 2).
    """
    dims = list(counts)
    total = math.prod(counts.values())
    if n >= total:
        chosen = list(range(total))
    else:
        chosen = [0, *sorted(random.Random(f"{seed}:variants:{key}").sample(range(1, total), n - 1))]
    out = []
    for index in chosen:
        v = {}
        for d in reversed(dims):
            index, v[d] = divmod(index, counts[d])
        out.append({d: v[d] for d in dims})
    return out


def demo_seed(seed: int, level: int) -> int:
    """The seed of demonstration draw ``level``: the run's own seed for 0 (the plain run's draw)."""
    if level == 0:
        return seed
    return int(hashlib.sha256(f"{seed}:demos:{level}".encode()).hexdigest()[:8], 16)


@lru_cache(maxsize=64)
def _orders(k: int, count: int) -> tuple[tuple[int, ...], ...]:
    """The identity, then distinct seeded permutations of range(k): the same list in every run."""
    count = min(count, math.factorial(k))
    found, rng = [tuple(range(k))], random.Random(f"selfensemble-order:{k}")
    seen = set(found)
    while len(found) < count:
        p = tuple(rng.sample(range(k), k))
        if p not in seen:
            seen.add(p)
            found.append(p)
    return tuple(found)


def permutation(k: int, level: int) -> tuple[int, ...]:
    """Order ``level`` of k demonstrations (0: as drawn). Example: permutation(3, 0) → (0, 1, 2)."""
    if level >= math.factorial(k):
        raise ConfigError(f"order {level} does not exist for {k} demonstrations ({math.factorial(k)} orders).")
    return _orders(k, level + 1)[level]


@dataclass
class Rendered:
    """One question's variants: prompt i is ``prompts[i]`` in ``formats[i]``, variant ``variants[i]``."""

    prompts: list[str]
    formats: list[PromptFormat]
    variants: list[dict]


def render(prompts: Sequence[str], base: PromptFormat, chosen: Sequence[dict],
           draw: Callable[[int], Sequence[Example]] | None = None) -> Rendered:
    """Each variant as (prompt text, PromptFormat).

    ``base`` holds the instruction, the demonstrations of draw 0, the chat flag and the surface of
    format 0 (FORMATS[0] in runs and `ask`; a harness task's own in lm-eval); ``draw(j)`` gives the
    demonstrations of draw j (needed for ``demos``). A draw with fewer demonstrations than
    draw 0 (a small pool) takes order ``j`` modulo its own k!. Two variants that read the same (two
    orders of equal demonstrations) stay here: the engine drops the repeat with a note, as it does
    for a repeated paraphrase (Query.kept_indices says which prompts it asks).
    """
    texts, fmts = [], []
    for v in chosen:
        examples = tuple(draw(v["demos"])) if v.get("demos") and draw is not None else base.examples
        if v.get("order"):
            k = len(examples)
            examples = tuple(examples[i] for i in permutation(k, v["order"] % math.factorial(k)))
        fmt = replace(base, examples=examples)
        fmts.append(apply_format(fmt, FORMATS[v["format"]]) if v.get("format") else fmt)
        texts.append(prompts[v.get("paraphrase", 0)])
    return Rendered(texts, fmts, [dict(v) for v in chosen])


def variant_query(prompts: str | Sequence[str], variants: str | Sequence[str] = "format", n: int = 5,
                  fmt: PromptFormat | None = None, n_levels: int | None = None, seed: int = 0,
                  pool: Sequence[Example] = GENERIC_POOL, key: str | None = None) -> Query:
    """One question (``prompts``: the original first, then paraphrases) as a Query over ``n`` variants.

    The Python and `ask` way in; runs build theirs from the dataset (pipeline/variants.py). ``fmt``
    (default: the generic instruction and demonstrations of `ask`) is variant 0; ``demos`` draws k
    of ``pool`` per value (Dataset.few_shot), k = the demonstrations in ``fmt``; ``n_levels``: values
    per dimension (default n). ``key`` (default: the question) and ``seed`` pick which variants.

        q = variant_query("Who wrote Hamlet?", "format,order", n=5)
        engine.answer_many([q], "avg")[0]       # fused over 5 surfaces / orders
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    dims, fmt = parse_variants(variants), fmt or default_format()
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}.")
    key = key if key is not None else prompts[0]
    item = Item(id=key, prompts=tuple(prompts), answers=())
    pool_ds = Dataset(name="generic", items=[], examples={"": list(pool)})
    k = len(fmt.examples)

    def draw(j: int) -> list[Example]:
        return pool_ds.few_shot(item, k, demo_seed(seed, j))

    counts = levels(dims, n_levels or n, len(prompts), k)
    r = render(prompts, fmt, sample_variants(counts, n, seed, key), draw)
    return Query(r.prompts, fmt, seed=seed, formats=r.formats, variants=r.variants)
