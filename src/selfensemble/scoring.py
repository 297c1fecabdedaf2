"""Answer normalisation, matching and the metrics reported for a run.

Free-form generations rarely equal the gold string ("The Pacific Ocean." vs "pacific ocean"), so
matching works on SQuAD-normalised, lemmatised tokens; the same key groups answers for voting
and consistency, so "cities" and "city" count as one answer everywhere.
All functions are pure (apart from the lemma cache) and deterministic given their seed.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np

from .errors import SelfEnsembleError, did_you_mean

LEMMATIZERS = ("simplemma", "spacy", "none")
MATCH_MODES = ("partial", "exact")

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


# --------------------------------------------------------------------------- matching


def _contains(seq: Sequence[str], sub: Sequence[str]) -> bool:
    n = len(sub)
    return any(tuple(seq[i : i + n]) == tuple(sub) for i in range(len(seq) - n + 1))


def partial_match(prediction: str, gold: str) -> bool:
    """Gold's lemmas appear contiguously in the prediction's, or the prediction's in the gold's.

    Both directions, because generations are both longer ("It is Paris, France") and shorter
    ("Paris" for "Paris, France") than the gold. An empty prediction never matches.
    """
    p, g = answer_key(prediction), answer_key(gold)
    if not p or not g:
        return False
    return _contains(p, g) or _contains(g, p)


def exact_match(prediction: str, gold: str) -> bool:
    """Equal after SQuAD normalisation (no lemmatising); an empty prediction never matches."""
    p = normalize(prediction)
    return bool(p) and p == normalize(gold)


def is_correct(prediction: str, golds: Sequence[str], mode: str = "partial") -> bool:
    """True if the prediction matches any gold answer under `mode` ("partial" or "exact")."""
    if mode == "partial":
        match = partial_match
    elif mode == "exact":
        match = exact_match
    else:
        raise SelfEnsembleError(
            f"Unknown match mode {mode!r}; choose one of {', '.join(MATCH_MODES)}.{did_you_mean(mode, list(MATCH_MODES))}"
        )
    return any(match(prediction, g) for g in golds)


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


def per_prompt_accuracy(per_prompt_correct: Sequence[Sequence[bool]]) -> dict[str, Any]:
    """Accuracy of each prompt position (0 = original question) and their spread.

    Shows how much the answer depends on phrasing: a wide min..max means paraphrases matter.
    Items may have different prompt counts; each position averages over the items having it.
    Returns {"mean", "min", "max", "std" (population), "per_index": [...], "counts": [...]}.
    """
    width = max((len(row) for row in per_prompt_correct), default=0)
    per_index: list[float] = []
    counts: list[int] = []
    for j in range(width):
        col = [bool(row[j]) for row in per_prompt_correct if len(row) > j]
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


def _bootstrap_means(values: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Means of n resamples with replacement, drawn in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    size = values.size
    out = np.empty(n)
    chunk = max(1, 2_000_000 // max(size, 1))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        idx = rng.integers(0, size, size=(stop - start, size))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_ci(
    values: Sequence[float], n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean; (NaN, NaN) for no values."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    means = _bootstrap_means(arr, n, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def paired_bootstrap_diff(
    a: Sequence[float], b: Sequence[float], n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
    """Mean of a - b over paired items with a bootstrap interval, resampling items jointly.

    Pairing matters: both methods see the same questions, so per-item differences vary far
    less than either score. `p_value_like` = 2 * min(P(diff <= 0), P(diff >= 0)) over the
    resamples (capped at 1): small when the sign of the difference is stable.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_bootstrap_diff: {x.shape} vs {y.shape} values")
    if x.size == 0:
        nan = float("nan")
        return {"mean": nan, "low": nan, "high": nan, "p_value_like": nan}
    diff = x - y
    means = _bootstrap_means(diff, n, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "p_value_like": p}


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


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """McNemar's exact test on paired correctness: two-sided binomial p over the discordant pairs.

    b01 = items a got right and b wrong, b10 = the reverse; under H0 each discordant item goes
    either way with probability 1/2, so p = min(1, 2 · P(Binom(b01 + b10, 1/2) <= min(b01, b10))).
    Example: 10 vs 2 discordant → p = 2·(C(12,0)+C(12,1)+C(12,2))/2^12 = 0.0386. No discordant
    pairs → p = 1. Exact with integers (math.comb), so no scipy is needed. With fractional values
    (a question's mean correctness over its prompts) it is the exact sign test: a pair counts for
    the side with the larger value, ties drop out; on 0/1 values the two are the same test.
    """
    if len(a) != len(b):
        raise ValueError(f"mcnemar_exact: {len(a)} vs {len(b)} paired values")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if float(x) > float(y))
    only_b = sum(1 for x, y in zip(a, b, strict=True) if float(y) > float(x))
    n, k = only_a + only_b, min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}
