"""Scoring: hand-checked normalisation, matching, voting and metric values."""

from __future__ import annotations

import math

import pytest

from selfensemble import scoring
from selfensemble.analysis import metrics
from selfensemble.analysis.metrics import (
    accuracy,
    combined_performance_score,
    consistency,
    ece,
    per_prompt_accuracy,
    prompt_disagreement,
    prompt_sensitivity,
)
from selfensemble.errors import SelfEnsembleError
from selfensemble.scoring import (
    exact_match,
    is_correct,
    is_demo_copy,
    lemmas,
    majority_vote,
    normalize,
    partial_match,
    score_all,
    set_lemmatizer,
    token_f1,
)
from selfensemble.store.records import prompts_seen


@pytest.fixture(autouse=True)
def _default_lemmatizer():
    yield
    set_lemmatizer("simplemma")


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Pacific Ocean.", "pacific ocean"),
        ("  An  apple,   a day!  ", "apple day"),
        ("Paris, France", "paris france"),
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("Saint-Denis", "saint denis"),
        ("“Quoted”", "quoted"),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_lemmas() -> None:
    assert lemmas("The cities were painted") == ["city", "be", "paint"]
    assert lemmas("1990s") == ["1990s"]  # digits are left alone
    set_lemmatizer("none")
    assert lemmas("The cities were painted") == ["cities", "were", "painted"]


def test_set_lemmatizer_errors() -> None:
    with pytest.raises(SelfEnsembleError, match="Did you mean 'spacy'"):
        set_lemmatizer("spacey")
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(SelfEnsembleError, match="pip install spacy"):
            set_lemmatizer("spacy")
        assert scoring.get_lemmatizer() == "simplemma"  # unchanged after the failure


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("The Pacific Ocean.", "pacific ocean", True),
        ("painted", "paint", True),
        ("cities", "city", True),
        ("Paris", "Paris, France", True),
        ("Paris, France", "Paris", True),
        ("It is located in Paris, France", "Paris", True),
        ("Lyon", "Paris", False),
        ("ocean pacific", "pacific ocean", False),  # order matters: a contiguous run
        ("New Jersey", "New York", False),
        ("", "Paris", False),
        ("The", "the", False),  # nothing left after normalising
    ],
)
def test_partial_match(prediction: str, gold: str, expected: bool) -> None:
    assert partial_match(prediction, gold) is expected


def test_exact_match() -> None:
    assert exact_match("The Eiffel Tower!", "eiffel tower")
    assert exact_match("Eiffel Towers", "eiffel tower")  # lemmatised, like every other scorer
    assert not exact_match("Eiffel Tower, Paris", "eiffel tower")
    assert not exact_match("", "")


@pytest.mark.parametrize(("prediction", "golds", "expected"), [
    # the fragment the lenient scorer credits: partial only
    ("Mozart", ["Wolfgang Amadeus Mozart"], {"exact": False, "contains": False, "partial": True}),
    # gold inside a longer answer: contains (and partial), not exact
    ("It is Paris, France", ["Paris"], {"exact": False, "contains": True, "partial": True}),
    ("Paris", ["Paris"], {"exact": True, "contains": True, "partial": True}),
    # aliases: any one gold is enough, for each scorer
    ("Big Apple", ["New York City", "the Big Apple"], {"exact": True, "contains": True, "partial": True}),
    ("I love the Big Apple!", ["New York City", "the Big Apple"], {"exact": False, "contains": True, "partial": True}),
    ("Parisian", ["Paris"], {"exact": False, "contains": False, "partial": False}),  # whole words only
    ("ocean pacific", ["pacific ocean"], {"exact": False, "contains": False, "partial": False}),
    ("", ["Paris"], {"exact": False, "contains": False, "partial": False}),
])
def test_boolean_scorers_on_crafted_cases(prediction, golds, expected) -> None:
    got = score_all(prediction, golds)
    assert {k: got[k] for k in expected} == expected
    for mode, want in expected.items():
        assert is_correct(prediction, golds, mode) is want


def test_token_f1_by_hand() -> None:
    # lemmas eiffel tower in paris vs eiffel tower: overlap 2, P = 2/4, R = 2/2 -> 2PR/(P+R) = 2/3
    assert token_f1("the Eiffel tower in Paris", "Eiffel Tower") == pytest.approx(2 / 3)
    # it be paris france vs paris: P = 1/4, R = 1 -> 0.4
    assert token_f1("It is Paris, France", "Paris") == pytest.approx(0.4)
    # mozart vs wolfgang amadeus mozart: P = 1, R = 1/3 -> 0.5
    assert token_f1("Mozart", "Wolfgang Amadeus Mozart") == pytest.approx(0.5)
    # multiset overlap: "new new york" vs "new york": common = min counts = 2, P 2/3, R 1 -> 0.8
    assert token_f1("new new york", "new york") == pytest.approx(0.8)
    assert token_f1("Lyon", "Paris") == 0.0 and token_f1("", "Paris") == 0.0
    # max over aliases
    assert score_all("Eiffel", ["Eiffel Tower", "Tour Eiffel Paris"])["f1"] == pytest.approx(2 / 3)
    assert score_all("Cities", ["city"])["f1"] == 1.0  # exact implies F1 1
    assert score_all("anything", [])["f1"] == 0.0


