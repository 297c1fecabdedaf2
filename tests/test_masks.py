"""Masks: the dense mask against a hand-written loop of the documented rule, and the BlockMask
against the dense mask numerically (flex_attention vs SDPA), including lengths off the 128 grid."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfensemble.engine.attention import masks
from selfensemble.engine.packing import CUE, PAD, SHARED, PackedBatch, pack_row


def rule(seg: list[int], prefix_len: int, q: int, kv: int) -> bool:
    """The rule of masks.py's docstring, written out literally."""
    if seg[q] == PAD:
        return kv - prefix_len == q  # padding queries see only themselves
    if kv < prefix_len:
        return True
    r = kv - prefix_len
    if not q >= r or seg[r] == PAD:
        return False
    return seg[r] in (SHARED, CUE) or seg[q] == CUE or seg[q] == seg[r]


def loop_mask(batch: PackedBatch) -> torch.Tensor:
    B, L = batch.shape
    P = batch.prefix_len
    out = torch.zeros(B, 1, L, P + L, dtype=torch.bool)
    for b in range(B):
        seg = batch.segment_ids[b].tolist()
        for q in range(L):
            for kv in range(P + L):
                out[b, 0, q, kv] = rule(seg, P, q, kv)
    return out


def small_batch(prefix_len: int = 3) -> PackedBatch:
    # row 0: shared 2, three segments, 2-token cue; row 1 shorter → left padding
    a = pack_row([1, 2], [[3, 4], [5, 6, 7], [8]], [9, 10], start=prefix_len)
    b = pack_row([], [[3], [4, 5]], [6], start=prefix_len)
    return PackedBatch.from_rows([a, b], prefix_len=prefix_len)


@pytest.mark.parametrize("prefix_len", [0, 3])
def test_dense_mask_matches_hand_written_rule(prefix_len):
    batch = small_batch(prefix_len)
    dense = masks.dense_mask(batch)
    assert dense.shape == (2, 1, batch.shape[1], prefix_len + batch.shape[1])
    assert dense.dtype == torch.bool
    assert torch.equal(dense, loop_mask(batch))


def test_dense_mask_spot_checks():
    batch = small_batch(prefix_len=0)
    m = masks.dense_mask(batch)[0, 0]
    seg = batch.segment_ids[0].tolist()  # [0, 0, 1, 1, 2, 2, 2, 3, -1, -1]
    assert seg == [SHARED, SHARED, 1, 1, 2, 2, 2, 3, CUE, CUE]
    assert m[4].tolist() == [True, True, False, False, True, False, False, False, False, False]  # seg 2 start
    assert m[7].tolist() == [True, True, False, False, False, False, False, True, False, False]  # seg 3
    assert m[9].tolist() == [True] * 10  # the cue sees everything before it
    assert m[8].tolist() == [True] * 9 + [False]  # causal inside the cue


def test_padding_rows_see_only_themselves():
    batch = small_batch(prefix_len=3)
    m = masks.dense_mask(batch)[1, 0]
    pads = (batch.segment_ids[1] == PAD).nonzero().flatten().tolist()
    assert pads, "row 1 must be padded"
    for q in pads:
        assert m[q].nonzero().flatten().tolist() == [3 + q]
    # and no real token sees a padding key
    real = (batch.segment_ids[1] != PAD).nonzero().flatten().tolist()
    for q in real:
        assert not m[q, [3 + p for p in pads]].any()
        assert m[q, :3].all()  # but every real token sees the cached prefix


