"""Next-token fusion rules: pure functions from N prompts' logits to one distribution.

Every rule takes raw logits of shape (N, vocab) (one row per prompt) and optional weights (N,),
and returns normalised log-probabilities of shape (vocab,). Inputs are never modified.

The weighted rules also take a rule name instead of a weight tensor ("entropy", "agreement"):
the weights are then derived from the same logits at every decode step, at no extra cost. A loop
that fuses many times passes :class:`CheckedWeights` (:func:`check_weights`, validated once), so
no step checks its weights again.

Worked example (vocab of 2): probabilities [[.9, .1], [.2, .8]]
  avg          → [.55, .45]
  max          → max per token [.9, .8] renormalised → [.529, .471]
  weighted_avg with w = [1, 3] → [.375, .625]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from selfensemble.errors import ConfigError


@dataclass(frozen=True)
class CheckedWeights:
    """(N,) weights already validated and normalised (:func:`check_weights`), used by the rules as
    they are: a decode loop checks its weights once, not at every step (on a GPU each check of a
    device tensor is a host sync)."""

    tensor: torch.Tensor


FusionFn = Callable[[torch.Tensor, "torch.Tensor | str | CheckedWeights | None"], torch.Tensor]
DYNAMIC_WEIGHTS = ("entropy", "agreement")


def entropy_weights(logits: torch.Tensor) -> torch.Tensor:
    """Per-prompt weights exp(-H) from each row's next-token entropy H (nats): (N, vocab) → (N,).

    A confident prompt (low entropy) counts more: H = 0 → 1, a uniform row over V tokens → 1/V.
    Example: rows with probabilities [1, 0] and [.5, .5] → weights [1, .5].
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).nan_to_num(0.0).sum(dim=-1)  # 0 · log 0 = 0
    return torch.exp(-entropy)


def agreement_weights(logits: torch.Tensor) -> torch.Tensor:
    """Per-prompt weights exp(-KL(p_i || mean p)): how well each prompt agrees with the plain mixture.

    (N, vocab) → (N,), each in [1/N, 1] (the mixture gives every row at least 1/N of its own mass),
    1 when a row equals the mixture. Identical rows → equal weights.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    mix = torch.logsumexp(logp, dim=0) - math.log(logp.shape[0])
    kl = (logp.exp() * (logp - mix[None, :])).nan_to_num(0.0).sum(dim=-1)
    return torch.exp(-kl.clamp_min(0.0))


_DYNAMIC = {"entropy": entropy_weights, "agreement": agreement_weights}


def check_weights(weights: torch.Tensor | Sequence[float] | str | CheckedWeights | None, n: int,
                  device: torch.device | str = "cpu") -> CheckedWeights | str | None:
    """Validate a group's weights once, before a loop that fuses its N rows many times.

    Numbers become :class:`CheckedWeights` on ``device`` (ValueError as :func:`normalise_weights`);
    a rule name is checked and kept (its weights come from each step's logits); None stays None.
    """
    if isinstance(weights, CheckedWeights):
        return weights if weights.tensor.device == torch.device(device) else CheckedWeights(weights.tensor.to(device))
    if weights is None:
        return weights
    if isinstance(weights, str):
        if weights not in _DYNAMIC:
            raise ConfigError(f"weights rule must be one of {DYNAMIC_WEIGHTS}, got {weights!r}")
        return weights
    return CheckedWeights(normalise_weights(weights, n).to(device))


def _check(logits: torch.Tensor, weights: torch.Tensor | str | CheckedWeights | None,
           needs_weights: bool) -> torch.Tensor | None:
    if logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits must have shape (N, vocab) with N >= 1, got {tuple(logits.shape)}")
    if isinstance(weights, CheckedWeights):
        if tuple(weights.tensor.shape) != (logits.shape[0],):
            raise ValueError(f"weights must have shape ({logits.shape[0]},), got {tuple(weights.tensor.shape)}")
        return weights.tensor.to(logits.device)
    if isinstance(weights, str):
        if weights not in _DYNAMIC:
            raise ConfigError(f"weights rule must be one of {DYNAMIC_WEIGHTS}, got {weights!r}")
        # exp(-H) and exp(-KL) are in (0, 1] by construction: normalised without a check (no host sync)
        w = _DYNAMIC[weights](logits)
        return w / w.sum()
    if weights is None:
        if needs_weights:
            raise ConfigError("this fusion rule needs one weight per prompt, got none")
        return None
    return normalise_weights(weights, logits.shape[0]).to(logits.device)


def normalise_weights(weights, n: int) -> torch.Tensor:
    """(n,) per-prompt weights → float32 tensor summing to 1; the one place weights are validated.

    Raises ValueError naming the bad value: wrong count, non-finite, negative, or all zero.
    Example: [1, 3] → [0.25, 0.75].
    """
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (n,):
        raise ConfigError(f"weights must have shape ({n},), got {tuple(w.shape)}")
    # Python numbers are checked as they are; a tensor with one copy to the host, not three
    values = w.tolist() if isinstance(weights, torch.Tensor) else [float(x) for x in weights]
    if not all(math.isfinite(x) and x >= 0 for x in values) or sum(values) <= 0:
        raise ConfigError(f"weights must be finite, non-negative and not all zero, got {values}")
    return w / w.sum()


def identity(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """One prompt (origin, per_prompt, flex): just normalise."""
    _check(logits, weights, needs_weights=False)
    if logits.shape[0] != 1:
        raise ValueError(f"identity fusion takes exactly one row, got {logits.shape[0]}")
    return torch.log_softmax(logits[0].float(), dim=-1)


def _log_weighted_mean(logp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logp + w.log()[:, None], dim=0)


def avg(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the N probability distributions (a mixture: every prompt gets a vote per token)."""
    _check(logits, weights, needs_weights=False)
    logp = torch.log_softmax(logits.float(), dim=-1)
    w = torch.full((logp.shape[0],), 1.0 / logp.shape[0], device=logp.device)
    return _log_weighted_mean(logp, w)


def max_(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token max probability over prompts, renormalised: trusts whichever prompt is most sure."""
    _check(logits, weights, needs_weights=False)
    logp = torch.log_softmax(logits.float(), dim=-1).amax(dim=0)
    return logp - torch.logsumexp(logp, dim=0)


def weighted_avg(logits: torch.Tensor, weights: torch.Tensor | str | CheckedWeights | None) -> torch.Tensor:
    """Mixture with per-prompt weights (e.g. confidence estimates, or a rule name: "entropy",
    "agreement", computed from ``logits``); weights are normalised to sum 1."""
    w = _check(logits, weights, needs_weights=True)
    return _log_weighted_mean(torch.log_softmax(logits.float(), dim=-1), w)


def weighted_max(logits: torch.Tensor, weights: torch.Tensor | str | CheckedWeights | None) -> torch.Tensor:
    """Per-token max of weight × probability, renormalised (weights: tensor (N,) or a rule name)."""
    w = _check(logits, weights, needs_weights=True)
    logp = (torch.log_softmax(logits.float(), dim=-1) + w.clamp_min(1e-30).log()[:, None]).amax(dim=0)
    return logp - torch.logsumexp(logp, dim=0)

