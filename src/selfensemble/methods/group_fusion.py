"""Every group's fusion in one call: (rows, vocab) logits and a row → group index → (groups, vocab).

A decode step fuses the next-token logits of many questions at once. Calling a rule of fusion.py
once per group launches a few kernels per group per step (on a GPU the dominant cost of a step at
batch 8); the rules here take the whole batch and reduce rows into their groups with segment
reductions (``scatter_reduce_`` amax, ``index_add_`` sums), so a step launches the same few kernels
whatever the number of groups. Each is the batched twin of the fusion.py rule of the same name and
returns the same normalised log-probabilities, up to float rounding (tests/test_group_fusion.py).

Worked example: rows 0 and 1 in group 0, row 2 alone in group 1, probabilities
[[.9, .1], [.2, .8], [.6, .4]] → avg_groups → [[.55, .45], [.6, .4]].

A rule that exists only per group (a custom method's ``fuse`` without ``batched=True``) runs through
:func:`per_group`, one call per group: the same answers, but its launches grow with the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from selfensemble.methods.fusion import CheckedWeights, FusionFn, check_weights

GroupFusionFn = Callable[[torch.Tensor, "Groups"], torch.Tensor]
_RULE_CODES = {"entropy": 1, "agreement": 2}  # per-row code of a per-step weight rule; 0 = fixed weights


@dataclass(frozen=True)
class Groups:
    """Which rows fuse together; built once per decode call (again when finished rows are dropped).

    ``index`` (R,) long: the group of each row, on the logits' device; ``rows``: each group's row
    indices (host); ``weights`` (R,) float32: each row's fixed weight, normalised within its group
    (1/size for a group without weights or with a per-step rule); ``size`` (R,) float32: the number of
    rows in each row's group; ``rule`` (R,) long: 0 for fixed
    weights, else the per-step rule's code, None when no group has a rule; ``given``: per group its
    weights as checked (CheckedWeights, a rule name or None), for :func:`per_group`.
    Example: rows [[0, 1], [2]] → index [0, 0, 1], weights [.5, .5, 1].
    """

    index: torch.Tensor
    rows: tuple[tuple[int, ...], ...]
    weights: torch.Tensor
    size: torch.Tensor
    rule: torch.Tensor | None
    given: tuple

    @classmethod
    def build(cls, rows: Sequence[Sequence[int]], weights: Sequence | None = None,
              device: torch.device | str = "cpu") -> Groups:
        """Groups of ``rows`` (a partition of 0..R-1) with per-group ``weights`` (numbers, a rule name
        or None each; validated here, once: ValueError as fusion.check_weights)."""
        rows = tuple(tuple(int(r) for r in g) for g in rows)
        flat = [r for g in rows for r in g]
        if sorted(flat) != list(range(len(flat))) or any(not g for g in rows):
            raise ValueError("every row must belong to exactly one group")
        given = tuple(check_weights(w, len(g), device) for w, g in
                      zip(weights if weights is not None else [None] * len(rows), rows, strict=True))
        parts = [w.tensor.to(device, torch.float32) if isinstance(w, CheckedWeights)
                 else torch.full((len(g),), 1.0 / len(g), device=device) for w, g in zip(given, rows, strict=True)]
        order = torch.tensor(flat, dtype=torch.long, device=device)
        row_weights = torch.empty(len(flat), device=device).index_copy_(0, order, torch.cat(parts))
        codes = [_RULE_CODES.get(w, 0) if isinstance(w, str) else 0 for w in given]
        return cls._made(rows, row_weights, codes, given, device)

    @classmethod
    def _made(cls, rows: tuple[tuple[int, ...], ...], row_weights: torch.Tensor, codes: Sequence[int], given: tuple,
              device) -> Groups:
        group_of = [0] * sum(len(g) for g in rows)
        for g, members in enumerate(rows):
            for r in members:
                group_of[r] = g
        rule = None
        if any(codes):
            rule = torch.tensor([codes[g] for g in group_of], dtype=torch.long, device=device)
        size = torch.tensor([float(len(rows[g])) for g in group_of], device=device)
        return cls(torch.tensor(group_of, dtype=torch.long, device=device), rows, row_weights, size, rule, given)

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def one_row_each(self) -> bool:
        return all(len(g) == 1 for g in self.rows)

    @property
    def rules(self) -> frozenset[str]:
        """The per-step weight rules some group uses."""
        return frozenset(w for w in self.given if isinstance(w, str))

    def keep(self, groups: Sequence[int]) -> Groups:
        """Only ``groups`` (indices into these), their rows renumbered 0.. in their current order:
        what the decode loop keeps when it drops finished rows."""
        live = sorted(r for g in groups for r in self.rows[g])
        new = {old: i for i, old in enumerate(live)}
        keep = torch.tensor(live, dtype=torch.long, device=self.index.device)
        rows = tuple(tuple(new[r] for r in self.rows[g]) for g in groups)
        codes = [_RULE_CODES.get(self.given[g], 0) if isinstance(self.given[g], str) else 0 for g in groups]
        return Groups._made(rows, self.weights.index_select(0, keep), codes, tuple(self.given[g] for g in groups),
                            self.index.device)

def _segment_max(x: torch.Tensor, groups: Groups) -> torch.Tensor:
    """(R, V) → (G, V): the max over each group's rows."""
    out = x.new_full((groups.count, x.shape[1]), -math.inf)
    return out.scatter_reduce_(0, groups.index[:, None].expand_as(x), x, "amax")


