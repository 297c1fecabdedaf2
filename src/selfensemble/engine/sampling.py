"""Choosing each group's next token on the logits' device: greedy, or a seeded draw per row.

Sampling is an exponential race: row g takes argmax(p / e) over its tokens, with one Exp(1) number
e = -log(u) per token — a draw from p. The uniforms come from a counter-based generator,
``u = hash(key_g, step, token id)``, computed with integer tensor ops on whatever device holds the
logits, for every row in one batched call. So

- a row's draw depends only on its own key (its seed), its step and its own distribution — never on
  its batch neighbours, how many rows there are, or where in the batch it sits
  (tests/test_batch_invariance.py);
- nothing is drawn on the host or copied to the device per step (the keys go once per call);
- the numbers are indexed by token id, so a rounding-level change in the probabilities flips a pick
  only when two tokens' p / e tie to ~1e-7. (A draw by inversion of the cumulative sum, tried first,
  flipped about one step in a hundred between the cached engine and the no-cache reference at
  temperature 1.5 on a random model: every token's rounding moves every boundary after it.)

The hash is a 32-bit finaliser (murmur3's shifts, multipliers written so that int64 products stay
below 2**63), so CPU and CUDA give the same bits; uniforms have 23 bits, exact in float32. With
``top_p < 1`` the race runs over the nucleus's candidates only (the same pick: every other token has
p = 0), so the usual sampling settings hash a few hundred tokens a row, not the vocabulary.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from selfensemble.errors import ConfigError

_MASK32 = 0xFFFFFFFF
NUCLEUS_CANDIDATES = 256  # top-p looks at this many tokens first; the full sort only for a row whose mass falls short


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32), c in [0, 2**32): c above 2**31 is used as c - 2**32
    (the same residue), so the int64 product never overflows; & takes the residue of a negative one too."""
    return (x * (c - (1 << 32) if c >= 1 << 31 else c)) & _MASK32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """murmur3's finaliser (a bijection of [0, 2**32) with full avalanche) on int64 values in that range."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def sample_keys(seeds: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(G, 2) int64: each seed's low and high 32 bits, sent to the device once per decode call."""
    return torch.tensor([[int(s) & _MASK32, (int(s) >> 32) & _MASK32] for s in seeds], dtype=torch.long,
                        device=device).reshape(-1, 2)


def _token_hash(tokens: torch.Tensor) -> torch.Tensor:
    return _fmix32(_mul32(tokens, 0x27D4EB2F))


@functools.lru_cache(maxsize=8)
def _vocab_hash(vocab: int, device: str) -> torch.Tensor:
    """The token part of the hash for ids 0..vocab-1, computed once per vocabulary and device."""
    return _token_hash(torch.arange(vocab, device=device))


def race_uniforms(keys: torch.Tensor, step: int, tokens: torch.Tensor | int) -> torch.Tensor:
    """Uniforms in (0, 1), float32, for row g and token v at ``step``, a function of (keys[g], step, v)
    only: (G, V) for ``tokens`` = V (every id), (G, C) for (G, C) ids per row."""
    lo, hi = keys[:, 0], keys[:, 1]
    row = _fmix32(lo ^ _fmix32(hi ^ ((step * 0x9E3779B9 + 0x7F4A7C15) & _MASK32)))  # (G,) per-(row, step) key
    token = _vocab_hash(tokens, str(keys.device))[None, :] if isinstance(tokens, int) else _token_hash(tokens)
    bits = _fmix32(token ^ row[:, None]) >> 9  # 23 bits: bits + 0.5 is exact in float32, so u < 1 and -log(u) > 0
    return (bits.to(torch.float32) + 0.5) * (1.0 / (1 << 23))


def select_tokens(logp: torch.Tensor, do_sample: bool, temperature: float = 1.0, top_p: float = 1.0,
                  top_k: int = 0, keys: torch.Tensor | None = None, step: int = 0) -> torch.Tensor:
    """One token per row of ``logp`` (G, vocab) → (G,) long, in one batched operation.

    Greedy: the argmax of each row. Sampling: temperature, then top-k, then top-p (the nucleus keeps
    the token that crosses ``top_p``), then the exponential race with row g's numbers from
    ``keys[g]`` (:func:`sample_keys`) at ``step``. A row's token depends only on its own
    distribution, key and step (not on how its nucleus was found). The nucleus is found among each
    row's top ``NUCLEUS_CANDIDATES`` tokens (a partial sort); a row whose top tokens hold less than
    ``top_p`` is sorted in full, so the kept set is a full sort's.
    """
    if not do_sample:
        return torch.argmax(logp, dim=-1)
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0 when sampling, got {temperature}")
    rows, vocab = logp.shape
    keys = (keys if keys is not None else sample_keys([0] * rows)).to(logp.device)
    if tuple(keys.shape) != (rows, 2):
        raise ValueError(f"keys: one (low, high) pair per row, got shape {tuple(keys.shape)} for {rows} rows")
    probs = torch.softmax(logp.float() / temperature, dim=-1)
    if 0 < top_k < vocab:
        kth = torch.topk(probs, top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if top_p < 1.0:
        keep, candidates = _nucleus(probs / probs.sum(dim=-1, keepdim=True), top_p)
        probs = probs * keep
        if candidates is not None:  # every kept token is among them: race those only
            race = -torch.log(race_uniforms(keys, step, candidates))
            return candidates.gather(1, torch.argmax(probs.gather(1, candidates) / race, dim=-1, keepdim=True))[:, 0]
    race = -torch.log(race_uniforms(keys, step, vocab))
    return torch.argmax(probs / race, dim=-1)


def select_token(logp: torch.Tensor, do_sample: bool, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, seed: int = 0, step: int = 0) -> int:
    """Greedy argmax, or the draw of stream ``seed`` at ``step``, from fused log-probs (vocab,)."""
    keys = sample_keys([seed], logp.device)
    return int(select_tokens(logp[None], do_sample, temperature, top_p, top_k, keys, step)[0])


def _nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(keep (G, vocab) bool: the smallest most-probable set per row whose mass reaches ``top_p``,
    the (G, C) token ids holding every kept token — None when some row needed the full sort)."""
    top, order = torch.topk(probs, min(NUCLEUS_CANDIDATES, probs.shape[1]), dim=-1)
    short = top.sum(dim=-1) < top_p  # a flat distribution: its nucleus is longer than the partial sort
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep.scatter_(1, order, top.cumsum(dim=-1) - top <= top_p)
    if bool(short.any()):
        full, forder = torch.sort(probs[short], dim=-1, descending=True)
        keep[short] = torch.zeros_like(full, dtype=torch.bool).scatter_(1, forder, full.cumsum(dim=-1) - full <= top_p)
        return keep, None
    return keep, order
