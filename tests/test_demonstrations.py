"""Demonstrations blind to the gold, N-M golds, the gold alias rule, and what records say about them.

The per-item draw must not read the item's answers (issue 26): excluding the gold from the
demonstrations made it "the common answer that is missing", so a rule that uses no model beat every
method. These tests pin the draw, the no-model rules against it, ParaRel's N-M golds and the alias
rule every scorer applies.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from helpers import make_pararel
from selfensemble.config.demos import DEMO_DRAWS, demo_draw
from selfensemble.data import Dataset, load_dataset
from selfensemble.data.base import Example, Item
from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.scoring import (
    contains_match,
    exact_match,
    gold_forms,
    is_correct,
    partial_match,
    score_all,
    token_f1,
)

# -- the draw never reads the gold -------------------------------------------------------------------------------


def _pool_dataset() -> Dataset:
    answers = ["Paris", "Rome", "Lyon", "Paris", "Nice", "Rome", "Paris", "Turin"]
    pool = [Example((f"Person {i} died in [MASK].",), a, fact=f"Person {i}") for i, a in enumerate(answers)]
    return Dataset("toy", [], examples={"P20": pool})


@pytest.mark.parametrize("demos", ["per-item", "other-groups", "shared"])
def test_two_items_that_differ_only_in_their_gold_get_the_same_demonstrations(demos):
    ds = _pool_dataset()
    ds.examples["P36"] = [Example(("The capital of X is [MASK].",), "Oslo", fact="X")]
    a = Item("P20:q", ("Ann died in [MASK].",), ("Paris",), "P20", {"subject": "Ann"})
    b = Item("P20:q", ("Ann died in [MASK].",), ("Rome", "Lyon"), "P20", {"subject": "Ann"})
    for seed in range(5):
        shots = ds.few_shot(a, 4, seed, demos)
        assert shots and shots == ds.few_shot(b, 4, seed, demos)
    # the gold may be shown: over seeds, Paris (a's gold) appears among a's demonstrations
    assert any("Paris" in [ex.answer for ex in ds.few_shot(a, 4, s)] for s in range(5))


def test_the_item_s_own_fact_is_left_out_and_nothing_else():
    ds = _pool_dataset()
    own = Item("P20:7", ("Person 3 died in [MASK].",), ("Paris",), "P20", {"subject": "Person 3"})
    pool = ds.demo_pool(own)
    assert [ex.fact for ex in pool] == [f"Person {i}" for i in (0, 1, 2, 4, 5, 6, 7)]
    other_template = Item("P20:8", ("Person 5 passed away in [MASK].",), ("Rome",), "P20", {"subject": "Person 5"})
    assert "Person 5" not in [ex.fact for ex in ds.demo_pool(other_template)]  # same fact, other template
    assert ds.few_shot(own, 3, 0) == random.Random("0:P20:P20:7").sample(pool, 3)


def _missing_answer(pool_answers: list[str], demo_answers: list[str]) -> str:
    """The rule issue 26 found: the pool's most common answer absent from the item's demonstrations."""
    ranked = [a for a, _ in Counter(pool_answers).most_common()]
    return next((a for a in ranked if a not in demo_answers), ranked[0])


def test_the_missing_answer_rule_scores_no_better_than_the_majority_rule(tmp_path):
    """A crafted relation with 5 possible answers (shares .35/.25/.20/.12/.08), 600 facts, the shipped
    pool of 10 and k = 5. With the gold left out of the demonstrations (draw 1) the missing answer was
    the gold on almost every item; blind to the gold it is a less common answer than the majority's."""
    rng = random.Random(7)
    objects = rng.choices(["Paris", "Rome", "Lyon", "Nice", "Turin"], weights=[35, 25, 20, 12, 8], k=600)
    facts = {"P20": [(f"Person {i}", o, f"u{i}") for i, o in enumerate(objects)]}
    ds = load_dataset("pararel", make_pararel(tmp_path / "p", {"P20": ["[X] died in [Y]."]}, facts))
    pool_answers = [ex.answer for ex in ds.examples["P20"]]
    majority = missing = 0
    for it in ds.items:
        demos = [ex.answer for ex in ds.few_shot(it, 5, 0)]
        majority += ds.prior_answer(it) in it.answers
        missing += _missing_answer(pool_answers, demos) in it.answers
    n = len(ds.items)
    assert n == 590 and len(set(pool_answers)) >= 4
    # measured: majority .380, missing answer .210 (draw 1, which left the gold out: .9+)
    assert missing / n <= majority / n
    assert missing / n < 0.30


