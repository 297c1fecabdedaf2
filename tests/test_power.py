"""Power of the exact McNemar test, its minimum detectable effect and the sample-size search,
against a brute-force enumeration of every outcome of n <= 30 paired items (exact fractions)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from selfensemble.analysis.stats import (
    mcnemar_critical,
    mcnemar_mde,
    mcnemar_n_exact,
    mcnemar_n_normal,
    mcnemar_power,
)


def _exact_p(b: int, c: int) -> Fraction:
    """McNemar's exact two-sided p of b : c discordant pairs, as a fraction (independent of stats.py)."""
    n, k = b + c, min(b, c)
    if n == 0:
        return Fraction(1)
    return min(Fraction(1), Fraction(2 * sum(math.comb(n, i) for i in range(k + 1)), 2 ** n))


def brute_power(n: int, d: float, delta: float, alpha: float) -> float:
    """Sum over every (b, c, concordant) split of n items with multinomial probabilities, counting the
    splits whose exact p <= alpha: the definition of power, with no conditioning trick."""
    p_a, p_b = (d + delta) / 2, (d - delta) / 2
    total = 0.0
    for b in range(n + 1):
        for c in range(n + 1 - b):
            if _exact_p(b, c) <= Fraction(alpha):
                ways = math.factorial(n) // (math.factorial(b) * math.factorial(c) * math.factorial(n - b - c))
                total += ways * p_a ** b * p_b ** c * (1 - d) ** (n - b - c)
    return total


CASES = [(10, 0.5, 0.3, 0.05), (20, 0.4, 0.1, 0.05), (30, 0.9, 0.5, 0.05), (30, 0.3, 0.3, 0.05),
         (25, 0.6, 0.0, 0.05), (30, 0.5, 0.2, 0.05 / 3), (12, 1.0, 0.5, 0.03125), (30, 0.2, 0.1, 0.01)]


@pytest.mark.parametrize(("n", "d", "delta", "alpha"), CASES)
def test_exact_power_equals_brute_force(n, d, delta, alpha):
    assert mcnemar_power(n, d, delta, alpha, method="exact") == pytest.approx(brute_power(n, d, delta, alpha),
                                                                              abs=1e-12)
    assert mcnemar_power(n, d, -delta, alpha, method="exact") == pytest.approx(brute_power(n, d, delta, alpha),
                                                                               abs=1e-12)


def test_critical_values_by_hand():
    # D = 10: 2·P(<= 1) = 22/1024 = .021 <= .05, 2·P(<= 2) = 112/1024 = .109 → k = 1; D <= 5 never rejects
    assert list(mcnemar_critical([0, 5, 6, 10], 0.05)) == [-1, -1, 0, 1]
    # a p exactly at α rejects: D = 6, b = 0 gives p = 2/64 = .03125
    assert mcnemar_critical(6, 0.03125) == 0 and mcnemar_critical(6, 0.031) == -1
    for big in range(1, 120):  # against the fraction definition
        want = max([k for k in range(big // 2 + 1) if _exact_p(k, big - k) <= Fraction(0.05)], default=-1)
        assert mcnemar_critical(big, 0.05) == want, big


@pytest.mark.parametrize(("n", "d", "alpha"), [(30, 0.5, 0.05), (20, 0.9, 0.05), (30, 0.4, 0.05 / 3)])
def test_mde_is_the_smallest_effect_reaching_80_percent(n, d, alpha):
    mde = mcnemar_mde(n, d, alpha)
    assert mde is not None and 0 < mde <= d
    assert brute_power(n, d, mde, alpha) >= 0.8 - 1e-9
    assert brute_power(n, d, max(mde - 1e-4, 0.0), alpha) < 0.8


def test_mde_none_when_no_effect_can_reach_the_power():
    # 10 items at d = .3: about 3 discordant pairs, never enough for p <= .05 even all one way
    assert brute_power(10, 0.3, 0.3, 0.05) < 0.8 and mcnemar_mde(10, 0.3, 0.05) is None
    assert mcnemar_mde(100, 0.0, 0.05) is None and mcnemar_power(100, 0.0, 0.0) == 0.0


def test_normal_approximation_is_close_at_large_n_and_optimistic_at_small_n():
    for n, d, delta in [(2500, 0.03, 0.01), (8000, 0.05, 0.008), (20000, 0.017, 0.003)]:  # >= 75 discordant
        exact, normal = mcnemar_power(n, d, delta, 0.05, "exact"), mcnemar_power(n, d, delta, 0.05, "normal")
        assert 0 < normal - exact < 0.025, (n, d, delta, exact, normal)
    for n, d, delta, alpha in CASES[:3]:  # few discordant pairs: the approximation promises too much
        assert mcnemar_power(n, d, delta, alpha, "normal") >= brute_power(n, d, delta, alpha)


def test_n_normal_by_hand_and_as_the_inverse_of_normal_power():
    # (1.959964·√.03 + 0.841621·√(.03 − .0001))² / .01² = (0.339476 + 0.145531)² / 1e-4 = 2352.3 → 2353
    assert mcnemar_n_normal(0.03, 0.01, 0.05, 0.8) == 2353
    for d, delta, alpha in [(0.03, 0.01, 0.05), (0.017, 0.02 * 0.5, 0.05 / 6), (0.1, 0.03, 0.01)]:
        n = mcnemar_n_normal(d, delta, alpha)
        assert mcnemar_power(n, d, delta, alpha, "normal") >= 0.8 > mcnemar_power(n - 1, d, delta, alpha, "normal")


def test_n_exact_reaches_the_power_and_one_less_does_not():
    for d, delta, alpha in [(0.5, 0.3, 0.05), (0.6, 0.4, 0.05 / 3)]:  # small: check against brute force
        n = mcnemar_n_exact(d, delta, alpha)
        assert n <= 60
        assert brute_power(n, d, delta, alpha) >= 0.8 > brute_power(n - 1, d, delta, alpha)
    n = mcnemar_n_exact(0.03, 0.01, 0.05)  # the case: exact needs a few % more than the formula
    assert mcnemar_power(n, 0.03, 0.01, 0.05) >= 0.8 > mcnemar_power(n - 1, 0.03, 0.01, 0.05)
    assert 1.0 <= n / mcnemar_n_normal(0.03, 0.01, 0.05) < 1.1


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="exceeds the discordance"):
        mcnemar_power(100, 0.02, 0.05)
    with pytest.raises(ValueError, match="non-zero"):
        mcnemar_n_normal(0.03, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        mcnemar_power(100, 0.1, 0.05, alpha=0.0)
