"""Run-level metrics over scored records: accuracy, consistency, prompt sensitivity, echo rate, ECE.

The answer-level rules (what counts as right, as the same answer, as an echo) are in scoring.py;
these aggregate them over a run. All functions are pure; NaN means "nothing was measured".
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from selfensemble.scoring import answer_key


def accuracy(corrects: Sequence[bool]) -> float:
    """Share of True values (NaN for an empty list: nothing was measured)."""
    return float(np.mean(corrects)) if len(corrects) else float("nan")


def consistency(per_prompt_answers: Sequence[Sequence[str]]) -> float:
    """ParaRel-style consistency: per item, the share of prompt pairs whose answers agree
    (same normalised lemmas), averaged over items with at least two prompts.

    An empty answer agrees with nothing, so a model that says nothing isn't "consistent".
    NaN when no item has two prompts.
    """
    scores = []
    for answers in per_prompt_answers:
        if len(answers) < 2:
            continue
        keys = [answer_key(a) for a in answers]
        pairs = list(combinations(keys, 2))
        scores.append(sum(1 for a, b in pairs if a and a == b) / len(pairs))
    return float(np.mean(scores)) if scores else float("nan")


def per_prompt_accuracy(per_prompt_correct: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Accuracy of each prompt position (0 = original question) and their spread.

    Shows how much the answer depends on phrasing: a wide min..max means paraphrases matter.
    Items may have different prompt counts; each position averages over the items having it.
    Returns {"mean", "min", "max", "std" (population), "per_index": [...], "counts": [...]}.
    """
    width = max((len(row) for row in per_prompt_correct), default=0)
    per_index: list[float] = []
    counts: list[int] = []
    for j in range(width):
        col = [float(row[j]) for row in per_prompt_correct if len(row) > j]  # bools, or F1 scores
        per_index.append(float(np.mean(col)))
        counts.append(len(col))
    if not per_index:
        nan = float("nan")
        return {"mean": nan, "min": nan, "max": nan, "std": nan, "per_index": [], "counts": []}
    arr = np.asarray(per_index)
    return {
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "std": float(arr.std()),
        "per_index": per_index,
        "counts": counts,
    }


def prompt_disagreement(per_prompt_answers: Sequence[Sequence[str]]) -> float:
    """Share of items (with >= 2 prompts) whose prompts do not all give one answer (same lemmas).

    An empty answer agrees with nothing, as in ``consistency``. NaN when no item has two prompts.
    """
    rows = [[answer_key(a) for a in answers] for answers in per_prompt_answers if len(answers) >= 2]
    if not rows:
        return float("nan")
    return float(np.mean([not (keys[0] and all(k == keys[0] for k in keys)) for keys in rows]))


def combined_performance_score(max_p: float, avg_p: float) -> float:
    """CPS of Mizrahi et al. 2024 (arXiv 2401.00595): MaxP · (1 − (MaxP − AvgP)).

    The best prompt's accuracy discounted by how far the average prompt falls below it, so a model
    is rewarded for peak accuracy only as far as it does not hinge on finding the right phrasing.
    Checked against the paper's published table (t0_3b, "all words from category": MaxP .80,
    AvgP .61721 → CPS .65377).
    """
    return max_p * (1 - (max_p - avg_p))


def mean_single(per_prompt_correct: Sequence[Sequence[float]]) -> float:
    """Per item, the mean score of the prompts it was asked through; then the mean over items (NaN
    for none). The single-prompt baseline a method is compared with item by item: unlike AvgP
    (positions averaged), an item asked through 3 prompts weighs as much as one asked through 5.

    Example: items [1, 0, 0] and [1, 1] → (1/3 + 1) / 2 = 2/3, while AvgP = (1 + 1/2 + 0) / 3 = 1/2.
    """
    rows = [float(np.mean(row)) for row in per_prompt_correct if len(row)]
    return float(np.mean(rows)) if rows else float("nan")


def prompt_sensitivity(per_prompt_correct: Sequence[Sequence[float]],
                       per_prompt_answers: Sequence[Sequence[str]]) -> dict[str, Any]:
    """How much the answer depends on phrasing, as prompt-sensitivity studies report it.

    ``per_prompt_correct[i][j]``: item i asked through prompt position j alone (0 = original);
    ``per_prompt_answers`` the same shape of answer strings. A "prompt" is a position: its
    accuracy averages over the items having it. Returns per_prompt_accuracy (per position),
    min / max / std (population) of those, max_prompt_accuracy (MaxP), avg_prompt_accuracy
    (AvgP: the mean over positions, Mizrahi et al.), mean_single (the mean over items of each
    item's mean over its own prompts; equals AvgP when every item has every position), cps,
    consistency, prompt_disagreement and n_items.
    """
    pp = per_prompt_accuracy(per_prompt_correct)
    return {"per_prompt_accuracy": pp["per_index"], "min": pp["min"], "max": pp["max"], "std": pp["std"],
            "max_prompt_accuracy": pp["max"], "avg_prompt_accuracy": pp["mean"],
            "mean_single": mean_single(per_prompt_correct),
            "cps": combined_performance_score(pp["max"], pp["mean"]),
            "consistency": consistency(per_prompt_answers), "prompt_disagreement": prompt_disagreement(per_prompt_answers),
            "n_items": len(per_prompt_correct)}


def ece(confidences: Sequence[float], corrects: Sequence[bool], n_bins: int = 10) -> float:
    """Expected calibration error with equal-width bins (lo, hi] (a confidence of 0 joins bin 0).

    ECE = sum over bins of |accuracy - mean confidence| weighted by the bin's share of items.
    """
    conf = np.asarray(confidences, dtype=float)
    corr = np.asarray(corrects, dtype=float)
    if conf.shape != corr.shape or conf.ndim != 1:
        raise ValueError(f"ece: {conf.shape} confidences vs {corr.shape} corrects")
    if n_bins < 1:
        raise ValueError("ece: n_bins must be >= 1")
    if conf.size == 0:
        return float("nan")
    if np.any((conf < 0) | (conf > 1)) or np.any(np.isnan(conf)):
        raise ValueError("ece: confidences must lie in [0, 1]")
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() / conf.size * abs(corr[mask].mean() - conf[mask].mean())
    return float(total)


def echo_rate(echoes: Sequence[bool]) -> float:
    """Share of echoed answers (NaN for none)."""
    return float(np.mean([bool(e) for e in echoes])) if len(echoes) else float("nan")