def test_is_correct() -> None:
    golds = ["Jamaican English", "Jamaican Creole English Language"]
    assert is_correct("They speak Jamaican English.", golds)  # default: contains
    assert not is_correct("They speak Jamaican English.", golds, mode="exact")
    assert is_correct("jamaican english", golds, mode="exact")
    assert is_correct("English", golds, mode="partial") and not is_correct("English", golds)
    assert not is_correct("Spanish", golds)
    assert not is_correct("anything", [])
    with pytest.raises(SelfEnsembleError, match="Did you mean 'exact'"):
        is_correct("x", ["x"], mode="exakt")
    with pytest.raises(SelfEnsembleError, match="f1 is a score"):
        is_correct("x", ["x"], mode="f1")


# --------------------------------------------------------------------------- voting


def test_majority_vote_groups_by_lemma() -> None:
    answers = ["Paris", "The city of Lyon", "paris.", "Cities", "city"]
    assert majority_vote(answers) == ("Paris", 0)
    assert majority_vote(["Lyon", "Rome", "rome", "Lyon.", "ROME!"]) == ("Rome", 1)


def test_majority_vote_ties_go_to_earliest() -> None:
    assert majority_vote(["Lyon", "Paris", "Paris", "Lyon"]) == ("Lyon", 0)
    assert majority_vote(["Rome", "Lyon", "Paris", "Paris", "Lyon"]) == ("Lyon", 1)
    assert majority_vote(["Berlin"]) == ("Berlin", 0)


def test_majority_vote_empty_answers() -> None:
    assert majority_vote(["", " ", "Madrid", ""]) == ("Madrid", 2)
    assert majority_vote(["", "..."]) == ("", 0)
    with pytest.raises(ValueError):
        majority_vote([])


# --------------------------------------------------------------------------- metrics


def test_accuracy() -> None:
    assert accuracy([True, False, True, True]) == 0.75
    assert math.isnan(accuracy([]))


def test_consistency_hand_computed() -> None:
    items = [
        ["Paris", "paris.", "Lyon"],  # pairs: (P,p) agree, (P,L), (p,L) -> 1/3
        ["cities", "City", "city", "town"],  # 6 pairs, the 3 among the city ones agree -> 1/2
        ["Rome"],  # single prompt: no pairs, skipped
        ["", ""],  # empty answers never agree -> 0
    ]
    assert consistency(items) == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert math.isnan(consistency([["only one"]]))


def test_per_prompt_accuracy() -> None:
    out = per_prompt_accuracy([[True, False, True], [True, True], [False, False, False]])
    # position 0: 2/3, position 1: 1/3, position 2: 1/2
    assert out["per_index"] == pytest.approx([2 / 3, 1 / 3, 1 / 2])
    assert out["counts"] == [3, 3, 2]
    assert out["mean"] == pytest.approx(1 / 2)
    assert out["min"] == pytest.approx(1 / 3)
    assert out["max"] == pytest.approx(2 / 3)
    expected_std = math.sqrt(((2 / 3 - 0.5) ** 2 + (1 / 3 - 0.5) ** 2 + 0) / 3)
    assert out["std"] == pytest.approx(expected_std)
    assert per_prompt_accuracy([])["per_index"] == []


