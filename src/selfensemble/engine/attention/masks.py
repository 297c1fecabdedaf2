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

Attention-fusion knobs (``AttentionFusion``: log-N rescale, APE-style temperature and scale) are a
score_mod on the same grid, with a dense (multiplier, bias) twin for SDPA and for decode steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from selfensemble.engine.packing import CUE, PAD, SHARED, PackedBatch


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


@dataclass(frozen=True)
class AttentionFusion:
    """APE-style knobs for attention fusion (Yang et al., ICLR 2025, arXiv 2502.05431).

    On a row that packs N >= 2 paraphrases, every *fusion query* (the shared cue in prefill, every
    generated token in decode) scores a *paraphrase key* (segment k >= 1, per-paraphrase prefix
    copies included) as

        score' = score / T + log S - rescale * log N         (score = q.k / sqrt(d))

    so the paraphrases' softmax logits get temperature T (T < 1 sharpens them, APE's "lower
    temperature on the parallel contexts") and their total attention mass is multiplied by S (APE's
    scaling factor) and, with ``rescale``, by 1/N (structured prompting's log-N rescale = the
    setting T = 1, S = 1, rescale on; equivalently S = 1/N). Shared prefix keys, the cue and
    generated keys keep their score. Every other query/key pair, every row with N = 1 (nothing is
    fused: one-prompt flex is exactly ``origin``) and every non-flex method is left untouched.
    N is the row's own prompt count, never a batch statistic.
    """

    temperature: float = 1.0
    scale: float = 1.0
    rescale: bool = False

    def __post_init__(self):
        for name in ("temperature", "scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"fusion {name} must be a finite number > 0, got {value}")

    @property
    def active(self) -> bool:
        return self.temperature != 1.0 or self.scale != 1.0 or self.rescale

    def row_terms(self, n_prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row (multiplier, bias), each (B,) float32, from the rows' prompt counts (B,).

        Example: T = 0.5, S = 1, rescale, n = [1, 4] → mult [1, 2], bias [0, -log 4].
        """
        n = n_prompts.to(torch.float32)
        fused = n > 1
        mult = torch.where(fused, torch.full_like(n, 1.0 / self.temperature), torch.ones_like(n))
        bias = math.log(self.scale) - (torch.log(n.clamp(min=1)) if self.rescale else torch.zeros_like(n))
        return mult, torch.where(fused, bias, torch.zeros_like(n))



def attention_fusion(config) -> AttentionFusion:
    """An EngineConfig's flex-only fusion knobs (temperature, scale, rescale) as one object."""
    return AttentionFusion(config.fusion_temperature, config.fusion_scale, config.rescale)


def fusion_score_mod(segment_ids: torch.Tensor, prefix_len: int, mult: torch.Tensor, bias: torch.Tensor,
                     prefix_segments: torch.Tensor | None = None):
    """score_mod(score, b, h, q, kv) applying ``AttentionFusion`` to cue queries × paraphrase keys.

    ``mult``/``bias`` (B,) come from ``AttentionFusion.row_terms``; rows with (1, 0) are unchanged.
    """
    qseg, kseg = segment_ids, key_segments(segment_ids, prefix_len, prefix_segments)

    def fuse_paraphrase_scores(score, b, h, q, kv):
        hit = (qseg[b, q] == CUE) & (kseg[b, kv] > 0)
        return torch.where(hit, score * mult[b] + bias[b], score)

    return fuse_paraphrase_scores


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


def dense_fusion_terms(batch: PackedBatch, mult: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(multiplier, bias), each (B, 1, L, P + L): the dense twin of ``fusion_score_mod``.

    The score_mod is affine in the score (s → s·m + c), so evaluating it at 0 and 1 gives c and m.
    """
    B, L = batch.shape
    dev = batch.segment_ids.device
    b = torch.arange(B, device=dev)[:, None, None]
    q = torch.arange(L, device=dev)[None, :, None]
    kv = torch.arange(batch.prefix_len + L, device=dev)[None, None, :]
    mod = fusion_score_mod(batch.segment_ids, batch.prefix_len, mult.to(dev), bias.to(dev), batch.prefix_segments)
    at0 = mod(torch.zeros((), device=dev), b, None, q, kv)
    return (mod(torch.ones((), device=dev), b, None, q, kv) - at0)[:, None], at0[:, None]


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


def decode_terms(batch: PackedBatch, mult: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(multiplier, bias), each (B, P + L), for generated tokens (all fusion queries).

    Bias is -inf on padding; paraphrase keys get the row's ``AttentionFusion`` terms when given.
    """
    visible = decode_visibility(batch)
    scale = torch.ones(visible.shape, dtype=torch.float32, device=visible.device)
    add = torch.zeros(visible.shape, dtype=torch.float32, device=visible.device)
    if mult is not None and bias is not None:
        para = key_segments(batch.segment_ids, batch.prefix_len, batch.prefix_segments) > 0
        scale = torch.where(para, mult.to(scale.device)[:, None], scale)
        add = torch.where(para, bias.to(add.device)[:, None], add)
    return scale, add.masked_fill(~visible, -math.inf)