def random_batch(lengths: list[int], prefix_len: int, seed: int) -> PackedBatch:
    """Rows of about the given lengths: shared part, 3 segments, a cue, random token ids."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        cuts = sorted(torch.randperm(n - 4, generator=g)[:3].add(1).tolist())
        shared, cue = cuts[0], 2
        seg_lens = [cuts[1] - cuts[0], cuts[2] - cuts[1], n - cue - cuts[2]]
        toks = iter(range(1, 10 * n))
        rows.append(pack_row([next(toks) for _ in range(shared)],
                             [[next(toks) for _ in range(k)] for k in seg_lens],
                             [next(toks) for _ in range(cue)], start=prefix_len))
    return PackedBatch.from_rows(rows, prefix_len=prefix_len)


def qkv(batch: PackedBatch, seed: int, heads: int = 2, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    B, L = batch.shape
    q = torch.randn(B, heads, L, dim, generator=g)
    k = torch.randn(B, heads, batch.prefix_len + L, dim, generator=g)
    v = torch.randn(B, heads, batch.prefix_len + L, dim, generator=g)
    return q, k, v


CASES = [([37], 0), ([37, 20], 5), ([130, 64], 0), ([130], 7), ([300, 129, 40], 11)]


@pytest.mark.parametrize("lengths, prefix_len", CASES)
def test_block_mask_equals_dense_mask_numerically(lengths, prefix_len, eager_flex):
    from torch.nn.attention.flex_attention import flex_attention

    batch = random_batch(lengths, prefix_len, seed=len(lengths) + prefix_len)
    q, k, v = qkv(batch, seed=1)
    bm = masks.block_mask(batch)
    assert bm.shape[-2:] == (batch.shape[1], prefix_len + batch.shape[1])
    flex = flex_attention(q, k, v, block_mask=bm)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=masks.dense_mask(batch))
    assert torch.isfinite(sdpa).all()
    torch.testing.assert_close(flex, sdpa, atol=2e-5, rtol=1e-4)


def test_block_mask_sparsity_matches_dense_blocks():
    """to_dense() is per 128x128 block: a block is present iff any dense entry in it is True."""
    batch = random_batch([300, 129], prefix_len=11, seed=3)
    dense = masks.dense_mask(batch)[:, 0]
    B, L, K = dense.shape
    blocks = torch.zeros(B, math.ceil(L / 128), math.ceil(K / 128), dtype=torch.bool)
    for i in range(blocks.shape[1]):
        for j in range(blocks.shape[2]):
            blocks[:, i, j] = dense[:, i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].flatten(1).any(1)
    assert blocks.any() and not blocks.all()
    assert torch.equal(masks.block_mask(batch).to_dense()[:, 0].bool(), blocks)


@pytest.mark.parametrize("temperature, scale, rescale", [(1.0, 1.0, True), (0.5, 1.0, False), (0.7, 0.6, True)])
def test_fusion_score_mod_equals_dense_twin(temperature, scale, rescale, eager_flex):
    """flex_attention + fusion_score_mod == the SDPA path's dense (multiplier, bias) twin, rows of different N."""
    from torch.nn.attention.flex_attention import flex_attention

    from selfensemble.engine.attention.dispatch import dense_scores_attention

    batch = random_batch([130, 60], prefix_len=4, seed=5)
    q, k, v = qkv(batch, seed=2)
    knobs = masks.AttentionFusion(temperature, scale, rescale)
    mult, bias = knobs.row_terms(torch.tensor([3, 2]))
    flex = flex_attention(q, k, v, block_mask=masks.block_mask(batch),
                          score_mod=masks.fusion_score_mod(batch.segment_ids, batch.prefix_len, mult, bias))
    dmult, dbias = masks.dense_fusion_terms(batch, mult, bias)
    float_mask = torch.where(masks.dense_mask(batch), dbias, torch.tensor(-math.inf))
    dense = dense_scores_attention(q, k, v, float_mask, None, mult=dmult)
    assert (flex - dense).abs().max() <= 1e-4
    plain = F.scaled_dot_product_attention(q, k, v, attn_mask=masks.dense_mask(batch))
    assert (flex - plain).abs().max() > 1e-2  # the knobs really change the output
    # the terms sit exactly on (cue query, paraphrase key) pairs, with each row's own N
    seg, P = batch.segment_ids, batch.prefix_len
    hit = (seg[:, :, None] == CUE) & (seg[:, None, :] > 0)
    for b, n in enumerate([3, 2]):
        want_bias = math.log(scale) - (math.log(n) if rescale else 0.0)
        assert torch.allclose(dbias[b, 0, :, P:][hit[b]], torch.tensor(want_bias))
        assert torch.allclose(dmult[b, 0, :, P:][hit[b]], torch.tensor(1 / temperature))
        assert (dbias[b, 0, :, P:][~hit[b]] == 0).all() and (dmult[b, 0, :, P:][~hit[b]] == 1).all()
    assert (dbias[:, :, :, :P] == 0).all()  # shared prefix keys keep their score


def test_attention_fusion_row_terms_and_validation():
    mult, bias = masks.AttentionFusion(0.5, 1.0, True).row_terms(torch.tensor([1, 4]))
    assert mult.tolist() == [1.0, 2.0]  # one-prompt rows are untouched
    assert bias.tolist() == pytest.approx([0.0, -math.log(4)])
    assert not masks.AttentionFusion().active and masks.AttentionFusion(scale=2.0).active
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            masks.AttentionFusion(temperature=bad)
    with pytest.raises(ValueError, match="scale"):
        masks.AttentionFusion(scale=0.0)


def test_decode_visibility_and_terms():
    batch = small_batch(prefix_len=3)
    vis = masks.decode_visibility(batch)
    L = batch.shape[1]
    assert vis.shape == (2, 3 + L)
    assert vis[0].all()
    assert vis[1].tolist() == [True] * 3 + (batch.segment_ids[1] != PAD).tolist()
    scale, bias = masks.decode_terms(batch)
    assert torch.equal(torch.isinf(bias), ~vis) and (bias[vis] == 0).all() and (scale == 1).all()
    mult, row_bias = masks.AttentionFusion(0.5, 1.0, True).row_terms(torch.tensor([3, 2]))
    scale, bias = masks.decode_terms(batch, mult, row_bias)
    para = torch.cat([torch.zeros(2, 3, dtype=torch.bool), batch.segment_ids > 0], 1)
    assert torch.allclose(bias[0][para[0]], torch.tensor(-math.log(3)))
    assert torch.allclose(bias[1][para[1]], torch.tensor(-math.log(2)))  # each row its own N
    assert (scale[para] == 2).all() and (scale[~para] == 1).all()
    assert (bias[vis & ~para] == 0).all()
