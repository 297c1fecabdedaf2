"""Statistics for comparing methods on the same items: bootstrap intervals, exact paired tests,
Holm's multiple-comparison adjustment and a bootstrap that resamples groups of items.

Differences between answering methods are a few points on a few hundred items, so every number
here is paired over items, seeded, and exact where it can be (McNemar by integer binomials).
All functions are pure and deterministic given their seed.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np


def _chunk(size: int) -> int:
    """Resamples drawn per call to the RNG, bounding the (chunk, size) index array to ~2M entries."""
    return max(1, 2_000_000 // max(size, 1))


def _bootstrap_means(values: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Means of n resamples with replacement, drawn in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    size = values.size
    out = np.empty(n)
    chunk = _chunk(size)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        idx = rng.integers(0, size, size=(stop - start, size))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_ci(
    values: Sequence[float], n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean; (NaN, NaN) for no values."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    means = _bootstrap_means(arr, n, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def paired_bootstrap_diff(
    a: Sequence[float], b: Sequence[float], n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
    """Mean of a - b over paired items with a bootstrap interval, resampling items jointly.

    Pairing matters: both methods see the same questions, so per-item differences vary far
    less than either score. `p_value_like` = 2 * min(P(diff <= 0), P(diff >= 0)) over the
    resamples (capped at 1): small when the sign of the difference is stable.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_bootstrap_diff: {x.shape} vs {y.shape} values")
    if x.size == 0:
        nan = float("nan")
        return {"mean": nan, "low": nan, "high": nan, "p_value_like": nan}
    diff = x - y
    means = _bootstrap_means(diff, n, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high), "p_value_like": p}


