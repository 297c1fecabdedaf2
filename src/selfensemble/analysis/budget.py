"""The per-variant accuracy distribution from a fraction of the evaluations (in the spirit of PromptEval, 2405.17202).

With many variants (say 50 formats) asking every item through every variant is costly. Ask each
item through a random few (``--variant-levels 50 --num-paraphrases 10``: 10 of 50 per item, 20% of
the evaluations) and fit a small item-response model to the cells that were asked:

    P(item i right under variant v) = σ(μ + θ_i + β_v)     (θ, β: Gaussian priors, variances by empirical Bayes)

Variant v's accuracy is the mean over items of the observed score where (i, v) was asked, else the
model's probability; the quantiles of those V accuracies estimate the distribution a full
evaluation would give. The stated error is a parametric bootstrap of exactly that target: complete
grids drawn from the fitted model, the same cells observed, the estimator rerun; the spread of
(estimate - that grid's full quantile) gives a 95% interval for the full evaluation's quantile.
:func:`budget_check` subsamples a complete run to compare the estimate with the full evaluation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
L2_ITEM, L2_VARIANT = 0.1, 0.1  # starting penalties (prior precisions), then set by empirical Bayes (fit)
EM_ROUNDS = 5
N_SIM = 100


@dataclass
class Grid:
    """Observed cells: ``item[k]``, ``variant[k]`` (indices) and ``score[k]`` (0/1), of n_items × n_variants."""

    item: np.ndarray
    variant: np.ndarray
    score: np.ndarray
    n_items: int
    n_variants: int
    variant_names: list[str]

    @property
    def budget(self) -> float:
        """Share of the n_items × n_variants evaluations that were made."""
        return len(self.score) / (self.n_items * self.n_variants)

    def subset(self, keep: np.ndarray) -> Grid:
        return Grid(self.item[keep], self.variant[keep], self.score[keep], self.n_items, self.n_variants,
                    self.variant_names)


def grid_from_cells(found: Sequence) -> Grid:
    """A Grid from analysis.variants.Cell objects (a variant is named by its dict, e.g. '{"format": 3}')."""
    items = {i: k for k, i in enumerate(dict.fromkeys(c.item for c in found))}
    names = [json.dumps(c.variant, sort_keys=True) for c in found]
    variants = {n: k for k, n in enumerate(sorted(set(names)))}
    return Grid(np.array([items[c.item] for c in found]), np.array([variants[n] for n in names]),
                np.array([float(c.score) for c in found]), len(items), len(variants), list(variants))


@dataclass
class Fit:
    """μ, θ (n_items,), β (n_variants,) and the ridge penalties (prior precisions) they were fitted under."""

    mu: float
    theta: np.ndarray
    beta: np.ndarray
    l2_item: float = L2_ITEM
    l2_variant: float = L2_VARIANT

    def probabilities(self) -> np.ndarray:
        """(n_items, n_variants) P(right) of every cell, the effects spread as their prior says.

        Posterior means are shrunk: their spread is narrower than the prior's, so the accuracies
        they predict would spread too little. Each block is rescaled about its mean to the prior's
        variance (constrained Bayes, Louis 1984) before predicting.
        """
        theta, beta = _spread(self.theta, 1 / self.l2_item), _spread(self.beta, 1 / self.l2_variant)
        return _sigmoid(self.mu + theta[:, None] + beta[None, :])

    def plausible(self, g: Grid, rng: np.random.Generator) -> np.ndarray:
        """Cell probabilities of effects drawn around the fit (Laplace posterior: each effect ± its
        standard error), so the simulations also carry the uncertainty of the fit itself."""
        p = _sigmoid(self.mu + self.theta[g.item] + self.beta[g.variant])
        w = p * (1 - p)
        se_t = 1 / np.sqrt(np.bincount(g.item, weights=w, minlength=g.n_items) + self.l2_item)
        se_b = 1 / np.sqrt(np.bincount(g.variant, weights=w, minlength=g.n_variants) + self.l2_variant)
        drawn = Fit(self.mu, self.theta + rng.standard_normal(g.n_items) * se_t,
                    self.beta + rng.standard_normal(g.n_variants) * se_b, self.l2_item, self.l2_variant)
        return drawn.probabilities()


def fit(g: Grid, start: Fit | None = None, rounds: int = EM_ROUNDS) -> Fit:
    """The model fitted to ``g``'s cells, its penalties set by empirical Bayes: ``rounds`` times, fit
    under the current penalties, then set each to 1 / (mean θ² + mean posterior variance) — the EM
    update of a Gaussian prior's variance under the Laplace approximation. Without it a variant's
    β carries its sampling noise in full and the estimated accuracies spread wider than the full
    evaluation's. ``start``: where to begin (the simulations start from the fit they came from)."""
    f = start or Fit(0.0, np.zeros(g.n_items), np.zeros(g.n_variants))
    f = Fit(f.mu, f.theta.copy(), f.beta.copy(), f.l2_item, f.l2_variant)
    for _ in range(rounds):
        _maximise(g, f)
        p = _sigmoid(f.mu + f.theta[g.item] + f.beta[g.variant])
        w = p * (1 - p)
        f.l2_item = _precision(f.theta, np.bincount(g.item, weights=w, minlength=g.n_items) + f.l2_item)
        f.l2_variant = _precision(f.beta, np.bincount(g.variant, weights=w, minlength=g.n_variants) + f.l2_variant)
    _maximise(g, f)
    return f