def _segment_logsumexp(x: torch.Tensor, groups: Groups) -> torch.Tensor:
    """(R, V) → (G, V): log of the sum of exp over each group's rows (max-shifted, as torch.logsumexp)."""
    top = _segment_max(x, groups)
    top = top.masked_fill(torch.isinf(top), 0.0)  # a column that is -inf in every row of its group stays -inf
    total = torch.zeros_like(top).index_add_(0, groups.index, (x - top.index_select(0, groups.index)).exp())
    return top + total.log()


def _per_group_sum(w: torch.Tensor, groups: Groups) -> torch.Tensor:
    """(R,) → (R,): each row's group total."""
    total = torch.zeros(groups.count, dtype=w.dtype, device=w.device).index_add_(0, groups.index, w)
    return total.index_select(0, groups.index)


def _row_weights(logp: torch.Tensor, groups: Groups) -> torch.Tensor:
    """(R,) weights normalised within each group; per-step rules (fusion.entropy_weights /
    agreement_weights) computed from ``logp`` (R, V) for the groups that use them."""
    if groups.rule is None:
        return groups.weights
    w = groups.weights
    if "entropy" in groups.rules:
        entropy = -(logp.exp() * logp).nan_to_num(0.0).sum(dim=-1)
        w = torch.where(groups.rule == _RULE_CODES["entropy"], torch.exp(-entropy), w)
    if "agreement" in groups.rules:
        mix = _segment_logsumexp(logp - groups.size.log()[:, None], groups)
        kl = (logp.exp() * (logp - mix.index_select(0, groups.index))).nan_to_num(0.0).sum(dim=-1)
        w = torch.where(groups.rule == _RULE_CODES["agreement"], torch.exp(-kl.clamp_min(0.0)), w)
    return w / _per_group_sum(w, groups)


def _check(logits: torch.Tensor, groups: Groups, needs_weights: bool = False) -> None:
    if logits.dim() != 2 or logits.shape[0] != groups.index.shape[0]:
        raise ValueError(f"logits must have shape ({groups.index.shape[0]}, vocab), got {tuple(logits.shape)}")
    if needs_weights and any(w is None for w in groups.given):
        raise ValueError("this fusion rule needs one weight per prompt, got none")


def identity_groups(logits: torch.Tensor, groups: Groups) -> torch.Tensor:
    """Groups of one row each (origin, per_prompt, flex): each row normalised, in group order."""
    _check(logits, groups)
    if not groups.one_row_each:
        raise ValueError("identity fusion takes exactly one row per group")
    logp = torch.log_softmax(logits.float(), dim=-1)
    return torch.empty_like(logp).index_copy_(0, groups.index, logp)


def avg_groups(logits: torch.Tensor, groups: Groups) -> torch.Tensor:
    """fusion.avg of every group: the mean of its rows' distributions."""
    _check(logits, groups)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return _segment_logsumexp(logp - groups.size.log()[:, None], groups)


def max_groups(logits: torch.Tensor, groups: Groups) -> torch.Tensor:
    """fusion.max_ of every group: the per-token max over its rows, renormalised."""
    _check(logits, groups)
    top = _segment_max(torch.log_softmax(logits.float(), dim=-1), groups)
    return top - torch.logsumexp(top, dim=-1, keepdim=True)


def weighted_avg_groups(logits: torch.Tensor, groups: Groups) -> torch.Tensor:
    """fusion.weighted_avg of every group (fixed weights or a per-step rule per group)."""
    _check(logits, groups, needs_weights=True)
    logp = torch.log_softmax(logits.float(), dim=-1)
    return _segment_logsumexp(logp + _row_weights(logp, groups).log()[:, None], groups)


def weighted_max_groups(logits: torch.Tensor, groups: Groups) -> torch.Tensor:
    """fusion.weighted_max of every group: the per-token max of weight × probability, renormalised."""
    _check(logits, groups, needs_weights=True)
    logp = torch.log_softmax(logits.float(), dim=-1)
    top = _segment_max(logp + _row_weights(logp, groups).clamp_min(1e-30).log()[:, None], groups)
    return top - torch.logsumexp(top, dim=-1, keepdim=True)


def per_group(fuse: FusionFn) -> GroupFusionFn:
    """A per-group rule (N, vocab) → (vocab,) run on every group, one call each: the fallback for a
    custom rule that does not take every group at once."""

    def fuse_each_group(logits: torch.Tensor, groups: Groups) -> torch.Tensor:
        _check(logits, groups)
        return torch.stack([fuse(logits[list(rows)], w) for rows, w in zip(groups.rows, groups.given, strict=True)])

    fuse_each_group.__name__ = f"per_group({getattr(fuse, '__name__', 'fuse')})"
    return fuse_each_group


def one_group(fuse: GroupFusionFn) -> FusionFn:
    """A batched rule as a per-group one, (N, vocab) logits and weights → (vocab,) (loglik and the
    reference decoder fuse one group at a time)."""

    def fuse_one_group(logits: torch.Tensor, weights=None) -> torch.Tensor:
        return fuse(logits, Groups.build([range(logits.shape[0])], [weights], logits.device))[0]

    return fuse_one_group
