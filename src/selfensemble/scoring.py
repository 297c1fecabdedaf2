"""Answer normalisation, the standard scorers, and the per-run metrics (echo, prompt sensitivity).

Free-form generations rarely equal the gold string ("The Pacific Ocean." vs "pacific ocean"), so
matching works on SQuAD-normalised, lemmatised tokens; the same key groups answers for voting
and consistency, so "cities" and "city" count as one answer everywhere. Four scorers are reported
side by side (``score_all``): exact, contains (gold inside the prediction as whole words), token
F1, and the lenient both-directions ``partial``. Every scorer reads a gold together with its aliases
(``gold_forms``: Freebase names such as "Dutch Language" also answer as "Dutch"; docs/experiments.md).
Statistics for comparing runs live in stats.py.
All functions are pure (apart from the lemma cache) and deterministic given their seed.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np

from .errors import SelfEnsembleError, did_you_mean

LEMMATIZERS = ("simplemma", "spacy", "none")
MATCH_MODES = ("exact", "contains", "partial")  # the boolean scorers a run's `correct` can use
SCORERS = ("exact", "contains", "f1", "partial")  # every record's `scores`
DEFAULT_MATCH = "contains"
#: The scoring rules records are written under (a record's ``scoring_version``); a record written under
#: an older one is rescored when read (store.records.rescored). 1: before the alias rule; 2: with it.
SCORING_VERSION = 2

_lemmatizer = "simplemma"
_spacy_nlp: Any = None

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


# --------------------------------------------------------------------------- normalisation


def _is_punct(ch: str) -> bool:
    return ch in _PUNCT or unicodedata.category(ch).startswith("P")


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """SQuAD-style: lowercase, drop punctuation and the articles a/an/the, collapse whitespace.

    Unlike SQuAD, hyphens and slashes split words ("Saint-Denis" → "saint denis"), so a partial
    match can find "denis" or "new york" inside hyphenated compounds.
    """
    text = "".join(" " if ch in "-/" else ch for ch in text.lower())
    text = "".join(ch for ch in text if not _is_punct(ch))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def set_lemmatizer(name: str) -> None:
    """Choose the lemma backend: "simplemma" (default, fast, no model), "spacy", or "none".

    spaCy is more accurate on verbs but needs `spacy` and `en_core_web_sm`; it is checked here
    so a missing model is reported up front, not in the middle of scoring.
    """
    global _lemmatizer, _spacy_nlp
    if name not in LEMMATIZERS:
        raise SelfEnsembleError(
            f"Unknown lemmatizer {name!r}; choose one of {', '.join(LEMMATIZERS)}.{did_you_mean(name, list(LEMMATIZERS))}"
        )
    if name == "spacy" and _spacy_nlp is None:
        try:
            import spacy  # type: ignore[import-not-found]
        except ImportError:
            raise SelfEnsembleError("The spaCy lemmatizer needs `pip install spacy`.") from None
        try:
            _spacy_nlp = spacy.load("en_core_web_sm", disable=["parser", "ner"])
        except OSError:
            raise SelfEnsembleError(
                "The spaCy lemmatizer needs an English model: `python -m spacy download en_core_web_sm`."
            ) from None
    _lemmatizer = name


def get_lemmatizer() -> str:
    """The backend `lemmas` currently uses."""
    return _lemmatizer


def lemmas(text: str) -> list[str]:
    """Normalised tokens, each lemmatised ("Cities painted" → ["city", "paint"])."""
    return list(_lemmas(text, _lemmatizer))


@lru_cache(maxsize=65536)
def _lemmas(text: str, backend: str) -> tuple[str, ...]:
    norm = normalize(text)
    if not norm:
        return ()
    if backend == "none":
        return tuple(norm.split())
    if backend == "spacy":
        return tuple(t.lemma_.lower() for t in _spacy_nlp(norm) if not t.is_space)
    return tuple(_simplemma_lemma(tok) for tok in norm.split())


def _simplemma_lemma(token: str) -> str:
    """simplemma's lemma, except for tokens with digits ("1990s" would become "nineteen-nineties")."""
    import simplemma

    if not token.isalpha():
        return token
    lemma = simplemma.lemmatize(token, lang="en").lower()
    return lemma if lemma.isalpha() else token


