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
