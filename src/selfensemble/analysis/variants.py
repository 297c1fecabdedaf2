"""Prompt sensitivity per variant dimension: which choice (wording, format, demonstrations, order)
moves the answers, read from a run's per-prompt answers and their ``variants`` records.

Every prompt of a record is one cell (item, variant, score, answer). For each dimension:

* ``accuracy``: per value, the mean over items of the item's score at that value (others as they
  fell), with a bootstrap interval over items; MaxP / AvgP are its max and mean (as scoring's
  prompt_sensitivity over prompt positions).
* ``held_fixed``: per value, the accuracy with the other dimensions held fixed, from an additive
  model fitted to every cell, score = item + Σ_dimension effect(value) (least squares by
  backfitting); ``spread`` is the max - min of these. In a run that varies one dimension, or the
  full product, it equals the plain per-value spread; in a sampled product it removes the share of
  the other dimensions that chance put on each value.
* ``answer_change_share``: among items with two prompts that differ in this dimension only, the
  share where the answers (normalised lemmas) differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from selfensemble.analysis.stats import bootstrap_ci
from selfensemble.scoring import answer_key
from selfensemble.store.record_view import AnyRecord, RecordView
from selfensemble.store.records import nan_to_none

BOOTSTRAP_N = 1000


@dataclass(frozen=True)
class Cell:
    """One prompt of one item: its variant ({dimension: value}), score and answer."""

    item: str
    variant: dict
    score: float
    answer: str


def cells(records: Sequence[AnyRecord], scorer: str | None = None) -> list[Cell]:
    """The cells of every record with per-prompt answers and a ``variants`` list of the same length."""
    out = []
    for r in RecordView.all(records):
        variants, scores, answers = r.variants, r.per_prompt_values(scorer), r.per_prompt
        if not variants or not scores or not answers or not len(variants) == len(scores) == len(answers):
            continue
        out += [Cell(r.id, dict(v), s, str(a)) for v, s, a in zip(variants, scores, answers, strict=True)]
    return out


def dimensions(found: Sequence[Cell]) -> list[str]:
    """Dimension names in the order records give them (config.variants.DIMENSIONS order)."""
    return list(dict.fromkeys(d for c in found for d in c.variant))


def additive_effects(found: Sequence[Cell], dims: Sequence[str], iters: int = 200,
                     tol: float = 1e-10) -> dict[str, dict[int, float]]:
    """Least-squares fit of score = item + Σ_d effect_d(value) by backfitting; each dimension's effects
    centred on its cells. Returns {dimension: {value: effect}}.

    Example: two items, format 0 always right and format 1 always wrong → format effects {0: +.5, 1: -.5}.
    """
    y = np.array([c.score for c in found], dtype=float)
    item_ids = {i: k for k, i in enumerate(dict.fromkeys(c.item for c in found))}
    item = np.array([item_ids[c.item] for c in found])
    idx = {d: np.array([c.variant.get(d, 0) for c in found]) for d in dims}
    effect = {d: np.zeros(int(idx[d].max()) + 1) for d in dims}
    alpha = np.zeros(len(item_ids))
    for _ in range(iters):
        before = sum(float(np.abs(e).sum()) for e in effect.values())
        alpha = _group_mean(y - _sum_effects(effect, idx, len(y)), item, len(item_ids))
        for d in dims:
            rest = y - alpha[item] - _sum_effects(effect, idx, len(y), skip=d)
            e = _group_mean(rest, idx[d], len(effect[d]))
            effect[d] = e - float(np.mean(e[idx[d]]))
        if abs(sum(float(np.abs(e).sum()) for e in effect.values()) - before) < tol:
            break
    return {d: {int(v): float(effect[d][v]) for v in np.unique(idx[d])} for d in dims}


def _group_mean(values: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    counts = np.bincount(groups, minlength=size)
    return np.bincount(groups, weights=values, minlength=size) / np.maximum(counts, 1)


def _sum_effects(effect: dict, idx: dict, n: int, skip: str | None = None) -> np.ndarray:
    total = np.zeros(n)
    for d, e in effect.items():
        if d != skip:
            total += e[idx[d]]
    return total


def _per_value_accuracy(found: Sequence[Cell], d: str, seed: int) -> dict[int, dict]:
    """{value: {accuracy, ci_low, ci_high, n_items}}: per item the mean score at that value, then over items."""
    out = {}
    for v in sorted({c.variant.get(d, 0) for c in found}):
        per_item: dict[str, list[float]] = {}
        for c in found:
            if c.variant.get(d, 0) == v:
                per_item.setdefault(c.item, []).append(c.score)
        means = [float(np.mean(s)) for s in per_item.values()]
        low, high = bootstrap_ci(means, n=BOOTSTRAP_N, seed=seed)
        out[int(v)] = {"accuracy": float(np.mean(means)), "ci_low": low, "ci_high": high, "n_items": len(means)}
    return out


def answer_change(found: Sequence[Cell], d: str) -> tuple[float, int]:
    """(share of items whose answer changes when only ``d`` changes, items with such a pair)."""
    by_item: dict[str, dict[tuple, list[Cell]]] = {}
    for c in found:
        context = tuple(sorted((k, v) for k, v in c.variant.items() if k != d))
        by_item.setdefault(c.item, {}).setdefault(context, []).append(c)
    compared = changed = 0
    for groups in by_item.values():
        pairs = [g for g in groups.values() if len({c.variant.get(d, 0) for c in g}) > 1]
        if not pairs:
            continue
        compared += 1
        changed += any(len({answer_key(c.answer) for c in g}) > 1 for g in pairs)
    return (changed / compared if compared else math.nan), compared


def by_dimension(records: Sequence[AnyRecord], scorer: str | None = None, seed: int = 0) -> dict[str, dict] | None:
    """The per-dimension sensitivity block (``prompt_sensitivity[*].by_dimension``), keyed by dimension;
    None when no record carries per-prompt answers with their variants."""
    found = cells(records, scorer)
    if not found:
        return None
    dims = dimensions(found)
    effects = additive_effects(found, dims)
    grand = float(np.mean([c.score for c in found]))
    out = {}
    for d in dims:
        acc = _per_value_accuracy(found, d, seed)
        held = {v: grand + e for v, e in effects[d].items()}
        share, compared = answer_change(found, d)
        values = [a["accuracy"] for a in acc.values()]
        out[d] = {"values": list(acc), "accuracy": {str(v): a for v, a in acc.items()},
                  "held_fixed": {str(v): h for v, h in held.items()},
                  "spread": max(held.values()) - min(held.values()) if len(held) > 1 else None,
                  "answer_change_share": share, "n_items_compared": compared,
                  "max_prompt_accuracy": max(values), "avg_prompt_accuracy": float(np.mean(values)),
                  "n_items": len({c.item for c in found})}
    return out


MIN_VARIANTS = 10  # fewer variants: too few to speak of a distribution (and the plain N = 5 run skips the cost)
CHECK_FRACTION = 0.25  # a complete run's budget check: the estimate from this share of its cells


def variant_estimate(records: Sequence[AnyRecord], scorer: str | None = None, seed: int = 0) -> dict | None:
    """The budgeted estimate of the per-variant accuracy distribution (analysis/budget.py) from the
    cells a run asked; on a complete run (every item through every variant) also ``check``: the
    estimate from a random CHECK_FRACTION of its cells beside the full evaluation. None with fewer
    than MIN_VARIANTS variants."""
    from selfensemble.analysis.budget import budget_check, estimate, grid_from_cells

    found = cells(records, scorer)
    grid = grid_from_cells(found) if found else None
    if grid is None or grid.n_variants < MIN_VARIANTS:
        return None
    out = estimate(grid, seed=seed)
    if grid.budget == 1.0:
        out["check"] = budget_check(grid, CHECK_FRACTION, seed=seed)
    return out


def add_variant_blocks(sensitivity: list[dict], summary_rows: Sequence[dict], records_by_path: dict,
                       scorer: str | None = None, seed: int = 0) -> None:
    """Give each prompt-sensitivity entry of a report its ``by_dimension`` and ``variant_estimate``
    (None when its source run has no per-prompt variants), in place."""
    paths: dict[str, str] = {}
    for r in summary_rows:  # the first run of a name, as report._group_sensitivity picks it
        paths.setdefault(r["name"], r["path"])
    for entry in sensitivity:
        records = records_by_path.get(paths.get(str(entry.get("source")), ""), [])
        entry["by_dimension"] = nan_to_none(by_dimension(records, scorer, seed))
        entry["variant_estimate"] = nan_to_none(variant_estimate(records, scorer, seed))
