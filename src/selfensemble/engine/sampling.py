"""Choosing each group's next token on the logits' device: greedy, or a seeded draw per row.

Sampling draws by inversion: row g takes the first token whose cumulative probability exceeds
``u_g`` × its total, one uniform per row per step. The uniforms come from a counter-based generator,
``u = hash(key_g, step)`` computed with integer tensor ops on whatever device holds the logits, for
every row in one batched call. So

- a row's draw depends only on its own key (its seed), its step and its own distribution — never on
  its batch neighbours, how many rows there are, or where in the batch it sits (tests/test_sampling.py);
- nothing is drawn on the host or copied to the device per step (the keys go once per call), and a
  step's draw is a few kernels (cumsum, searchsorted) whatever the vocabulary: drawing one number per
  token instead (an exponential race) cost ~45 ms a step at 8 rows × 49k tokens on this CPU.

The hash is murmur3's 32-bit finaliser (a bijection with full avalanche) applied to the row's key
mixed with the step, computed in int64 with every product kept below 2**63 (:func:`_mul32`), so CPU
and CUDA give the same bits. Uniforms have 53 bits and the cumulative sums are float64, so even a
token of probability 1e-12 is drawn at its rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MASK32 = 0xFFFFFFFF
NUCLEUS_CANDIDATES = 256  # top-p looks at this many tokens first; the full sort only for a row whose mass falls short


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32) and c < 2**32, never overflowing int64."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _MASK32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """murmur3's finaliser on int64 values in [0, 2**32)."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def sample_keys(seeds: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(G, 2) int64: each seed's low and high 32 bits, sent to the device once per decode call."""
    return torch.tensor([[int(s) & _MASK32, (int(s) >> 32) & _MASK32] for s in seeds], dtype=torch.long,
                        device=device).reshape(-1, 2)


def step_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """(G,) float64 uniforms in [0, 1): row g's at ``step``, a function of (keys[g], step) only."""
    lo, hi = keys[:, 0], keys[:, 1]
    a = _fmix32(lo ^ _fmix32(hi ^ ((step * 0x9E3779B9 + 0x7F4A7C15) & _MASK32)))
    b = _fmix32(a ^ 0x68E31DA4 ^ hi)
    return ((a << 21) | (b >> 11)).to(torch.float64) * (1.0 / (1 << 53))


def select_tokens(logp: torch.Tensor, do_sample: bool, temperature: float = 1.0, top_p: float = 1.0,
                  top_k: int = 0, keys: torch.Tensor | None = None, step: int = 0) -> torch.Tensor:
    """One token per row of ``logp`` (G, vocab) → (G,) long, in one batched operation.

    Greedy: the argmax of each row. Sampling: temperature, then top-k, then top-p (the nucleus keeps
    the token that crosses ``top_p``), then the draw by inversion with row g's uniform from
    ``keys[g]`` (:func:`sample_keys`) at ``step``: the first token (in id order) whose cumulative
    probability exceeds u × the row's total. A row's token depends only on its own distribution, key
    and step (not on how its nucleus was found: tokens outside it add nothing to the sums), and a
    rounding-level change in the logits moves a pick only when u falls within that rounding of a
    boundary between two tokens (~1e-7 per draw). The nucleus is found among each row's top
    ``NUCLEUS_CANDIDATES`` tokens (a partial sort); a row whose top tokens hold less than ``top_p``
    is sorted in full, so the kept set is a full sort's.
    """
    if not do_sample:
        return torch.argmax(logp, dim=-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    rows, vocab = logp.shape
    keys = keys if keys is not None else sample_keys([0] * rows, logp.device)
    if tuple(keys.shape) != (rows, 2):
        raise ValueError(f"keys: one (low, high) pair per row, got shape {tuple(keys.shape)} for {rows} rows")
    probs = torch.softmax(logp.float() / temperature, dim=-1)
    if 0 < top_k < vocab:
        kth = torch.topk(probs, top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if top_p < 1.0:
        probs = probs * _nucleus(probs / probs.sum(dim=-1, keepdim=True), top_p)
    cdf = probs.double().cumsum(dim=-1)  # (G, vocab), float64: a draw resolves every token's share
    target = step_uniforms(keys.to(logp.device), step)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, target, right=True)[:, 0].clamp_max(vocab - 1)


def select_token(logp: torch.Tensor, do_sample: bool, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, seed: int = 0, step: int = 0) -> int:
    """Greedy argmax, or the draw of stream ``seed`` at ``step``, from fused log-probs (vocab,)."""
    keys = sample_keys([seed], logp.device)
    return int(select_tokens(logp[None], do_sample, temperature, top_p, top_k, keys, step)[0])


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """(G, vocab) bool: the smallest most-probable set per row whose mass reaches ``top_p``."""
    top, order = torch.topk(probs, min(NUCLEUS_CANDIDATES, probs.shape[1]), dim=-1)
    short = top.sum(dim=-1) < top_p  # a flat distribution: its nucleus is longer than the partial sort
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep.scatter_(1, order, top.cumsum(dim=-1) - top <= top_p)
    if bool(short.any()):
        full, forder = torch.sort(probs[short], dim=-1, descending=True)
        keep[short] = torch.zeros_like(full, dtype=torch.bool).scatter_(1, forder, full.cumsum(dim=-1) - full <= top_p)
    return keep
