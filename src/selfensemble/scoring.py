"""What counts as the same answer: normalisation, lemmas, the four scorers, gold aliases, vote, echo.

Free-form generations rarely equal the gold string ("The Pacific Ocean." vs "pacific ocean"), so
matching works on SQuAD-normalised, lemmatised tokens; the same key groups answers for voting
and consistency, so "cities" and "city" count as one answer everywhere. Four scorers are reported
side by side (``score_all``): exact, contains (gold inside the prediction as whole words), token
F1, and the lenient both-directions ``partial``. Every scorer reads a gold together with its aliases
(``gold_forms``: Freebase names such as "Dutch Language" also answer as "Dutch"; docs/experiments.md).
Run-level metrics (accuracy, consistency, prompt sensitivity, ECE) live in analysis/metrics.py and
statistics for comparing runs in analysis/stats.py.
All functions are pure (apart from the lemma cache) and deterministic given their seed.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

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