def test_other_groups_demonstrations_come_from_other_relations_only(tmp_path):
    facts = {rel: [(f"{rel} s{i}", f"{rel} o{i % 3}", f"{rel}-{i}") for i in range(12)] for rel in ("P19", "P20", "P36")}
    pats = {"P19": ["[X] was born in [Y]."], "P20": ["[X] died in [Y]."], "P36": ["The capital of [X] is [Y]."]}
    ds = load_dataset("pararel", make_pararel(tmp_path / "p", pats, facts), num_train=4)
    for it in ds.items:
        shots = ds.few_shot(it, 5, 0, "other-groups")
        assert len(shots) == 5 and all(not ex.answer.startswith(it.group) for ex in shots)
        assert shots == ds.few_shot(it, 5, 0, "other-groups")
    one_pool = Dataset("webqa", [Item("t0", ("q?",), ("a",))], examples={"": [Example(("p?",), "b")]})
    with pytest.raises(ConfigError, match="other-groups.*has none besides"):
        one_pool.few_shot(one_pool.items[0], 2, 0, "other-groups")


def test_prior_answer_is_the_pool_majority_first_on_ties():
    ds = _pool_dataset()
    item = Item("P20:x", ("Ann died in [MASK].",), ("Turin",), "P20", {"subject": "Ann"})
    assert ds.prior_answer(item) == "Paris"  # 3 of 8
    own = Item("P20:y", ("Person 0 died in [MASK].",), ("Paris",), "P20", {"subject": "Person 0"})
    drop = Item("P20:z", ("Person 6 died in [MASK].",), ("Paris",), "P20", {"subject": "Person 6"})
    assert ds.prior_answer(own) == "Rome"  # its own Paris left out: Rome 2, Paris 2, Rome seen first
    assert ds.prior_answer(drop) == "Paris"  # Paris 2, Rome 2: Paris seen first
    ds.examples["P20"] = ds.examples["P20"][1:3]  # Rome, Lyon: a tie, the first seen wins
    assert ds.prior_answer(item) == "Rome"


def test_the_draw_version_is_recorded_and_a_changed_draw_is_refused(tmp_path):
    from selfensemble.config.run import RunConfig, nested_config
    from selfensemble.store.run_store import RunStore

    assert demo_draw("per-item", 5) == DEMO_DRAWS["per-item"] == 2 and demo_draw("per-item", 0) is None
    cfg = RunConfig(dataset="pararel", few_shot=5).method_config("origin")
    assert cfg["demo_draw"] == 2
    legacy = {k: v for k, v in cfg.items() if k != "demo_draw"}  # written before draws were versioned
    assert nested_config(legacy)["demo_draw"] == 1
    RunStore(tmp_path / "old", legacy).open().close()
    with pytest.raises(SelfEnsembleError, match="demo_draw: stored 1, given 2 .*the demonstration draw changed"):
        RunStore(tmp_path / "old", cfg, upgrade=nested_config).open()
    shared = RunConfig(dataset="pararel", few_shot=5, demos="shared").method_config("origin")
    RunStore(tmp_path / "shared", {k: v for k, v in shared.items() if k != "demo_draw"}).open().close()
    RunStore(tmp_path / "shared", shared, upgrade=nested_config).open().close()  # the shared draw did not change
    zero = RunConfig(dataset="pararel", few_shot=0).method_config("origin")
    RunStore(tmp_path / "zero", {k: v for k, v in zero.items() if k != "demo_draw"}).open().close()
    RunStore(tmp_path / "zero", zero, upgrade=nested_config).open().close()  # no demonstrations, no draw


def test_a_short_draw_is_noted_in_the_item_s_record():
    from selfensemble.config.run import RunConfig
    from selfensemble.pipeline.build import item_fields

    ds = _pool_dataset()
    ds.examples["P20"] = ds.examples["P20"][:3]
    item = Item("P20:x", ("Ann died in [MASK].",), ("Turin",), "P20", {"subject": "Ann"})
    shown = len(ds.few_shot(item, 5, 0))
    noted = item_fields(ds, item, shown, RunConfig(few_shot=5))
    assert shown == 3 and any("3 of 5 demonstrations" in n for n in noted.meta["record"]["notes"])
    assert noted.meta["record"]["prior_answer"] == "Paris"
    assert "notes" not in item_fields(ds, item, 3, RunConfig(few_shot=3)).meta["record"]


# -- N-M golds -------------------------------------------------------------------------------------------------


