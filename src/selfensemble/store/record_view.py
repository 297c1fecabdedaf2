"""One run record read through a typed view: ``RecordView`` over a results.jsonl line.

A record stays a dict on disk and wherever it is written (records.make_record, vote_record,
rescored), so every folder any version wrote keeps opening and resuming. Readers take a
``RecordView.of(record)`` instead: the keys they use as typed fields (what an older record lacks is
None), and the rules that read a record whatever version of selfensemble wrote it as methods:

  scores()               the four scores: as written, or computed from prediction and gold (older records)
  value(scorer)          the headline score: the stored ``correct`` (the run's --match) or ``scorer``'s
  per_prompt_values(s)   each prompt's answer scored alone (None without per-prompt answers)
  echo_for(method)       echo judged against the prompts the answer was decoded from
  group_in(dataset)      the item's group: its ``group`` field, else a ParaRel-style id prefix
  copies_demo()          the prediction equals one of its own demonstrations' answers

Example: ``RecordView.of({"id": "q1", "prediction": "Paris", "gold": ["paris"], "correct": True})``
has ``.id == "q1"``, ``.value(None) == 1.0``, ``.scores()["exact"] is True`` (computed: no stored
scores) and ``.per_prompt is None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfensemble.errors import SelfEnsembleError
from selfensemble.scoring import is_demo_copy, is_echo, score_all
from selfensemble.store.records import GROUPED_DATASETS, chosen_prompt, mean_or_nan, prompts_seen

__all__ = ["AnyRecord", "RecordView", "demo_copy_rate"]


def _seq(value: Any) -> tuple | None:
    """A stored list as a tuple; None when the record lacks it or holds an empty one."""
    return tuple(value) if value else None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class RecordView:
    """The fields of one record that readers use, typed; ``raw`` is the record itself (never changed).

    ``correct`` / ``echo``: as stored (None: the record has none); ``stored_scores``: the record's
    ``scores`` dict (None: written before records carried them, see :meth:`scores`); ``weights``:
    one per prompt, or the per-step rule's name ("entropy"), or None; ``demo_answers``: None when the
    run did not record its demonstrations, () for a zero-shot record; ``attention``: {"prefill": key,
    "decode": key}, or the one sentence older records hold (store.provenance.attention_paths reads
    both). Lists are tuples, and an empty one reads as None where readers took it as missing
    (``per_prompt``, ``per_prompt_correct``, ``per_prompt_scores``, ``variants``, ``prompt_templates``);
    ``prediction`` is "" when the record has none.
    """

    id: str
    prediction: str
    gold: tuple[str, ...]
    prompts: tuple[str, ...]
    correct: bool | None
    stored_scores: Mapping[str, bool | float] | None
    echo: bool | None
    per_prompt: tuple[str, ...] | None
    per_prompt_correct: tuple[bool, ...] | None
    per_prompt_scores: tuple[Mapping[str, bool | float], ...] | None
    weights: tuple[float, ...] | str | None
    confidence: float | None
    seconds: float | None
    group: str | None
    demo_answers: tuple[str, ...] | None
    prior_answer: str | None
    attention: dict[str, str] | str | None
    variants: tuple[Mapping[str, int], ...] | None
    prompt_templates: tuple[str, ...] | None
    scores_recomputed: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, record: AnyRecord) -> RecordView:
        """The view of one record (a view is returned as it is)."""
        if isinstance(record, RecordView):
            return record
        r = record
        weights = r.get("weights")
        return cls(
            id=str(r.get("id", "")), prediction=str(r.get("prediction") or ""), gold=tuple(r.get("gold") or ()),
            prompts=tuple(r.get("prompts") or ()), correct=bool(r["correct"]) if "correct" in r else None,
            stored_scores=r["scores"] if isinstance(r.get("scores"), dict) else None,
            echo=bool(r["echo"]) if "echo" in r else None, per_prompt=_seq(r.get("per_prompt")),
            per_prompt_correct=_seq(r.get("per_prompt_correct")), per_prompt_scores=_seq(r.get("per_prompt_scores")),
            weights=weights if isinstance(weights, str) or weights is None else tuple(weights),
            confidence=_number(r.get("confidence")), seconds=_number(r.get("seconds")),
            group=str(r["group"]) if r.get("group") else None,
            demo_answers=tuple(r["demo_answers"] or ()) if "demo_answers" in r else None,
            prior_answer=r.get("prior_answer"), attention=r.get("attention"), variants=_seq(r.get("variants")),
            prompt_templates=_seq(r.get("prompt_templates")), scores_recomputed=bool(r.get("scores_recomputed")),
            raw=r)

    @classmethod
    def all(cls, records: Iterable[AnyRecord]) -> list[RecordView]:
        """The view of every record, in order."""
        return [cls.of(r) for r in records]

    def scores(self) -> Mapping[str, bool | float]:
        """The record's four scores: as written by the run, or computed from prediction and gold."""
        return self.stored_scores if self.stored_scores is not None else score_all(self.prediction, list(self.gold))

    def judged_correct(self) -> bool:
        """The stored ``correct`` (the run's --match); a record without one was never scored."""
        if self.correct is None:
            raise SelfEnsembleError(f'record {self.raw.get("id")!r} has no "correct" field; was it scored?')
        return self.correct

    def value(self, scorer: str | None) -> float:
        """The headline score: the stored ``correct`` (the run's --match) or ``scorer``'s."""
        return float(self.judged_correct()) if scorer is None else float(self.scores()[scorer])

    def per_prompt_values(self, scorer: str | None) -> list[float] | None:
        """Each prompt's answer scored alone (None when the record has no per-prompt answers)."""
        if scorer is None:
            return [float(c) for c in self.per_prompt_correct] if self.per_prompt_correct else None
        if not self.per_prompt:
            return None
        scores = self.per_prompt_scores or [score_all(a, list(self.gold)) for a in self.per_prompt]
        return [float(s[scorer]) for s in scores]

    def echo_for(self, method: str) -> bool:
        """Echo judged against the prompts the answer came from (records.prompts_seen).

        Records written before that rule judged every method against all prompts. Their stored flag is
        kept when it did not come from a prompt span (a restated [MASK] or the subject, which need
        fields the record lacks); a span is re-judged against the prompts this method saw.
        """
        golds, prompts = list(self.gold), list(self.prompts)
        index = chosen_prompt(method, self.per_prompt, self.weights)
        own = is_echo(self.prediction, prompts_seen(method, prompts, index), golds)
        if self.echo is None:
            return own
        if "scores" in self.raw:  # written with the rule: the stored flag is the judgement
            return self.echo
        return self.echo and (own or not is_echo(self.prediction, prompts, golds))

    def group_in(self, dataset: str | None) -> str | None:
        """The item's group for the cluster bootstrap: its ``group`` field, else a ParaRel-style id prefix."""
        if self.group:
            return self.group
        if dataset in GROUPED_DATASETS and ":" in self.id:
            return self.id.split(":", 1)[0]
        return None

    def copies_demo(self) -> bool | None:
        """True when the prediction equals (as an answer) one of its demonstrations' answers; None when
        the record does not say what its demonstrations were."""
        if self.demo_answers is None:
            return None
        return is_demo_copy(self.prediction, list(self.demo_answers))


#: What a reader of records accepts: a record as stored (a dict) or its view.
AnyRecord = dict[str, Any] | RecordView


def demo_copy_rate(records: Sequence[AnyRecord]) -> float:
    """Share of predictions equal (as answers) to one of their own ``demo_answers``.

    Over the records that carry the field (a zero-shot record's empty list copies nothing);
    NaN when none does (runs that did not record their demonstrations).
    """
    copies = [c for c in (RecordView.of(r).copies_demo() for r in records) if c is not None]
    return mean_or_nan(copies)

