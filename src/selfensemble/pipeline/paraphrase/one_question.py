"""Model-written paraphrases for questions asked one at a time: `ask`, `serve`, the lm-eval adapter.

Written exactly as `run` writes them: ``experiment.paraphrase_items`` (oversampled candidates from
``paraphrase.gated_paraphrases``, screened by ``paraphrase_gate.screen``) and its on-disk cache,
here under one dataset key (``DATASET``), so a question `ask` paraphrased is not paraphrased again
by `serve`, and no entry point fuses a paraphrase the gate would drop. Fewer than asked for is
said in ``Written.note``, never padded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

DATASET = "questions"  # the paraphrase cache's dataset key for questions that come without a dataset


@dataclass
class Written:
    """One question's written paraphrases (those that passed the gate) and what to tell the user.

    ``record``: the gate's record as a run stores it (every candidate's similarity and fate);
    ``note``: one line, e.g. "asked through 3 prompts: the question and 2 of 4 model-written
    paraphrases that passed the gate (wordllama similarity ≥ 0.7); …".
    """

    paraphrases: list[str]
    wanted: int
    record: dict
    note: str


def write(engine_factory: Callable[[], object], model: str, questions: Sequence[str], paraphrases: int,
          seed: int = 0, gate=None, progress=None) -> list[Written]:
    """``paraphrases`` (besides the question) gated paraphrases per question, from the cache or the model.

    ``engine_factory()`` is called only when a question is not cached. ``gate``: a
    paraphrase_gate.GateConfig (default: on, the shipped threshold); ``progress``: a
    progress.Progress the caller renders (default: none, nothing reported).
    """
    from selfensemble.data.base import Item
    from selfensemble.pipeline.experiment import gate_record, paraphrase_items
    from selfensemble.pipeline.paraphrase.gate import GateConfig
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig

    gate = gate if gate is not None else GateConfig()
    if paraphrases < 1 or not questions:
        return [Written([], max(paraphrases, 0), {}, "") for _ in questions]
    pcfg = ParaphraseConfig(num_paraphrases=paraphrases, seed=seed)
    items = [Item(str(i), (q,), ()) for i, q in enumerate(dict.fromkeys(questions))]
    cache = paraphrase_items(engine_factory, model, DATASET, items, pcfg, progress, gate)
    out = []
    for q in questions:
        entry = cache.entry(q) or {"paraphrases": [], "checks": []}
        kept = [p for p in entry["paraphrases"] if p.strip() and p.strip() != q.strip()][:paraphrases]
        record = gate_record(entry, len(kept), paraphrases, gate) if gate.enabled else {}
        out.append(Written(kept, paraphrases, record, _note(len(kept), paraphrases, gate)))
    return out


def _note(kept: int, wanted: int, gate) -> str:
    how = (f"that passed the gate ({gate.embedder} similarity ≥ {gate.min_similarity})" if gate.enabled
           else "(gate off)")
    text = f"asked through {kept + 1} prompts: the question and {kept} of {wanted} model-written paraphrases {how}"
    if kept < wanted:
        text += "; the others were dropped, not padded"
    return text