def test_pararel_golds_hold_every_object_of_the_subject(tmp_path):
    facts = {"P47": [("Missouri", "Nebraska", "u1"), ("Missouri", "Kansas", "u2"), ("Texas", "Oklahoma", "u3"),
                     ("Missouri", "Iowa", "u4"), ("Ohio", "Indiana", "u5"), ("Texas", "Oklahoma", "u6")]}
    root = make_pararel(tmp_path / "p", {"P47": ["[X] shares border with [Y].", "[Y] borders with [X]."]}, facts)
    ds = load_dataset("pararel", root, num_train=0)
    by_id = {it.id: it for it in ds.items}
    assert by_id["P47:u1"].answers == ("Nebraska", "Kansas", "Iowa")  # the line's object first
    assert by_id["P47:u2"].answers == ("Kansas", "Nebraska", "Iowa")
    assert by_id["P47:u3"].answers == ("Oklahoma",) and by_id["P47:u5"].answers == ("Indiana",)
    assert by_id["P47:u2"].meta["line_answer"] == "Kansas"
    assert by_id["P47:u1"].meta["templates"] == ("[X] shares border with [Y].", "[Y] borders with [X].")
    assert is_correct("Kansas", by_id["P47:u1"].answers)  # another valid object is right, not wrong
    # the record keeps the line's own object next to the golds
    from selfensemble.engine.queries import Answer
    from selfensemble.store.records import make_record

    ans = Answer(answer="Kansas", method="origin", prompts=list(by_id["P47:u1"].prompts), generation="Kansas",
                 per_prompt=None, logprob=0.0, tokens=[], finish="eos", attention="sdpa", prefill_tokens=1)
    rec = make_record(by_id["P47:u1"], ans, "origin", "contains", None)
    assert rec["gold"] == ["Nebraska", "Kansas", "Iowa"] and rec["line_answer"] == "Nebraska" and rec["correct"]


def test_templates_that_fill_to_one_prompt_count_once(tmp_path):
    facts = {"P31": [("Rex", "dog", "u1"), ("Tom", "cat", "u2"), ("Kit", "cat", "u3")]}
    pats = ["[X] is a [Y].", "[X] is an [Y].", "[X] is a kind of [Y]."]
    ds = load_dataset("pararel", make_pararel(tmp_path / "p", {"P31": pats}, facts), num_train=0)
    it = ds.items[0]
    assert it.prompts == ("Rex is a(n) [MASK].", "Rex is a kind of [MASK].")
    assert it.meta["templates"] == ("[X] is a [Y].", "[X] is a kind of [Y].")


# -- the alias rule, in every scorer -----------------------------------------------------------------------------

ALIASED = [("Dutch", "Dutch Language"), ("dutch.", "Dutch language"), ("Frisian", "Frisian languages"),
           ("Central Time", "Central Time Zone"), ("the United States", "United States of America")]
NOT_ALIASED = [("Mexican peso", "Cuban peso"), ("peso", "Cuban peso"), ("English", "Dutch Language"),
               ("Language", "Dutch Language"), ("Central", "Central Time Zone"), ("America", "United States of America")]


@pytest.mark.parametrize("prediction, gold", ALIASED)
def test_an_alias_answers_for_its_gold_in_every_scorer(prediction, gold):
    assert len(gold_forms(gold)) == 2
    assert exact_match(prediction, gold) and contains_match(prediction, gold) and partial_match(prediction, gold)
    assert token_f1(prediction, gold) == 1.0
    assert score_all(prediction, ["Paris", gold]) == {"exact": True, "contains": True, "f1": 1.0, "partial": True}
    for mode in ("exact", "contains", "partial"):
        assert is_correct(prediction, [gold], mode)


@pytest.mark.parametrize("prediction, gold", NOT_ALIASED)
def test_the_alias_rule_makes_no_wrong_answer_right(prediction, gold):
    scores = score_all(prediction, [gold])
    assert not scores["exact"] and not scores["contains"] and scores["f1"] < 1.0


def test_gold_forms_are_small_and_documented():
    assert gold_forms("Dutch Language") == ("Dutch Language", "Dutch")
    assert gold_forms("Paris") == ("Paris",) and gold_forms("The Language") == ("The Language",)
    assert gold_forms("Swiss franc") == ("Swiss franc",)  # currencies: the bare word is shared across countries


def test_old_records_are_rescored_under_the_alias_rule_when_a_report_reads_them(tmp_path):
    from selfensemble.analysis.report import report
    from selfensemble.store.run_store import RunStore

    old = [{"id": "q0", "prompts": ["what do they speak in the netherlands?"], "gold": ["Dutch Language"],
            "prediction": "Dutch", "correct": False,
            "scores": {"exact": False, "contains": False, "f1": 0.6667, "partial": True},
            "per_prompt": ["Dutch", "German"], "per_prompt_correct": [False, False]},
           {"id": "q1", "prompts": ["capital of france?"], "gold": ["Paris"], "prediction": "Lyon", "correct": True,
            "scores": {"exact": False, "contains": True, "f1": 0.0, "partial": True}}]  # no alias: kept as stored
    with RunStore(tmp_path / "per_prompt", {"method": "per_prompt", "dataset": "webqa", "match": "contains"}) as s:
        for r in old:
            s.append(r)
    result = report([tmp_path], None)
    [row] = result["runs"]
    assert row["accuracy"] == 1.0 and row["exact_match"] == 0.5 and row["scores_realiased"] == 1
    assert row["per_prompt_accuracy"] == [1.0, 0.0]
    assert any("before the gold alias rule" in n and "per_prompt 1/2" in n for n in result["notes"])