def _spread(params: np.ndarray, variance: float) -> np.ndarray:
    centre, var = float(np.mean(params)), float(np.var(params))
    return centre + (params - centre) * math.sqrt(variance / var) if var > 0 else params


def _precision(params: np.ndarray, hessian: np.ndarray) -> float:
    return float(np.clip(1.0 / (np.mean(params ** 2) + np.mean(1.0 / hessian)), 1e-3, 1e3))


def _maximise(g: Grid, f: Fit, iters: int = 200, tol: float = 1e-4) -> None:
    """Penalised maximum likelihood under f's penalties, in place: one Newton step per block in turn
    (θ, β, μ; each block's Hessian is diagonal given the others) until no cell's logit moves."""
    logits = f.mu + f.theta[g.item] + f.beta[g.variant]
    for _ in range(iters):
        f.theta += _step(g, f.mu + f.theta[g.item] + f.beta[g.variant], g.item, f.theta, f.l2_item)
        f.beta += _step(g, f.mu + f.theta[g.item] + f.beta[g.variant], g.variant, f.beta, f.l2_variant)
        p = _sigmoid(f.mu + f.theta[g.item] + f.beta[g.variant])
        f.mu += float(np.sum(g.score - p) / max(np.sum(p * (1 - p)), 1e-9))
        # μ and θ trade along a ridge the cells never see: convergence is judged on the cells' logits
        before, logits = logits, f.mu + f.theta[g.item] + f.beta[g.variant]
        if np.abs(logits - before).max(initial=0) < tol:
            return


def _step(g: Grid, logits: np.ndarray, index: np.ndarray, params: np.ndarray, l2: float) -> np.ndarray:
    """Newton step of one block (θ by item, or β by variant) at the cells' current ``logits``."""
    p = _sigmoid(logits)
    grad = np.bincount(index, weights=g.score - p, minlength=len(params)) - l2 * params
    hess = np.bincount(index, weights=p * (1 - p), minlength=len(params)) + l2
    return np.clip(grad / hess, -2.0, 2.0)  # damped: one step never moves a logit by more than 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def variant_accuracy(g: Grid, f: Fit) -> np.ndarray:
    """(n_variants,) accuracy: per item the observed score where asked, else the model's probability."""
    filled = f.probabilities()
    filled[g.item, g.variant] = g.score
    return filled.mean(axis=0)


def estimate(g: Grid, quantiles: Sequence[float] = QUANTILES, n_sim: int = N_SIM, seed: int = 0) -> dict:
    """Estimated quantiles of the per-variant accuracy, each with a 95% interval for the full evaluation's
    quantile, and the evaluation budget used. JSON-able."""
    fitted = fit(g)
    est = np.quantile(variant_accuracy(g, fitted), quantiles)
    rng = np.random.default_rng(seed)
    errors = np.empty((n_sim, len(quantiles)))
    for b in range(n_sim):
        p = fitted.plausible(g, rng)
        full = (rng.random(p.shape) < p).astype(float)  # a complete grid the fitted model could give
        sim = Grid(g.item, g.variant, full[g.item, g.variant], g.n_items, g.n_variants, g.variant_names)
        refit = variant_accuracy(sim, fit(sim, start=fitted))
        errors[b] = np.quantile(refit, quantiles) - np.quantile(full.mean(axis=0), quantiles)
    lo, hi = est - np.quantile(errors, 0.975, axis=0), est - np.quantile(errors, 0.025, axis=0)
    return {"n_items": g.n_items, "n_variants": g.n_variants, "evaluations": int(len(g.score)),
            "budget": g.budget, "simulations": n_sim,
            "quantiles": [{"q": float(q), "estimate": float(e), "low": float(a), "high": float(b)}
                          for q, e, a, b in zip(quantiles, est, lo, hi, strict=True)]}


def full_quantiles(g: Grid, quantiles: Sequence[float] = QUANTILES) -> list[float] | None:
    """Quantiles of the plain per-variant accuracy of a complete grid (None when a cell is missing)."""
    if len(g.score) != g.n_items * g.n_variants:
        return None
    acc = np.bincount(g.variant, weights=g.score, minlength=g.n_variants) / g.n_items
    return [float(x) for x in np.quantile(acc, quantiles)]


def budget_check(g: Grid, fraction: float, seed: int = 0, quantiles: Sequence[float] = QUANTILES,
                 n_sim: int = N_SIM) -> dict:
    """The estimate from a random ``fraction`` of a complete grid's cells beside the full evaluation:
    per quantile the estimate, its interval, the full value and whether the interval holds it."""
    full = full_quantiles(g, quantiles)
    if full is None:
        raise ValueError("budget_check needs every (item, variant) cell; this grid has gaps")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    n = max(1, math.ceil(fraction * len(g.score)))
    out = estimate(g.subset(np.sort(rng.choice(len(g.score), n, replace=False))), quantiles, n_sim, seed)
    for row, f in zip(out["quantiles"], full, strict=True):
        row.update(full=f, within=bool(row["low"] <= f <= row["high"]))
    return out
