"""Attention masks for packed rows, as small mask_mod closures (FlexAttention style).

One rule serves every method. Query q runs over the row's L tokens; key kv over the P cached
prefix slots followed by the row (query q sits at key position q + P). With sq = the query's
segment and sk = the key's segment (key_segments: prefix slots, then the row's own ids):

  visible iff  causal (q + P >= kv), neither is padding, and
               (sk is SHARED or CUE, or sq is CUE, or sq == sk)
  padding queries see only themselves (a fully masked row would give NaN in SDPA)

Prefix slots are SHARED, or k for per-paraphrase copies of the prefix (the "full" layout with its
prefix encoded once). The same closure builds a FlexAttention ``BlockMask`` or, evaluated on a
broadcast grid, a dense boolean mask for SDPA, so both paths are the same mask by construction.
"""

from __future__ import annotations

import math

import torch

from selfensemble.packing import CUE, PAD, SHARED, PackedBatch


def key_segments(segment_ids: torch.Tensor, prefix_len: int, prefix_segments: torch.Tensor | None = None):
    """(B, P + L) segment id of every key: the cached prefix slots, then the row's own tokens.

    Prefix slots are SHARED, or k for a per-paraphrase copy of the prefix (the "full" layout with
    its prefix encoded once), which only paraphrase k and fusion tokens see.
    """
    B = segment_ids.shape[0]
    if prefix_segments is None:
        prefix_segments = torch.full((prefix_len,), SHARED, dtype=torch.long, device=segment_ids.device)
    return torch.cat([prefix_segments[None, :].expand(B, -1), segment_ids], dim=1)


def packed_mask_mod(segment_ids: torch.Tensor, prefix_len: int, prefix_segments: torch.Tensor | None = None):
    """mask_mod(b, h, q, kv) for a left-padded batch with ``prefix_len`` cached tokens before it.

    Kept to two table lookups and comparisons: richer index arithmetic (clamps, where) inside a
    mask_mod broke torch 2.13's compiled CPU flex kernel (C++ codegen error, cur_kvSplitSize).
    """
    qseg, kseg, P = segment_ids, key_segments(segment_ids, prefix_len, prefix_segments), prefix_len

    def packed_segments(b, h, q, kv):
        sq, sk = qseg[b, q], kseg[b, kv]
        sees = (sk == SHARED) | (sk == CUE) | (sq == CUE) | (sq == sk)
        return ((q + P >= kv) & (sk != PAD) & (sq != PAD) & sees) | ((sq == PAD) & (kv == q + P))

    return packed_segments


def rescale_score_mod(segment_ids: torch.Tensor, prefix_len: int, n_prompts: int,
                      prefix_segments: torch.Tensor | None = None):
    """Structured-prompting style rescale: fusion queries (cue) down-weight paraphrase keys by 1/N."""
    qseg, kseg = segment_ids, key_segments(segment_ids, prefix_len, prefix_segments)
    bias = -math.log(max(n_prompts, 1))

    def rescale_paraphrases(score, b, h, q, kv):
        return torch.where((qseg[b, q] == CUE) & (kseg[b, kv] > 0), score + bias, score)

    return rescale_paraphrases


def dense_mask(batch: PackedBatch) -> torch.Tensor:
    """(B, 1, L, P + L) boolean mask, the dense twin of ``block_mask``."""
    B, L = batch.shape
    dev = batch.segment_ids.device
    b = torch.arange(B, device=dev)[:, None, None]
    q = torch.arange(L, device=dev)[None, :, None]
    kv = torch.arange(batch.prefix_len + L, device=dev)[None, None, :]
    return packed_mask_mod(batch.segment_ids, batch.prefix_len, batch.prefix_segments)(b, None, q, kv)[:, None]


def dense_rescale_bias(batch: PackedBatch, n_prompts: int) -> torch.Tensor:
    """(B, 1, L, P + L) additive bias matching ``rescale_score_mod``."""
    B, L = batch.shape
    dev = batch.segment_ids.device
    b = torch.arange(B, device=dev)[:, None, None]
    q = torch.arange(L, device=dev)[None, :, None]
    kv = torch.arange(batch.prefix_len + L, device=dev)[None, None, :]
    zero = torch.zeros((), device=dev)
    return rescale_score_mod(batch.segment_ids, batch.prefix_len, n_prompts, batch.prefix_segments)(zero, b, None, q, kv)[:, None]


def block_mask(batch: PackedBatch):
    """FlexAttention BlockMask for the batch (Q_LEN = L, KV_LEN = P + L)."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, L = batch.shape
    return create_block_mask(packed_mask_mod(batch.segment_ids, batch.prefix_len, batch.prefix_segments), B, None, L,
                             batch.prefix_len + L, device=batch.segment_ids.device)


def decode_visibility(batch: PackedBatch) -> torch.Tensor:
    """(B, P + L) keys a generated token may see: the prefix and every non-padding row token."""
    prefix = torch.ones(batch.shape[0], batch.prefix_len, dtype=torch.bool, device=batch.segment_ids.device)
    return torch.cat([prefix, batch.segment_ids != PAD], dim=1)


def decode_bias(batch: PackedBatch, n_prompts: int, rescale: bool) -> torch.Tensor:
    """(B, P + L) additive bias for generated tokens: -inf on padding, -log N on paraphrases if rescaling."""
    visible = decode_visibility(batch)
    bias = torch.zeros(visible.shape, dtype=torch.float32, device=visible.device)
    if rescale:
        para = key_segments(batch.segment_ids, batch.prefix_len, batch.prefix_segments) > 0
        bias = bias.masked_fill(para, -math.log(max(n_prompts, 1)))
    return bias.masked_fill(~visible, -math.inf)
