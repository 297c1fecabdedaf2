"""Run records read under today's rules (store.record_view.RecordView): scores for old records, echo against
own prompts, groups, demo copies."""

from __future__ import annotations

import math

import pytest

from selfensemble.errors import SelfEnsembleError
from selfensemble.store.record_view import RecordView, demo_copy_rate
from selfensemble.store.records import check_scorer

PROMPTS = ["Where was Allan Peiper born?", "In which town was the cyclist Allan Peiper born?"]


def test_old_records_get_scores_computed_from_prediction_and_gold():
    old = {"id": "q1", "prediction": "Mozart", "gold": ["Wolfgang Amadeus Mozart"], "correct": True}
    assert RecordView.of(old).scores() == {"exact": False, "contains": False, "f1": 0.5, "partial": True}
    assert RecordView.of(old).value(None) == 1.0  # the run's own --match (partial at the time)
    assert RecordView.of(old).value("contains") == 0.0 and RecordView.of(old).value("f1") == 0.5
    new = {**old, "scores": {"exact": True, "contains": True, "f1": 1.0, "partial": True}}
    assert RecordView.of(new).scores()["exact"] is True  # stored scores are the run's word
    pp = {**old, "per_prompt": ["Mozart", "Wolfgang Amadeus Mozart"], "per_prompt_correct": [True, True]}
    assert RecordView.of(pp).per_prompt_values(None) == [1.0, 1.0]
    assert RecordView.of(pp).per_prompt_values("contains") == [0.0, 1.0]
    assert RecordView.of(old).per_prompt_values("contains") is None


def test_check_scorer():
    assert check_scorer(None) is None and check_scorer("f1") == "f1"
    with pytest.raises(SelfEnsembleError, match="Did you mean 'contains'"):
        check_scorer("contain")


@pytest.mark.parametrize("method, prediction, stored, expected", [
    # "the cyclist" is a span of the paraphrase only: origin never saw it
    ("origin", "the cyclist", None, False),
    ("avg", "the cyclist", None, True),
    ("origin", "Allan Peiper", None, True),  # a span of the original question
    # an old record judged against all prompts: origin's flag is re-judged against prompt 0
    ("origin", "the cyclist", True, False),
    ("flex", "the cyclist", True, True),
    # a stored flag that no prompt span explains came from [MASK] or the subject: kept
    ("origin", "Peiper, Allan", True, True),
    ("origin", "Melbourne", False, False),
])
def test_echo_against_the_prompts_the_method_saw(method, prediction, stored, expected):
    rec = {"id": "q", "prompts": PROMPTS, "gold": ["Alexandra"], "prediction": prediction, "correct": False}
    if stored is not None:
        rec["echo"] = stored
    assert RecordView.of(rec).echo_for(method) is expected


def test_vote_echo_is_judged_against_the_winning_prompt():
    rec = {"id": "q", "prompts": PROMPTS, "gold": ["Alexandra"], "prediction": "the cyclist", "correct": False,
           "per_prompt": ["Lyon", "the cyclist", "the cyclist"]}  # prompt 1's answer wins the vote
    assert RecordView.of(rec).echo_for("vote") is True
    rec["per_prompt"] = ["the cyclist", "Lyon", "Rome"]  # prompt 0 wins: it never saw "the cyclist"
    assert RecordView.of(rec).echo_for("vote") is False


def test_new_records_keep_their_stored_echo():
    rec = {"id": "q", "prompts": PROMPTS, "gold": ["x"], "prediction": "the cyclist", "correct": False,
           "echo": False, "scores": {"exact": False, "contains": False, "f1": 0.0, "partial": False}}
    assert RecordView.of(rec).echo_for("avg") is False


def test_groups_from_field_or_pararel_ids():
    assert RecordView.of({"id": "x", "group": "P19"}).group_in(None) == "P19"
    assert RecordView.of({"id": "P36:abc-123"}).group_in("pararel") == "P36"
    assert RecordView.of({"id": "q:1"}).group_in("jsonl") is None  # a colon in a user's id is no relation
    assert RecordView.of({"id": "WebQTest-1"}).group_in("webqa") is None


def test_demo_copy_rate_on_crafted_records():
    records = [
        {"prediction": "Jazz.", "demo_answers": ["rock", "jazz"]},  # copies its own demonstration
        {"prediction": "blues", "demo_answers": ["rock", "jazz"]},
        {"prediction": "rock", "demo_answers": []},  # zero-shot: nothing to copy
        {"prediction": "rock"},  # no field: not counted
    ]
    assert demo_copy_rate(records) == pytest.approx(1 / 3)
    # another item's demonstration is not this item's: judged per record
    assert demo_copy_rate([{"prediction": "jazz", "demo_answers": ["rock"]},
                           {"prediction": "rock", "demo_answers": ["jazz"]}]) == 0.0
    assert math.isnan(demo_copy_rate([{"prediction": "rock"}]))


def test_a_view_reads_a_record_as_stored_and_changes_nothing():
    rec = {"id": 7, "prediction": "Paris", "gold": ["paris"], "correct": True, "per_prompt": [],
           "weights": "entropy", "demo_answers": None, "attention": "sdpa (dense mask)"}
    before = dict(rec)
    view = RecordView.of(rec)
    assert view.raw is rec and rec == before  # the dict is the on-disk form: never rewritten by reading
    assert (view.id, view.gold, view.correct, view.per_prompt) == ("7", ("paris",), True, None)
    assert view.weights == "entropy" and view.demo_answers == () and view.attention == "sdpa (dense mask)"
    assert view.echo is None and view.stored_scores is None and view.scores()["exact"] is True
    assert RecordView.of(view) is view and RecordView.all([rec, view])[1] is view
    with pytest.raises(SelfEnsembleError, match='record 8 has no "correct" field'):
        RecordView.of({"id": 8, "prediction": "x"}).judged_correct()
