"""Model-written paraphrases for questions asked one at a time: `ask`, `serve`, the lm-eval adapter.

Written exactly as `run` writes them, through the same writer and the same shared cache
(writing.write_paraphrases, cache.py: keyed by the question and the writer settings, not by the
entry point), so a question `run`, `ask`, `serve` or `lm-eval` paraphrased is never paraphrased
again by another of them, and no entry point fuses a paraphrase the gate would drop. Fewer than
asked for is said in ``Written.note``, never padded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Written:
    """One question's written paraphrases (those that passed the gate) and what to tell the user.

    ``wanted``: paraphrases asked for besides the question (N - 1); ``record``: the gate's record
    as a run stores it (every candidate's similarity and fate); ``complete``: False when a budget
    stopped the writing (the paraphrases are those written so far); ``note``: one line, e.g.
    "asked through 3 prompts: the question and 2 of 4 model-written paraphrases that passed the
    gate (wordllama similarity ≥ 0.7); …".
    """

    paraphrases: list[str]
    wanted: int
    record: dict
    note: str
    complete: bool = True


def write(engine_factory: Callable[[], object], model: str, questions: Sequence[str], num_paraphrases: int,
          seed: int = 0, gate=None, progress=None, on_event=None, budget=None) -> list[Written]:
    """Gated paraphrases for N = ``num_paraphrases`` prompts per question (the question included:
    N - 1 are written), from the shared cache or the model.

    ``engine_factory()`` is called only when a question is not cached. ``gate``: a gate.GateConfig
    (default: on, the shipped threshold); ``progress``: a progress.Progress the caller renders
    (default: none); ``on_event``: writing.WritingEvent callback; ``budget``: a
    writing.WritingBudget (default: none, the writing runs to the end).
    """
    from selfensemble.config.gate import GateConfig
    from selfensemble.pipeline.paraphrase.gate import gate_record
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig
    from selfensemble.pipeline.paraphrase.writing import write_paraphrases

    gate = gate if gate is not None else GateConfig()
    wanted = max(num_paraphrases - 1, 0)
    if wanted == 0 or not questions:
        return [Written([], 0, {}, "") for _ in questions]
    pcfg = ParaphraseConfig(num_paraphrases=num_paraphrases, seed=seed)
    found = write_paraphrases(engine_factory, model, questions, pcfg, gate, progress, on_event=on_event, budget=budget)
    out = []
    for q in questions:
        entry = found.entry(q) or {"paraphrases": [], "checks": []}
        kept = [p for p in entry["paraphrases"] if p.strip() and p.strip() != q.strip()][:wanted]
        record = gate_record(entry, len(kept), wanted, gate) if gate.enabled else {}
        complete = q not in found.unfinished
        out.append(Written(kept, wanted, record, _note(len(kept), wanted, gate, None if complete else found.budget_s),
                           complete))
    return out


def _note(kept: int, wanted: int, gate, stopped_at: float | None = None) -> str:
    """The line a user reads; ``stopped_at``: the budget (seconds) that stopped the writing, if any."""
    how = (f"that passed the gate ({gate.embedder} similarity ≥ {gate.min_similarity})" if gate.enabled
           else "(gate off)")
    text = f"asked through {kept + 1} prompts: the question and {kept} of {wanted} model-written paraphrases {how}"
    if stopped_at is not None:
        return (f"paraphrase writing stopped at its {stopped_at:g} s budget: {text}, written so far; the writing "
                "continues where it stopped the next time this question is asked")
    if kept < wanted:
        text += "; the others were dropped, not padded"
    return text
