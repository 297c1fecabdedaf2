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

Sliding-window layers (Mistral, Gemma 2/3, Qwen2/3 with ``layer_types``) add one term:

  AND  pos(q) - pos(kv) < window        (pos = position id; transformers: kv_idx > q_idx - window)

The window is measured in *position* distance, not key-index distance. For an unpacked row
(origin, per_prompt, logit fusion) the two are the same numbers as ``model.generate`` uses (index =
position once padding and the cached prefix are laid out honestly). For a packed flex row with
restarted positions, position distance is what keeps isolation: paraphrase k sees exactly the keys
it would see run alone (the prefix + itself, within the window), whereas index distance would let
the other paraphrases packed before it push the shared prefix out of its window. The cue and the
generated tokens see the last ``window`` positions of every paraphrase.
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


def prefix_positions(prefix_len: int, prefix_segments: torch.Tensor | None, device) -> torch.Tensor:
    """(P,) position of every cached prefix slot: 0..P-1, or 0..p-1 per copy (segments [1,1,2,2] → [0,1,0,1])."""
    idx = torch.arange(prefix_len, device=device)
    if prefix_segments is None or prefix_len == 0:
        return idx
    starts = torch.ones(prefix_len, dtype=torch.bool, device=device)
    starts[1:] = prefix_segments[1:] != prefix_segments[:-1]
    first = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), dim=0).values
    return idx - first


def key_positions(batch: PackedBatch) -> torch.Tensor:
    """(B, P + L) position id of every key: the cached prefix slots, then the row's own positions."""
    pre = prefix_positions(batch.prefix_len, batch.prefix_segments, batch.position_ids.device)
    return torch.cat([pre[None, :].expand(batch.shape[0], -1), batch.position_ids], dim=1)


def packed_mask_mod(segment_ids: torch.Tensor, prefix_len: int, prefix_segments: torch.Tensor | None = None,
                    window: int | None = None, position_ids: torch.Tensor | None = None):
    """mask_mod(b, h, q, kv) for a left-padded batch with ``prefix_len`` cached tokens before it.

    ``window`` (with the batch's ``position_ids``) adds the sliding-window term on positions.
    Kept to table lookups and comparisons: richer index arithmetic (clamps, where) inside a
    mask_mod broke torch 2.13's compiled CPU flex kernel (C++ codegen error, cur_kvSplitSize).
    """
    qseg, kseg, P = segment_ids, key_segments(segment_ids, prefix_len, prefix_segments), prefix_len

    def packed_segments(b, h, q, kv):
        sq, sk = qseg[b, q], kseg[b, kv]
        sees = (sk == SHARED) | (sk == CUE) | (sq == CUE) | (sq == sk)
        return ((q + P >= kv) & (sk != PAD) & (sq != PAD) & sees) | ((sq == PAD) & (kv == q + P))

    if window is None:
        return packed_segments
    if position_ids is None:
        raise ValueError("a sliding window needs the batch's position_ids")
    qpos = position_ids
    kpos = torch.cat([prefix_positions(P, prefix_segments, qpos.device)[None, :].expand(qpos.shape[0], -1), qpos], 1)
    lowest = qpos - (window - 1)  # (B, L) first position in q's window: a lookup, no arithmetic in the mask_mod

    def packed_segments_in_window(b, h, q, kv):
        inside = kpos[b, kv] >= lowest[b, q]  # pos(q) - pos(kv) < window
        return (packed_segments(b, h, q, kv) & inside) | ((qseg[b, q] == PAD) & (kv == q + P))

    packed_segments_in_window.__name__ = f"packed_segments_window{window}"
    return packed_segments_in_window


def rescale_score_mod(segment_ids: torch.Tensor, prefix_len: int, n_prompts: int,
                      prefix_segments: torch.Tensor | None = None):
    """Structured-prompting style rescale: fusion queries (cue) down-weight paraphrase keys by 1/N."""
    qseg, kseg = segment_ids, key_segments(segment_ids, prefix_len, prefix_segments)
    bias = -math.log(max(n_prompts, 1))

    def rescale_paraphrases(score, b, h, q, kv):
        return torch.where((qseg[b, q] == CUE) & (kseg[b, kv] > 0), score + bias, score)

    return rescale_paraphrases


def _mask_mod(batch: PackedBatch, window: int | None):
    return packed_mask_mod(batch.segment_ids, batch.prefix_len, batch.prefix_segments, window, batch.position_ids)


def dense_mask(batch: PackedBatch, window: int | None = None) -> torch.Tensor:
    """(B, 1, L, P + L) boolean mask, the dense twin of ``block_mask``; ``window``: sliding-window layers."""
    B, L = batch.shape
    dev = batch.segment_ids.device
    b = torch.arange(B, device=dev)[:, None, None]
    q = torch.arange(L, device=dev)[None, :, None]
    kv = torch.arange(batch.prefix_len + L, device=dev)[None, None, :]
    return _mask_mod(batch, window)(b, None, q, kv)[:, None]


def dense_rescale_bias(batch: PackedBatch, n_prompts: int) -> torch.Tensor:
    """(B, 1, L, P + L) additive bias matching ``rescale_score_mod``."""
    B, L = batch.shape
    dev = batch.segment_ids.device
    b = torch.arange(B, device=dev)[:, None, None]
    q = torch.arange(L, device=dev)[None, :, None]
    kv = torch.arange(batch.prefix_len + L, device=dev)[None, None, :]
    zero = torch.zeros((), device=dev)
    return rescale_score_mod(batch.segment_ids, batch.prefix_len, n_prompts, batch.prefix_segments)(zero, b, None, q, kv)[:, None]


def block_mask(batch: PackedBatch, window: int | None = None):
    """FlexAttention BlockMask for the batch (Q_LEN = L, KV_LEN = P + L); ``window``: sliding-window layers."""
    from torch.nn.attention.flex_attention import create_block_mask

    B, L = batch.shape
    return create_block_mask(_mask_mod(batch, window), B, None, L, batch.prefix_len + L,
                             device=batch.segment_ids.device)


def decode_visibility(batch: PackedBatch) -> torch.Tensor:
    """(B, P + L) keys a generated token may see: the prefix and every non-padding row token."""
    prefix = torch.ones(batch.shape[0], batch.prefix_len, dtype=torch.bool, device=batch.segment_ids.device)
    return torch.cat([prefix, batch.segment_ids != PAD], dim=1)


def decode_window(bias: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor, window: int) -> torch.Tensor:
    """Decode-step bias (B, K) of a sliding-window layer: -inf on keys ``window`` or more positions back.

    query_pos (B,) is the generated token's position, key_pos (B, K) the position of every cached key.
    """
    return bias.masked_fill(query_pos[:, None] - key_pos >= window, -math.inf)


def decode_bias(batch: PackedBatch, n_prompts: int, rescale: bool) -> torch.Tensor:
    """(B, P + L) additive bias for generated tokens: -inf on padding, -log N on paraphrases if rescaling."""
    visible = decode_visibility(batch)
    bias = torch.zeros(visible.shape, dtype=torch.float32, device=visible.device)
    if rescale:
        para = key_segments(batch.segment_ids, batch.prefix_len, batch.prefix_segments) > 0
        bias = bias.masked_fill(para, -math.log(max(n_prompts, 1)))
    return bias.masked_fill(~visible, -math.inf)
