"""What no model needs to know: no-model baselines next to every report, and demonstration copies split.

Every accuracy is read against rules that never look at the question:

  majority_answer       the most common answer of the item's group pool (its relation's prior; the
                        whole train pool for WebQuestions), stored in each record as ``prior_answer``
  majority_demo_answer  the most common answer among the item's own demonstrations (``demo_answers``;
                        ties go to the earliest demonstration, as scoring.majority_vote breaks them)

scored like the runs: the report's headline scorer (``--scorer``, else the run's own --match) against
the item's golds (aliases included). A run folder written before ``prior_answer`` was recorded gets
``majority_demo_answer`` only, and a note says so. Zero-shot items (no demonstrations) have no
``majority_demo_answer``.

``demo_copy_rate`` (the share of answers equal to one of their own demonstrations' answers) is split
into ``demo_copy_right_rate`` (copies that are also right) and ``demo_copy_wrong_rate`` (copies that
are wrong); the two add up to it. With the f1 scorer "right" is the copy's F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfensemble.scoring import DEFAULT_MATCH, majority_vote, score_all
from selfensemble.store.record_view import AnyRecord, RecordView
from selfensemble.store.records import mean_or_nan, nan_to_none

BASELINES = ("majority_answer", "majority_demo_answer")


def _answer(name: str, record: RecordView) -> str | None:
    """The baseline's answer for one record, or None when the record cannot give it."""
    if name == "majority_answer":
        return record.prior_answer
    demos = record.demo_answers or ()
    return majority_vote(list(demos))[0] if demos else None


def no_model_baselines(runs: Sequence[tuple[dict, Sequence[AnyRecord]]],
                       scorer: str | None) -> tuple[list[dict], list[str]]:
    """(rows, notes): one row ``{dataset, name, accuracy, n, scorer}`` per dataset and baseline it can give.

    ``runs``: (run config as store.records.run_config reads it, records) in report order. Per dataset
    each item counts once, from the first run whose record can give the baseline (runs of one dataset
    see the same pool; their demonstrations agree unless their seeds or --demos differ, which a note
    names).
    """
    datasets: dict[str, list[tuple[dict, list[RecordView]]]] = {}
    for cfg, records in runs:
        datasets.setdefault(str(cfg.get("dataset")), []).append((cfg, RecordView.all(records)))
    rows, notes = [], []
    for dataset, members in datasets.items():
        for name in BASELINES:
            values: dict[str, float] = {}
            for cfg, records in members:
                how = scorer or cfg.get("match") or DEFAULT_MATCH
                for r in records:
                    answer = _answer(name, r)
                    if answer is not None and r.id not in values:
                        values[r.id] = float(score_all(answer, list(r.gold))[how])
            if values:
                rows.append(nan_to_none({"dataset": dataset, "name": name, "accuracy": mean_or_nan(list(values.values())),
                                         "n": len(values), "scorer": scorer or members[0][0].get("match")}))
        notes += _dataset_notes(dataset, members)
    return rows, notes


def _dataset_notes(dataset: str, members: Sequence[tuple[dict, Sequence[RecordView]]]) -> list[str]:
    """What the baselines of one dataset could not see: runs without prior_answer, differing demonstrations."""
    notes = []
    # a recorded prior_answer may be None (a pool with no answer); only a record without the key is older
    old = sum(1 for _, recs in members if recs and not any("prior_answer" in r.raw for r in recs))
    if old:
        notes.append(f"{dataset}: {old} of {len(members)} runs hold no prior_answer (written before it was recorded); "
                     "majority_answer is computed from the others only, or not at all.")
    demos: dict[str, list] = {}
    for _, recs in members:
        for r in recs:
            if r.demo_answers is not None:
                demos.setdefault(r.id, []).append(r.demo_answers)
    if any(any(d != seen[0] for d in seen) for seen in demos.values()):
        notes.append(f"{dataset}: runs drew different demonstrations for the same items (another seed or --demos); "
                     "majority_demo_answer uses the first run's.")
    return notes


def demo_copy_split(records: Sequence[AnyRecord], scorer: str | None) -> dict[str, Any]:
    """``demo_copy_right_rate`` and ``demo_copy_wrong_rate``: the demo_copy_rate split by the headline
    score (``scorer``, None = the run's ``correct``) over the records that carry ``demo_answers``
    (NaN when none does). Example: 4 records, one right copy and one wrong copy → .25 and .25."""
    views = [r for r in RecordView.all(records) if r.demo_answers is not None]
    copies = [(bool(r.copies_demo()), r.value(scorer)) for r in views]
    return {"demo_copy_right_rate": mean_or_nan([c * v for c, v in copies]),
            "demo_copy_wrong_rate": mean_or_nan([c * (1 - v) for c, v in copies])}


def copy_cell(row: dict) -> str:
    """The report's 'demo copy' cell: the rate, and how much of it is right ("12.0% (3.0% right)")."""
    rate, right = row.get("demo_copy_rate"), row.get("demo_copy_right_rate")
    if rate is None:
        return "–"
    return f"{rate:.1%}" + ("" if right is None else f" ({right:.1%} right)")