def answer_key(text: str) -> tuple[str, ...]:
    """The key under which two answers count as the same (voting, consistency)."""
    return _lemmas(text, _lemmatizer)


# --------------------------------------------------------------------------- gold aliases

#: Systematic Freebase name forms in WebQuestions' golds, each with the shorter name that answers the
#: same question (pattern, alias template). Kept small on purpose: an alias must never make a wrong
#: answer right. Currency names get none: the bare word is shared across countries ("peso" would
#: credit "Mexican peso" for Cuba's "Cuban peso" under contains).
ALIAS_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?P<x>.+?)\s+languages?$", re.IGNORECASE), "{x}"),  # "Dutch Language" -> "Dutch"
    (re.compile(r"^(?P<x>.+?\btime)\s+zone$", re.IGNORECASE), "{x}"),  # "Central Time Zone" -> "Central Time"
    (re.compile(r"^united states of america$", re.IGNORECASE), "United States"),
)


@lru_cache(maxsize=65536)
def gold_forms(gold: str) -> tuple[str, ...]:
    """The gold followed by its aliases under ALIAS_RULES, the forms every scorer accepts.

    "Dutch Language" → ("Dutch Language", "Dutch"); "Central Time Zone" → (…, "Central Time");
    "United States of America" → (…, "United States"); "Paris" → ("Paris",). An alias that
    normalises to nothing ("The Language" → "The") or to the gold itself is dropped.
    """
    text = gold.strip()
    forms = [gold]
    for pattern, template in ALIAS_RULES:
        m = pattern.match(text)
        if m is None:
            continue
        alias = template.format(**m.groupdict()).strip()
        if normalize(alias) and normalize(alias) != normalize(gold) and alias not in forms:
            forms.append(alias)
    return tuple(forms)


# --------------------------------------------------------------------------- matching


def _contains(seq: Sequence[str], sub: Sequence[str]) -> bool:
    n = len(sub)
    return any(tuple(seq[i : i + n]) == tuple(sub) for i in range(len(seq) - n + 1))


def partial_match(prediction: str, gold: str) -> bool:
    """Lenient: gold's lemmas (or an alias's) appear contiguously in the prediction's, or the prediction's in theirs.

    Kept for comparison with the original research code. The second direction credits fragments:
    "Mozart" matches "Wolfgang Amadeus Mozart", "Cancer" matches "Lung cancer". Prefer
    ``contains``. An empty prediction never matches.
    """
    p = answer_key(prediction)
    if not p:
        return False
    return any(g and (_contains(p, g) or _contains(g, p)) for g in map(answer_key, gold_forms(gold)))


def contains_match(prediction: str, gold: str) -> bool:
    """The gold's lemmas (or an alias's, gold_forms) appear as whole words, contiguously, inside the prediction's.

    "It is Paris, France" contains "Paris"; "Mozart" does not contain "Wolfgang Amadeus Mozart";
    "Parisian" does not contain "Paris" (whole tokens). An empty prediction never matches.
    """
    p = answer_key(prediction)
    return bool(p) and any(g and _contains(p, g) for g in map(answer_key, gold_forms(gold)))


