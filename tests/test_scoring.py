"""Scoring: hand-checked normalisation, matching, voting and metric values."""

from __future__ import annotations

import math

import pytest

from selfensemble import scoring
from selfensemble.errors import SelfEnsembleError
from selfensemble.scoring import (
    accuracy,
    bootstrap_ci,
    consistency,
    ece,
    exact_match,
    is_correct,
    lemmas,
    majority_vote,
    normalize,
    paired_bootstrap_diff,
    partial_match,
    per_prompt_accuracy,
    set_lemmatizer,
)


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
    assert not exact_match("Eiffel Towers", "eiffel tower")  # no lemmatising in exact mode
    assert not exact_match("", "")


def test_is_correct() -> None:
    golds = ["Jamaican English", "Jamaican Creole English Language"]
    assert is_correct("They speak Jamaican English.", golds)
    assert not is_correct("They speak Jamaican English.", golds, mode="exact")
    assert is_correct("jamaican english", golds, mode="exact")
    assert not is_correct("Spanish", golds)
    assert not is_correct("anything", [])
    with pytest.raises(SelfEnsembleError, match="Did you mean 'exact'"):
        is_correct("x", ["x"], mode="exakt")


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


def test_bootstrap_ci_is_seeded_and_brackets_mean() -> None:
    values = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_ci(values, n=500, seed=1)
    assert low < 0.3 < high
    assert low > 0.15 and high < 0.45
    assert bootstrap_ci(values, n=500, seed=1) == (low, high)
    assert bootstrap_ci(values, n=500, seed=2) != (low, high)
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_paired_bootstrap_diff() -> None:
    a = [1.0] * 60 + [0.0] * 40
    b = [1.0] * 40 + [0.0] * 60  # a is right on 20 more items, never worse
    out = paired_bootstrap_diff(a, b, n=500, seed=0)
    assert out["mean"] == pytest.approx(0.2)
    assert 0.1 < out["low"] < 0.2 < out["high"] < 0.3
    assert out["p_value_like"] < 0.01
    same = paired_bootstrap_diff(a, a, n=200)
    assert same["mean"] == 0.0 and same["p_value_like"] == 1.0
    noisy = paired_bootstrap_diff([1, 0] * 20, [0, 1] * 20, n=500)
    assert noisy["low"] < 0 < noisy["high"] and noisy["p_value_like"] > 0.5
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1.0], [1.0, 0.0])


def test_bootstrap_handles_large_inputs_in_chunks() -> None:
    values = [float(i % 2) for i in range(50_000)]
    low, high = bootstrap_ci(values, n=200, seed=0)
    assert 0.49 < low < 0.5 < high < 0.51


# --------------------------------------------------------------------------- echo rate, McNemar


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
    assert scoring.echo_rate([True, False, False, True]) == 0.5
    assert math.isnan(scoring.echo_rate([]))


def test_mcnemar_exact_by_hand():
    # 2x2: both right 5, a only 10, b only 2, both wrong 3 → discordant 12, k = 2
    # p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096 = 0.03857421875
    a = [1] * 5 + [1] * 10 + [0] * 2 + [0] * 3
    b = [1] * 5 + [0] * 10 + [1] * 2 + [0] * 3
    got = scoring.mcnemar_exact(a, b)
    assert got == {"only_a": 10, "only_b": 2, "p_value": pytest.approx(2 * 79 / 4096)}
    assert scoring.mcnemar_exact(b, a)["p_value"] == got["p_value"]  # two-sided, symmetric
    assert scoring.mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0  # no discordant pairs
    assert scoring.mcnemar_exact([1, 1, 0], [0, 0, 1])["p_value"] == 1.0  # 2 vs 1: 2*(1+3)/8 capped at 1
    # fractional values (mean single prompt): the exact sign test, ties dropped
    assert scoring.mcnemar_exact([1, 0, 1], [0.5, 0.5, 1])["only_a"] == 1
    with pytest.raises(ValueError):
        scoring.mcnemar_exact([1], [1, 0])
