"""What every term in the report's tables means: one definition per column header or cell mark,
printed under the tables (render.py picks the entries the shown tables use)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

TERMS: dict[str, str] = {
    "method": "the answering method of a run (\"name [folder]\" when one method ran twice in a cell).",
    "n": "items scored (questions or facts); in a comparison, the items both sides answered.",
    "accuracy [95% CI]": "share of items answered right under the scorer, with a percentile bootstrap "
                         "interval over items (1000 resamples, seed 0).",
    "scorer": "which answers count as right: exact (same normalised answer), contains (the gold's words "
              "inside the answer), f1 (token F1), partial (either contains the other).",
    "EM/cont/F1/part": "accuracy under each of the four scorers: exact match / contains / token F1 / partial.",
    "AvgP (min–max)": "AvgP of the run's prompts asked alone, with the worst and best prompt position.",
    "echo": "share of answers that copy the prompt (a restated template or the subject) instead of answering.",
    "demo copy": "share of answers equal to one of the item's own few-shot demonstration answers; in "
                 "brackets the part of it that is right (a demonstration may share the gold answer).",
    "dataset": "the dataset whose items a no-model rule answers.",
    "accuracy": "share of items the no-model rule answers right under the report's scorer.",
    "baseline (no model)": "a rule that never reads the question: majority_answer answers the group's most "
                           "common pool answer, majority_demo_answer the most common answer among the item's "
                           "own demonstrations (analysis/baselines.py).",
    "consistency": "per item, the share of its prompt pairs whose answers agree (normalised), averaged over items.",
    "s/q": "wall-clock seconds per question, one sample on a possibly busy machine (not a benchmark).",
    "vs": "the other side of the comparison: a run (McNemar test), mean_single (sign test), or avg "
          "(flex's own comparison).",
    "Δ [95% CI]": "mean paired difference method − vs over the shared items, bootstrap interval over items.",
    "groups 95% CI": "the same interval resampling whole groups (ParaRel relations), whose items move together.",
    "test": "McNemar: exact two-sided McNemar test on paired right/wrong; sign: exact sign test against "
            "the fractional mean_single (ties dropped); =: not tested.",
    "p": "the exact test's two-sided p, unadjusted; '=' marks a comparison identical by construction "
         "(both sides report the original prompt's answer), which is never tested.",
    "Holm p": "p adjusted by Holm's step-down method within its family (confirmatory or exploratory); "
              "* = at most the family's alpha.",
    "fam.": "the test's family: conf = confirmatory: named in the family file fixed before the run, Holm over exactly those; "
              "expl = exploratory: every other test, Holm over those separately; – = not tested.",
    "MDE": "minimum detectable effect: the smallest difference this McNemar test detects with 80% power on "
           "these n items at the observed discordance and alpha/k (k = family size, Holm's first step); "
           ">d: none up to the discordance d; n/c: not computed (sign test).",
    "power": "probability that the same test detects the observed difference (same n, discordance, alpha/k).",
    "model, dataset": "the cell: one model asked one dataset.",
    "from": "the run whose per-prompt answers (each prompt asked alone) give this row.",
    "per prompt": "accuracy of each prompt position asked alone (0 = the original question).",
    "min–max": "the worst and best prompt position's accuracy.",
    "std": "population standard deviation of the prompt positions' accuracies.",
    "MaxP": "the best prompt position's accuracy, chosen in hindsight: a ceiling, not a method "
            "(Mizrahi et al. 2024).",
    "AvgP": "accuracy per prompt position, averaged over positions (Mizrahi et al. 2024).",
    "mean_single": "per item, the mean accuracy of the prompts it was asked through alone, averaged over "
                   "items: the baseline a method is tested against item by item (sign test). Equals AvgP "
                   "when every item has every prompt.",
    "CPS": "combined performance score MaxP · (1 − (MaxP − AvgP)): high when the best prompt is good and "
           "the others are close to it (Mizrahi et al. 2024).",
    "disagree": "share of items whose prompts do not all give the same answer.",
    "ECE": "expected calibration error of the fused answer probability (10 equal-width bins).",
}

# terms used inside cells rather than as headers, shown with the comparisons table
COMPARISON_TERMS: dict[str, str] = {
    "sign test": "exact binomial test on the items where the method scores above vs below mean_single; "
                 "used because mean_single is a fraction per item.",
    "McNemar": "exact binomial test on the discordant items (one side right, the other wrong); "
               "p = min(1, 2·P(Bin(b + c, 1/2) <= min(b, c))).",
}


def legend_lines(headers: Iterable[str], width: int | None, comparisons: bool = False) -> list[str]:
    """'term: definition' for each distinct header in ``headers`` that needs one (and the cell terms
    of the comparisons table), wrapped to ``width`` with a hanging indent (None: one line each)."""
    seen = list(dict.fromkeys(h for h in headers if h in TERMS))
    entries = [(h, TERMS[h]) for h in seen] + (list(COMPARISON_TERMS.items()) if comparisons else [])
    lines = []
    for term, text in entries:
        line = f"{term}: {text}"
        lines += [line] if width is None else textwrap.wrap(line, width=width, subsequent_indent="    ")
    return lines