def exact_match(prediction: str, gold: str) -> bool:
    """Equal after SQuAD normalisation and lemmatising ("Cities" = "city") to the gold or one of its
    aliases (gold_forms: "Dutch" = "Dutch Language"); empty never matches."""
    p = answer_key(prediction)
    return bool(p) and any(p == answer_key(g) for g in gold_forms(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 over lemmas: 2PR/(P+R) of the multiset overlap; 0 for an empty side.

    Lemmas rather than SQuAD's raw tokens so that an exact match always has F1 1.
    Example: "the Eiffel tower in Paris" vs "Eiffel Tower": overlap 2, P 2/4, R 2/2 → F1 2/3.
    The best F1 over the gold's forms (gold_forms: "Dutch" vs "Dutch Language" → 1).
    """
    return max(_f1(answer_key(prediction), answer_key(g)) for g in gold_forms(gold))


def _f1(p: tuple[str, ...], g: tuple[str, ...]) -> float:
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


_BOOLEAN_MATCHES = {"exact": exact_match, "contains": contains_match, "partial": partial_match}


def check_match(mode: str) -> str:
    """``mode`` if it is a boolean scorer (MATCH_MODES), else a clear error naming the choices."""
    if mode not in _BOOLEAN_MATCHES:
        hint = " (f1 is a score, not a match: see `report --scorer f1`)" if mode == "f1" else ""
        raise SelfEnsembleError(f"Unknown match mode {mode!r}; choose one of {', '.join(MATCH_MODES)}{hint}."
                                + did_you_mean(mode, list(MATCH_MODES)))
    return mode


def is_correct(prediction: str, golds: Sequence[str], mode: str = DEFAULT_MATCH) -> bool:
    """True if the prediction matches any gold answer (alias) under ``mode`` (one of MATCH_MODES)."""
    match = _BOOLEAN_MATCHES[check_match(mode)]
    return any(match(prediction, g) for g in golds)


def score_all(prediction: str, golds: Sequence[str]) -> dict[str, bool | float]:
    """Every scorer at once against all gold aliases: {"exact", "contains", "f1", "partial"}.

    Booleans are "any alias matches"; f1 is the best F1 over aliases (0.0 without golds).
    exact implies contains implies partial, and exact implies f1 == 1.
    """
    return {"exact": is_correct(prediction, golds, "exact"),
            "contains": is_correct(prediction, golds, "contains"),
            "f1": max((token_f1(prediction, g) for g in golds), default=0.0),
            "partial": is_correct(prediction, golds, "partial")}


def is_demo_copy(prediction: str, demo_answers: Sequence[str]) -> bool:
    """The prediction is, as an answer, one of its own few-shot demonstrations' answers.

    Same answer key (normalised lemmas), so "Jazz." copies "jazz". A copied demonstration is the
    main failure of small models on cloze facts; an empty prediction copies nothing.
    """
    key = answer_key(prediction)
    return bool(key) and any(key == answer_key(d) for d in demo_answers)


# --------------------------------------------------------------------------- voting


def majority_vote(answers: Sequence[str]) -> tuple[str, int]:
    """(answer, index) of the most frequent answer, grouping by normalised lemmas.

    Returns the winning group's first original text and its index. Ties go to the group seen
    first, so prompt 0 (the original question) wins a tie. Empty answers don't vote unless all
    are empty (then answer 0 is returned).
    """
    if not answers:
        raise ValueError("majority_vote needs at least one answer")
    counts: dict[tuple[str, ...], int] = {}
    first: dict[tuple[str, ...], int] = {}
    for i, ans in enumerate(answers):
        key = answer_key(ans)
        if not key:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return answers[0], 0
    best = max(counts, key=lambda k: (counts[k], -first[k]))
    return answers[first[best]], first[best]


# --------------------------------------------------------------------------- metrics


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


MASK_TOKEN = "[MASK]"


def is_echo(prediction: str, prompts: Sequence[str], golds: Sequence[str], subject: str | None = None) -> bool:
    """True when the answer copies the prompt instead of answering it.

    Fill-in-the-blank: the prediction still contains ``[MASK]`` (a restated template), or it
    names the filled-in subject (when ``subject`` is given) without any gold answer. Questions: the normalised prediction is a contiguous span of
    some normalised prompt and contains no gold answer. An empty prediction is no echo (it is a
    miss of another kind). Examples: "Paris was born in [MASK]." → echo; prompt "Allan Peiper
    was born in [MASK]." with prediction "Allan Peiper" → echo; prediction "Alexandra" (gold) → not.
    """
    if MASK_TOKEN in prediction:
        return True
    pred = normalize(prediction)
    if not pred or any(partial_match(prediction, g) for g in golds):
        return False
    if subject and normalize(subject) and f" {normalize(subject)} " in f" {pred} ":
        return True
    return any(f" {pred} " in f" {normalize(p.replace(MASK_TOKEN, ' '))} " for p in prompts)


def echo_rate(echoes: Sequence[bool]) -> float:
    """Share of echoed answers (NaN for none)."""
    return float(np.mean([bool(e) for e in echoes])) if len(echoes) else float("nan")
