"""Run records: written from an answer (make_record, vote_record), and rescored under today's
scoring rules whatever version of selfensemble wrote them (rescored).

A record is a dict, one results.jsonl line; readers take it through record_view.RecordView, which
computes the ``scores`` of a record written before records carried them, re-judges its echo flag
against the prompts its method saw and reads its group from a ParaRel-style id when it has no
``group`` field. report.py builds every table that way, so old run folders stay comparable with new ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from selfensemble.config.run import nested_config
from selfensemble.data.base import Item
from selfensemble.errors import SelfEnsembleError, did_you_mean
from selfensemble.methods.registry import METHODS, Rows, get_method, one_prompt_note
from selfensemble.scoring import (
    MATCH_MODES,
    SCORERS,
    SCORING_VERSION,
    check_match,
    gold_forms,
    is_echo,
    normalize,
    score_all,
)

GROUPED_DATASETS = ("pararel", "myriadlama")  # ids "REL:uuid": the relation is the group in older records


def check_scorer(scorer: str | None) -> str | None:
    """``scorer`` if None (each run's own --match) or one of scoring.SCORERS, else a clear error."""
    if scorer is not None and scorer not in SCORERS:
        raise SelfEnsembleError(f"Unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)}."
                                + did_you_mean(scorer, list(SCORERS)))
    return scorer


def rescored(records: Sequence[dict], match: str | None) -> list[dict]:
    """The records as today's scoring rules score them (scoring.SCORING_VERSION, the gold aliases).

    A record written under an older version (no ``scoring_version``) whose golds have aliases
    (scoring.gold_forms: "Dutch Language") gets its ``scores`` and ``per_prompt_scores`` computed
    again from its answers and gold, its ``correct`` and ``per_prompt_correct`` from the run's
    ``match`` (kept as stored when the run names none), and ``scores_recomputed: True``; every other
    record is returned as it is (the rule changes nothing for it). Reports and run metrics read
    records through this, so an old run and a new one are scored alike.
    """
    return [_rescore(r, match) if _before_aliases(r) else r for r in records]


def _before_aliases(record: dict) -> bool:
    """Scored before the alias rule, and one of its golds has an alias (its scores may change)."""
    return record.get("scoring_version", 1) < SCORING_VERSION and any(
        len(gold_forms(str(g))) > 1 for g in record.get("gold") or [])


def _rescore(record: dict, match: str | None) -> dict:
    golds = record.get("gold") or []
    out = {**record, "scores": score_all(str(record.get("prediction") or ""), golds), "scores_recomputed": True}
    usable = match in MATCH_MODES
    if usable and "correct" in record:
        out["correct"] = out["scores"][match]
    if record.get("per_prompt"):
        out["per_prompt_scores"] = [score_all(str(a or ""), golds) for a in record["per_prompt"]]
        if usable and "per_prompt_correct" in record:
            out["per_prompt_correct"] = [s[match] for s in out["per_prompt_scores"]]
    return out


def prompts_seen(method: str, prompts: Sequence[str], index: int = 0) -> list[str]:
    """The prompts the judged answer was decoded from: echo is judged against these only.

    origin decodes prompt 0; per_prompt / vote answer ``index`` comes from prompt ``index`` alone;
    the fusions (avg, max, flex, ...) saw all of ``prompts``. A paraphrase origin never saw
    cannot be echoed by it. Which methods decode from one prompt is the registry's
    ``Method.single_prompt``; an unregistered name (an old run's) counts as having seen all prompts.
    """
    spec = METHODS.get(method)
    if spec is not None and spec.single_prompt:
        return list(prompts[index : index + 1])
    return list(prompts)


def chosen_prompt(method: str, per_prompt: Sequence[str] | None,
                  weights: Sequence[float] | str | None = None) -> int:
    """Which prompt the reported answer came from (Method.choose): vote's majority over its per-prompt
    answers, select's largest weight, else 0. An unregistered name (an old run's) counts as no selection."""
    spec = METHODS.get(method)
    return spec.choose(per_prompt, weights) if spec is not None else 0


def nan_to_none(x: Any) -> Any:
    """JSON-able copy: NaN / inf become None, numpy scalars Python numbers, through dicts and lists."""
    if isinstance(x, dict):
        return {k: nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [nan_to_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return nan_to_none(x.item())
    return x


def run_config(manifest: dict) -> dict:
    """The run's settings, nested (run_config.nested_config): a manifest's "config" (older manifests
    were the config itself; older configs were flat: ``model`` is read as ``load.model``)."""
    return nested_config(manifest.get("config", manifest)) if isinstance(manifest, dict) else {}


def run_model(cfg: dict) -> str | None:
    """The model of a run's settings (as run_config returns them)."""
    return (cfg.get("load") or {}).get("model")


def mean_or_nan(values: Sequence[float]) -> float:
    """Mean, or NaN for no values (nothing was measured)."""
    return float(np.mean(values)) if len(values) else math.nan


# --------------------------------------------------------------------------- writing


def make_record(item: Item, answer, method: str, match: str, weights) -> dict:
    """One results.jsonl line: the answer, its scores, and the attention path that produced it.

    ``correct`` is the scorer ``match`` names; ``scores`` holds all four (scoring.score_all).
    Echo is judged against the prompts the answer was decoded from (scoring.prompts_seen):
    origin's against the original question only, each per-prompt answer against its own prompt.
    """
    check_match(match)  # f1 or an unknown name is no boolean match: a clear error, not a KeyError
    subject = item.meta.get("subject")
    scores = score_all(answer.answer, item.answers)
    seen = chosen_prompt(method, answer.per_prompt, weights)
    rec = {
        "id": item.id, "prompts": answer.prompts, "gold": list(item.answers), "prediction": answer.answer,
        "generation": answer.generation, "correct": scores[match], "scores": scores,
        "scoring_version": SCORING_VERSION,
        "echo": is_echo(answer.answer, prompts_seen(method, answer.prompts, seen), item.answers, subject),
        "confidence": answer.prob, "seconds": answer.seconds, "finish": answer.finish,
        "prefill_tokens": answer.prefill_tokens, "attention": answer.attention,  # {"prefill": key, "decode": key}
    }
    if item.group:
        rec["group"] = item.group  # clusters for report's group bootstrap
    if "line_answer" in item.meta:
        rec["line_answer"] = item.meta["line_answer"]  # the data line's own object (golds: every valid one)
    if get_method(method).rows is Rows.CHOSEN:
        rec["selected_prompt"] = seen
    if answer.per_prompt is not None:
        per_scores = [score_all(a, item.answers) for a in answer.per_prompt]
        rec["per_prompt"] = answer.per_prompt
        rec["per_prompt_correct"] = [s[match] for s in per_scores]
        rec["per_prompt_scores"] = per_scores
        rec["per_prompt_echo"] = [is_echo(a, prompts_seen(method, answer.prompts, j), item.answers, subject)
                                  for j, a in enumerate(answer.per_prompt)]
        rec["per_prompt_generation"] = answer.per_prompt_generation
        rec["per_prompt_confidence"] = [math.exp(lp) for lp in answer.per_prompt_logprob]
        rec["per_prompt_finish"] = answer.per_prompt_finish
    if weights is not None:
        rec["weights"] = weights
    if answer.notes:
        rec["notes"] = answer.notes
    if item.meta.get("paraphrase_gate"):
        rec["paraphrase_gate"] = item.meta["paraphrase_gate"]
        if "note" in item.meta["paraphrase_gate"]:
            rec["notes"] = [*rec.get("notes", []), item.meta["paraphrase_gate"]["note"]]
    extra = dict(item.meta.get("record") or {})  # what the run knows of the item (pipeline.build.item_fields)
    if extra.get("notes"):
        rec["notes"] = [*rec.get("notes", []), *extra["notes"]]
    rec.update({k: v for k, v in extra.items() if k != "notes"})
    one = one_prompt_note(method, len(answer.prompts))
    if one:  # last, as vote_record adds it to the per_prompt record it derives from
        rec["notes"] = [*rec.get("notes", []), one]
    return rec


def demo_answers(query) -> list[str]:
    """The normalised answers of a query's few-shot demonstrations (what a copied answer would equal).

    A query with one format per prompt (variants) shows several sets: their answers, each once,
    in the order the prompts show them.
    """
    if getattr(query, "formats", None) is None:
        return example_answers(query.fmt.examples)
    answers = [a for f in query.formats for a in example_answers(f.examples)]
    return list(dict.fromkeys(answers))


def example_answers(examples) -> list[str]:
    """The normalised answers of few-shot demonstrations (data.base.Example), as records store them."""
    return [normalize(ex.answer) for ex in examples]


def vote_record(per_prompt: dict, method: str = "vote", weights: Sequence[float] | None = None) -> dict:
    """``method``'s record (vote's, select's, or any method ``derived_from`` per-prompt answers) from
    the record of the same item by the method it derives from: a pure function of its answers.

    The method's choice (Method.choose: vote's majority over normalised lemmas, ties to the earliest
    prompt; select's largest of ``weights``, the item's dev-tuned weights) picks which prompt's answer,
    generation, confidence, scores, echo and stop reason become its own. Equal to decoding the method
    directly, which decodes the same rows (tests/test_experiment.py, tests/test_tuning.py check).
    """
    spec = get_method(method)
    w = spec.choose(per_prompt["per_prompt"], weights)
    rec = dict(per_prompt)
    if spec.rows is Rows.CHOSEN:
        rec.update(weights=list(weights or []), selected_prompt=w)
    rec.update(prediction=per_prompt["per_prompt"][w], generation=per_prompt["per_prompt_generation"][w],
               correct=per_prompt["per_prompt_correct"][w], confidence=per_prompt["per_prompt_confidence"][w],
               finish=per_prompt["per_prompt_finish"][w], derived_from=spec.derived_from)
    if "per_prompt_echo" in per_prompt:
        rec["echo"] = per_prompt["per_prompt_echo"][w]
    if "per_prompt_scores" in per_prompt:
        rec["scores"] = per_prompt["per_prompt_scores"][w]
    else:
        rec.pop("scores", None)  # an older per_prompt run: report recomputes from the prediction
    one = one_prompt_note(spec, len(per_prompt.get("prompts") or per_prompt["per_prompt"]))
    if one:
        rec["notes"] = [*rec.get("notes", []), one]
    return rec
