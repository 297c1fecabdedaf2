"""Rules that use no model, on the real data, under each demonstration draw (no model is loaded).

    python benchmarks/checks/no_model_rules.py [--limit 403] [--split heldout]   # markdown table on stdout

For ParaRel (the confirmatory sample: the first ``--limit`` facts of ``--split``, round-robin over
relations, 5 demonstrations, seed 0) and WebQuestions (the same split), the accuracy (contains, golds
with every valid object and the alias rule) of:

  majority_answer       the item's group pool's most common answer (report's baseline)
  majority_demo_answer  the most common answer among the item's own demonstrations (report's baseline)
  missing_answer        the pool's most common answer absent from the item's demonstrations — the rule
                        that exposed the gold-excluding draw (issue 26)

under ``per-item`` (draw 2, blind to the gold), ``other-groups`` and ``shared``. The first per-item
draw (which left out every pool example whose answer was a gold) is reproduced here, for comparison
only, as ``per-item (draw 1)``.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

from selfensemble.data import load_dataset
from selfensemble.data.base import Dataset, Example, Item
from selfensemble.scoring import answer_key, is_correct, majority_vote


def draw_1(ds: Dataset, item: Item, k: int, seed: int) -> list[Example]:
    """The first per-item draw: gold answers excluded, distinct answers first (kept here to measure it)."""
    pool = ds.demo_pool(item, "per-item")
    golds = [g for g in (answer_key(a) for a in item.answers) if g]
    rng = random.Random(f"{seed}:{item.group}:{item.id}")
    order = rng.sample(range(len(pool)), len(pool))

    def has(tokens, span):
        return any(tokens[i:i + len(span)] == span for i in range(len(tokens) - len(span) + 1))

    allowed = [pool[i] for i in order if not any(has(answer_key(pool[i].answer), g) for g in golds)]
    chosen, seen, repeats = [], set(), []
    for ex in allowed:
        key = answer_key(ex.answer)
        (repeats if key in seen else chosen).append(ex)
        seen.add(key)
        if len(chosen) == k:
            return chosen
    return chosen + repeats[: k - len(chosen)]


def missing_answer(pool: list[Example], demos: list[Example]) -> str:
    ranked = [a for a, _ in Counter(answer_key(ex.answer) for ex in pool).most_common()]
    shown = {answer_key(ex.answer) for ex in demos}
    key = next((a for a in ranked if a not in shown), ranked[0])
    return " ".join(key)


def rules(ds: Dataset, draw, k: int = 5, seed: int = 0) -> dict[str, float]:
    right = Counter()
    for it in ds.items:
        demos = draw(it, k, seed)
        pool = ds.demo_pool(it, "per-item")
        right["majority_answer"] += is_correct(ds.prior_answer(it) or "", it.answers)
        if demos:
            right["majority_demo_answer"] += is_correct(majority_vote([ex.answer for ex in demos])[0], it.answers)
        right["missing_answer"] += is_correct(missing_answer(pool, demos), it.answers)
    return {name: right[name] / len(ds.items) for name in ("majority_answer", "majority_demo_answer", "missing_answer")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=403)
    ap.add_argument("--split", default="heldout")
    args = ap.parse_args()
    print("| dataset | n | draw | majority_answer | majority_demo_answer | missing_answer |")
    print("|---|---:|---|---:|---:|---:|")
    for name, path in (("pararel", None), ("webqa", None)):
        ds = load_dataset(name, path, split=args.split, limit=args.limit)
        draws = {"per-item (draw 1, leaked)": lambda it, k, s, ds=ds: draw_1(ds, it, k, s)}
        for mode in ("per-item", "other-groups", "shared"):
            if mode == "other-groups" and len(ds.examples) < 2:
                continue
            draws[mode] = lambda it, k, s, ds=ds, mode=mode: ds.few_shot(it, k, s, mode)
        for label, draw in draws.items():
            r = rules(ds, draw)
            print(f"| {name} | {len(ds.items)} | {label} | {r['majority_answer']:.3f} | "
                  f"{r['majority_demo_answer']:.3f} | {r['missing_answer']:.3f} |")


if __name__ == "__main__":
    main()
