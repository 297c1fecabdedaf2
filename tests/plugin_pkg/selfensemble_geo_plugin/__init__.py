"""Two answering methods from outside selfensemble, registered only through entry points.

``geo``: the N prompts' next-token distributions fused by their geometric mean, renormalised.
``last_prompt``: every prompt answered alone, the last prompt's answer reported.
"""

from __future__ import annotations

import torch

from selfensemble.methods.registry import Method


def geometric_mean(logits: torch.Tensor, weights=None) -> torch.Tensor:
    """(N, vocab) logits → (vocab,) normalised log-probs: the mean of the N log-distributions."""
    return torch.log_softmax(torch.log_softmax(logits.float(), dim=-1).mean(dim=0), dim=-1)


GEO = Method("geo", rows="each", fuse=geometric_mean, summary="geometric mean of the N distributions")


def last_prompt() -> Method:
    return Method("last_prompt", rows="each", per_prompt=True, select=lambda answers: len(answers) - 1,
                  scores_continuations=False, summary="the last prompt's own answer")