def cluster_bootstrap_diff(
    a: Sequence[float], b: Sequence[float], groups: Sequence[Hashable], n: int = 1000, seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Mean of a - b with a bootstrap interval that resamples whole groups, not items.

    Items of one group (facts of one ParaRel relation) share demonstrations and templates, so
    their outcomes move together; resampling items as if independent then gives intervals that
    are too narrow. Each resample draws G groups with replacement and takes the pooled mean
    (sum of the drawn groups' differences / their item count).

    Groups are numbered in order of first appearance and drawn with the same RNG calls as the
    item bootstrap, so with one item per group this returns exactly paired_bootstrap_diff's
    interval for the same seed. Returns {"mean", "low", "high", "n_groups"}.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(groups) != x.size:
        raise ValueError(f"cluster_bootstrap_diff: {x.shape} vs {y.shape} values, {len(groups)} groups")
    if x.size == 0:
        nan = float("nan")
        return {"mean": nan, "low": nan, "high": nan, "n_groups": 0}
    index: dict[Hashable, int] = {}
    gid = np.array([index.setdefault(g, len(index)) for g in groups])
    sums = np.bincount(gid, weights=x - y)
    counts = np.bincount(gid).astype(float)
    rng = np.random.default_rng(seed)
    size, means = len(index), np.empty(n)
    chunk = _chunk(size)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        idx = rng.integers(0, size, size=(stop - start, size))
        means[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": float((x - y).mean()), "low": float(low), "high": float(high), "n_groups": size}


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """McNemar's exact test on paired correctness: two-sided binomial p over the discordant pairs.

    b01 = items a got right and b wrong, b10 = the reverse; under H0 each discordant item goes
    either way with probability 1/2, so p = min(1, 2 · P(Binom(b01 + b10, 1/2) <= min(b01, b10))).
    Example: 10 vs 2 discordant → p = 2·(C(12,0)+C(12,1)+C(12,2))/2^12 = 0.0386. No discordant
    pairs → p = 1. Exact with integers (math.comb), so no scipy is needed. With fractional values
    (a question's mean correctness over its prompts) it is the exact sign test: a pair counts for
    the side with the larger value, ties drop out; on 0/1 values the two are the same test.
    """
    if len(a) != len(b):
        raise ValueError(f"mcnemar_exact: {len(a)} vs {len(b)} paired values")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if float(x) > float(y))
    only_b = sum(1 for x, y in zip(a, b, strict=True) if float(y) > float(x))
    n, k = only_a + only_b, min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def holm(pvalues: Sequence[float | None]) -> list[float]:
    """Holm's step-down adjustment (family-wise error) of m p-values, in their input order.

    Sorted ascending p_(1) <= ... <= p_(m), the adjusted p_(i) = max over j <= i of
    min(1, (m - j + 1) · p_(j)). A difference is significant at level a when its adjusted p < a,
    which holds the chance of any false positive among the m tests at or below a.
    Missing values (None, NaN) are not tests: they stay NaN and do not count in m.
    Example: [0.01, 0.04, 0.03, 0.005] → [0.03, 0.06, 0.06, 0.02].
    """
    vals = [float("nan") if p is None else float(p) for p in pvalues]
    present = sorted((p, i) for i, p in enumerate(vals) if math.isfinite(p))
    out = [float("nan")] * len(vals)
    m, running = len(present), 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


# -- power of the exact McNemar test -----------------------------------------------------------
#
# Paired 0/1 outcomes of two methods on n items: an item is discordant (one method right, the other
# wrong) with probability d, and the effect Δ = P(only a right) − P(only b right), so |Δ| <= d. The
# number of discordant items is D ~ Binomial(n, d); given D, the a-only count is
# b ~ Binomial(D, (d + Δ) / (2d)); the exact test (mcnemar_exact) rejects at level α when
# min(b, D − b) <= k_D, the largest k with 2·P(Binomial(D, 1/2) <= k) <= α. Power sums that over D.

EXACT_MAX_N = 200_000  # above this many items the normal approximation is used (exact costs O(n))


def _check_power_args(n: int, discordance: float, effect: float, alpha: float) -> tuple[float, float]:
    if n < 0 or int(n) != n:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    if not 0.0 <= discordance <= 1.0:
        raise ValueError(f"discordance must lie in [0, 1], got {discordance!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    delta = abs(float(effect))
    if delta > discordance + 1e-12:
        raise ValueError(f"|effect| {delta} exceeds the discordance {discordance}: every discordant pair would "
                         "have to go one way more often than there are discordant pairs")
    return float(discordance), min(delta, float(discordance))


def _bdtr(k: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    """P(Binomial(n, p) <= k), 0 where k < 0 (scipy.special: fast to import, unlike scipy.stats)."""
    from scipy.special import bdtr

    return np.where(k < 0, 0.0, bdtr(np.maximum(k, 0), n, p))


def mcnemar_critical(discordant: int | np.ndarray, alpha: float) -> np.ndarray:
    """k_D per discordant count D: the exact two-sided test rejects when min(b, D − b) <= k_D
    (−1: no split of D pairs is significant, e.g. D < 6 at α .05). Shape of ``discordant``.

    Example: D = 10, α = .05 → k = 1 (2·P(Bin(10, ½) <= 1) = 22/1024 = .021; <= 2 would be .109).
    """
    from scipy.special import bdtrik

    d = np.asarray(discordant, dtype=float)
    limit = (alpha / 2) * (1 + 1e-9)  # tolerance: a p exactly at α rejects
    with np.errstate(invalid="ignore"):
        k = np.floor(np.nan_to_num(bdtrik(alpha / 2, d, 0.5), nan=-1.0))  # the continuous inverse, ±1
    k = np.clip(k, -1, np.floor(d / 2))
    for _ in range(4):  # settle on the largest k with P(<= k) <= α/2
        up = (k + 1 <= d / 2) & (_bdtr(k + 1, d, 0.5) <= limit)
        down = (k >= 0) & (_bdtr(k, d, 0.5) > limit)
        k = k + up - down
    return k


def _binom_pmf(n: int, p: float) -> np.ndarray:
    """P(Binomial(n, p) = D) for D = 0..n, through log-gamma (shape (n + 1,))."""
    from scipy.special import gammaln

    counts = np.arange(n + 1, dtype=float)
    if p >= 1.0:
        return (counts == n).astype(float)
    log_pmf = gammaln(n + 1) - gammaln(counts + 1) - gammaln(n - counts + 1)
    return np.exp(log_pmf + counts * math.log(p) + (n - counts) * math.log1p(-p))


def mcnemar_power(n: int, discordance: float, effect: float, alpha: float = 0.05, method: str = "auto") -> float:
    """Probability that the exact two-sided McNemar test at level ``alpha`` rejects on ``n`` paired
    items with discordant-pair rate ``discordance`` and true difference ``effect`` (share of items).

    ``method``: "exact" sums over the number of discordant pairs (see the module note above);
    "normal" is the large-sample approximation Φ((|Δ|√n − z_{1−α/2}√d) / √(d − Δ²)); "auto" is
    exact up to EXACT_MAX_N items. At Δ = 0 the exact value is the test's real size (<= α).
    """
    d, delta = _check_power_args(n, discordance, effect, alpha)
    if method not in ("exact", "normal", "auto"):
        raise ValueError(f"method must be 'auto', 'exact' or 'normal', got {method!r}")
    if n == 0 or d == 0.0:
        return 0.0  # no discordant pair can occur: the test never rejects
    if method == "normal" or (method == "auto" and n > EXACT_MAX_N):
        return _power_normal(n, d, delta, alpha)
    from scipy.special import bdtrc

    weight = _binom_pmf(int(n), d)
    keep = weight > 1e-300
    counts, weight = np.arange(n + 1, dtype=float)[keep], weight[keep]
    k = mcnemar_critical(counts, alpha)
    p_a = (d + delta) / (2 * d)  # given a discordant pair, the chance it favours the better method
    reject = _bdtr(k, counts, p_a) + bdtrc(counts - k - 1, counts, p_a)  # P(b <= k) + P(b >= D − k)
    reject = np.where(k < 0, 0.0, reject)
    return float(min(1.0, np.sum(weight * reject)))


def _power_normal(n: int, d: float, delta: float, alpha: float) -> float:
    from scipy.special import ndtr, ndtri

    spread = math.sqrt(max(d - delta * delta, 1e-300))
    return float(ndtr((delta * math.sqrt(n) - ndtri(1 - alpha / 2) * math.sqrt(d)) / spread))


def mcnemar_n_normal(discordance: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items the exact McNemar test needs, by the normal approximation:
    n = (z_{1−α/2}·√d + z_{power}·√(d − Δ²))² / Δ², rounded up.

    Example: d = .03, Δ = .01, α = .05, power .8 → (1.95996·.17321 + .84162·.17292)² / .0001 → 2,353.
    """
    from scipy.special import ndtri

    d, delta = _check_power_args(0, discordance, effect, alpha)
    if delta == 0.0:
        raise ValueError("effect must be non-zero: no sample detects a zero difference")
    z = ndtri(1 - alpha / 2) * math.sqrt(d) + ndtri(power) * math.sqrt(d - delta * delta)
    return math.ceil(z * z / (delta * delta) - 1e-9)


def mcnemar_n_exact(discordance: float, effect: float, alpha: float = 0.05, power: float = 0.8,
                    max_n: int = 10_000_000) -> int:
    """Smallest n whose exact power (mcnemar_power) reaches ``power``, searched by bisection.

    The exact power of a discrete test saw-tooths slightly in n, so bisection finds one crossing of
    the target, and the result is then stepped down while the power stays at or above it: at the
    returned n the power is >= the target and at n − 1 it is below. Large n use the normal
    approximation (mcnemar_power's "auto").
    """
    d, delta = _check_power_args(0, discordance, effect, alpha)
    if delta == 0.0:
        raise ValueError("effect must be non-zero: no sample detects a zero difference")
    hi = max(2, mcnemar_n_normal(d, delta, alpha, power))
    while mcnemar_power(hi, d, delta, alpha) < power:
        hi *= 2
        if hi > max_n:
            raise ValueError(f"more than {max_n} items would be needed")
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mcnemar_power(mid, d, delta, alpha) >= power else (mid, hi)
    while hi > 1 and mcnemar_power(hi - 1, d, delta, alpha) >= power:
        hi -= 1
    return hi


def mcnemar_mde(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Minimum detectable effect: the smallest |Δ| (share of items, at most the discordance) that
    the exact McNemar test on ``n`` items at this discordance and ``alpha`` rejects with probability
    ``power``; None when even Δ = d (every discordant pair one way) falls short. Bisection to 1e-5
    on the exact power, which grows with |Δ|.
    """
    d, _ = _check_power_args(n, discordance, 0.0, alpha)
    if n == 0 or d == 0.0 or mcnemar_power(n, d, d, alpha) < power:
        return None
    lo, hi = 0.0, d
    while hi - lo > 1e-5:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if mcnemar_power(n, d, mid, alpha) >= power else (mid, hi)
    return hi
