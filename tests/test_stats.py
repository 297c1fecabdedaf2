"""Statistics: hand-computed bootstrap, McNemar, Holm and group-bootstrap values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfensemble.analysis.stats import (
    bootstrap_ci,
    cluster_bootstrap_diff,
    holm,
    mcnemar_exact,
    paired_bootstrap_diff,
)


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


def test_mcnemar_exact_by_hand():
    # 2x2: both right 5, a only 10, b only 2, both wrong 3 → discordant 12, k = 2
    # p = 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096 = 0.03857421875
    a = [1] * 5 + [1] * 10 + [0] * 2 + [0] * 3
    b = [1] * 5 + [0] * 10 + [1] * 2 + [0] * 3
    got = mcnemar_exact(a, b)
    assert got == {"only_a": 10, "only_b": 2, "p_value": pytest.approx(2 * 79 / 4096)}
    assert mcnemar_exact(b, a)["p_value"] == got["p_value"]  # two-sided, symmetric
    assert mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0  # no discordant pairs
    assert mcnemar_exact([1, 1, 0], [0, 0, 1])["p_value"] == 1.0  # 2 vs 1: 2*(1+3)/8 capped at 1
    # fractional values (mean single prompt): the exact sign test, ties dropped
    assert mcnemar_exact([1, 0, 1], [0.5, 0.5, 1])["only_a"] == 1
    with pytest.raises(ValueError):
        mcnemar_exact([1], [1, 0])


def test_holm_by_hand() -> None:
    # sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> running max .02 .03 .06 .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, None, float("nan"), 0.02])  # missing values are no tests: m = 2
    assert out[0] == pytest.approx(0.02) and out[3] == pytest.approx(0.02)
    assert math.isnan(out[1]) and math.isnan(out[2])
    assert holm([]) == [] and holm([0.2]) == [0.2]


def test_cluster_bootstrap_with_one_item_per_group_is_the_item_bootstrap() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 80).astype(float), rng.integers(0, 2, 80).astype(float)
    items = paired_bootstrap_diff(a, b, n=700, seed=5)
    groups = cluster_bootstrap_diff(a, b, [f"g{i}" for i in range(80)], n=700, seed=5)
    assert (groups["low"], groups["high"], groups["mean"]) == (items["low"], items["high"], items["mean"])
    assert groups["n_groups"] == 80
    other = cluster_bootstrap_diff(a, b, [f"g{i}" for i in range(80)], n=700, seed=6)
    assert (other["low"], other["high"]) != (groups["low"], groups["high"])  # the seed is used


def test_cluster_bootstrap_by_hand_two_groups() -> None:
    # group A: 10 items all +1, group B: 10 items all 0. A resample draws 2 groups: AA, AB, BA, BB
    # -> pooled means 1, .5, .5, 0 with probabilities 1/4, 1/2, 1/4: the 95% interval is [0, 1]
    a = [1.0] * 10 + [0.0] * 10
    b = [0.0] * 20
    out = cluster_bootstrap_diff(a, b, ["A"] * 10 + ["B"] * 10, n=2000, seed=0)
    assert out["mean"] == pytest.approx(0.5) and out["n_groups"] == 2
    assert (out["low"], out["high"]) == (0.0, 1.0)
    items = paired_bootstrap_diff(a, b, n=2000, seed=0)  # as if independent: far narrower
    assert 0.2 < items["low"] < 0.5 < items["high"] < 0.8
    # unequal group sizes pool by items: A (1 item, +1) + B (3 items, 0) drawn once each -> 1/4
    uneq = cluster_bootstrap_diff([1, 0, 0, 0], [0, 0, 0, 0], ["A", "B", "B", "B"], n=4000, seed=1)
    assert uneq["low"] == 0.0 and uneq["high"] == 1.0 and uneq["mean"] == pytest.approx(0.25)


def test_cluster_bootstrap_checks_shapes() -> None:
    with pytest.raises(ValueError):
        cluster_bootstrap_diff([1.0, 0.0], [1.0, 0.0], ["g"])
    assert math.isnan(cluster_bootstrap_diff([], [], [])["low"])