def test_ece_hand_computed() -> None:
    # bin (0.8, 0.9]: confs 0.9, 0.9, acc 1/2 -> |0.5 - 0.9| * 2/4 = 0.2
    # bin (0.5, 0.6]: conf 0.6, acc 1       -> 0.4 * 1/4 = 0.1
    # bin (0.1, 0.2]: conf 0.2, acc 0       -> 0.2 * 1/4 = 0.05
    assert ece([0.9, 0.9, 0.6, 0.2], [True, False, True, False]) == pytest.approx(0.35)
    assert ece([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    assert ece([0.0, 1.0], [True, False]) == pytest.approx(1.0)  # 0.0 joins the first bin
    # with 2 bins, 0.3 and 0.4 share (0, 0.5]: acc 1/2 vs conf 0.35 -> 0.15 * 2/3; 0.8 alone: 0.2 * 1/3
    assert ece([0.3, 0.4, 0.8], [True, False, True], n_bins=2) == pytest.approx(0.15 * 2 / 3 + 0.2 / 3)
    with pytest.raises(ValueError):
        ece([0.5], [True, False])
    with pytest.raises(ValueError):
        ece([1.5], [True])


# --------------------------------------------------------------------------- echo, demonstration copies


@pytest.mark.parametrize("prediction, prompts, golds, subject, echo", [
    ("Allan Peiper is originally from [MASK].", ["Allan Peiper was born in [MASK]."], ["Alexandra"], None, True),
    ("Allan Peiper", ["Allan Peiper was born in [MASK]."], ["Alexandra"], "Allan Peiper", True),
    ("Allan Peiper, of course", ["Allan Peiper was born in [MASK]."], ["Alexandra"], "Allan Peiper", True),
    ("Alexandra", ["Allan Peiper was born in [MASK]."], ["Alexandra"], "Allan Peiper", False),
    ("Melbourne", ["Allan Peiper was born in [MASK]."], ["Alexandra"], "Allan Peiper", False),  # wrong, no echo
    ("justin bieber", ["what is justin bieber brother name?"], ["Jaxon Bieber"], None, True),
    ("Jaxon Bieber", ["what is justin bieber brother name?"], ["Jaxon Bieber"], None, False),
    ("France", ["what country is paris in? France or Spain"], ["France"], None, False),  # span, but gold
    ("", ["what is x?"], ["y"], None, False),
])
def test_is_echo_on_crafted_records(prediction, prompts, golds, subject, echo):
    assert scoring.is_echo(prediction, prompts, golds, subject) is echo


def test_echo_rate():
    assert metrics.echo_rate([True, False, False, True]) == 0.5
    assert math.isnan(metrics.echo_rate([]))


def test_echo_against_own_prompts() -> None:
    prompts = ["Where was Allan Peiper born?", "In which town did the cyclist Allan Peiper come into the world?"]
    # "the cyclist" is a span of the paraphrase only: origin never saw it, so it is no echo for origin
    assert scoring.is_echo("the cyclist", prompts_seen("origin", prompts), ["Alexandra"]) is False
    assert scoring.is_echo("the cyclist", prompts_seen("avg", prompts), ["Alexandra"]) is True
    # per_prompt / vote answer j is judged against prompt j alone
    assert prompts_seen("per_prompt", prompts, 1) == [prompts[1]]
    assert prompts_seen("vote", prompts, 0) == [prompts[0]]
    assert prompts_seen("flex", prompts, 1) == prompts


def test_is_demo_copy() -> None:
    assert is_demo_copy("Jazz.", ["rock", "jazz", "blues"])  # same answer key
    assert is_demo_copy("the cities", ["City"])  # lemmatised
    assert not is_demo_copy("jazz fusion", ["jazz"])  # a different answer, not a copy
    assert not is_demo_copy("", ["", "jazz"])  # an empty prediction copies nothing
    assert not is_demo_copy("jazz", [])


# --------------------------------------------------------------------------- prompt sensitivity


def test_combined_performance_score_matches_published_value() -> None:
    # Mizrahi et al. 2024, data/metric results (no filtering), t0_3b on LMentry "all words from
    # category": MaxP 0.8, AvgP 0.6172093023255814, CPS 0.6537674418604651 in their own table
    assert combined_performance_score(0.8, 0.6172093023255814) == pytest.approx(0.6537674418604651, abs=1e-12)
    assert combined_performance_score(0.5, 0.5) == 0.5  # no spread: CPS is the accuracy


def test_prompt_sensitivity_by_hand() -> None:
    correct = [[1, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]]  # positions: 3/4, 1/4, 1/4
    answers = [["Paris", "Lyon", "paris"], ["Rome", "rome.", "Milan"], ["x", "x", "x"], ["a", "b", ""]]
    out = prompt_sensitivity(correct, answers)
    assert out["per_prompt_accuracy"] == pytest.approx([0.75, 0.25, 0.25])
    assert out["max_prompt_accuracy"] == pytest.approx(0.75) and out["min"] == pytest.approx(0.25)
    avg = (0.75 + 0.25 + 0.25) / 3
    assert out["avg_prompt_accuracy"] == pytest.approx(avg)
    assert out["std"] == pytest.approx((((0.75 - avg) ** 2 + 2 * (0.25 - avg) ** 2) / 3) ** 0.5)
    assert out["cps"] == pytest.approx(0.75 * (1 - (0.75 - avg)))
    # only item 3 (x, x, x) has one answer across its prompts -> 3 of 4 disagree
    assert out["prompt_disagreement"] == pytest.approx(0.75)
    assert out["consistency"] == pytest.approx((1 / 3 + 1 / 3 + 1 + 0) / 4)
    assert out["n_items"] == 4
    assert prompt_disagreement([["", ""], ["only one"]]) == 1.0  # empty agrees with nothing; 1 prompt skipped
    assert math.isnan(prompt_disagreement([["only one"]]))


def test_mean_single_is_per_item_and_avg_prompt_accuracy_per_position() -> None:
    # items asked through 3 and 2 prompts: per item 1/3 and 1 -> mean_single 2/3;
    # positions: (1+1)/2, (0+1)/2, 0/1 -> AvgP 1/2. The two baselines differ when prompt counts differ.
    out = prompt_sensitivity([[1, 0, 0], [1, 1]], [["a", "b", "c"], ["a", "a"]])
    assert out["mean_single"] == pytest.approx(2 / 3) and out["avg_prompt_accuracy"] == pytest.approx(0.5)
    full = prompt_sensitivity([[1, 0, 0], [1, 1, 0]], [["a"] * 3, ["a"] * 3])
    assert full["mean_single"] == pytest.approx(full["avg_prompt_accuracy"])  # every item has every position
