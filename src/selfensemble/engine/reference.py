"""The slow reference path: no KV cache, no padding, no batching, a mask written out by hand.

Every step recomputes each row from scratch. Tests check the fast engine against it, and the
benchmark times it as the naive baseline. Kept deliberately simple and independent of masks.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from selfensemble.engine.attention.dispatch import WindowMasks
from selfensemble.engine.attention.masks import AttentionFusion
from selfensemble.engine.packing import CUE, Row
from selfensemble.engine.sampling import select_token
from selfensemble.methods.fusion import FusionFn


def _dense_row_mask(segments: list[int]) -> torch.Tensor:
    """(1, 1, T, T) boolean mask of one unpadded row; generated tokens count as CUE."""
    seg = torch.tensor(segments)
    T = len(segments)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    sq, sk = seg[:, None], seg[None, :]
    sees = (sk <= 0) | (sq == CUE) | (sq == sk)
    return (causal & sees)[None, None]


def _fusion_terms(segments: list[int], fusion: AttentionFusion | None):
    """(multiplier, bias), each (1, 1, T, T), of attention fusion on one row, or None when it is off.

    Written from the rule, not from masks.py: cue/generated queries (CUE) score keys of paraphrase
    segments (> 0) as score / T + log S - rescale * log N, N = the row's paraphrase segments; a row
    with one segment is left alone.
    """
    n = len({s for s in segments if s > 0})
    if fusion is None or not fusion.active or n < 2:
        return None
    seg = torch.tensor(segments)
    hit = (seg[:, None] == CUE) & (seg[None, :] > 0)
    bias = math.log(fusion.scale) - (math.log(n) if fusion.rescale else 0.0)
    mult = torch.where(hit, torch.tensor(1.0 / fusion.temperature), torch.tensor(1.0))
    return mult[None, None], torch.where(hit, torch.tensor(bias), torch.tensor(0.0))[None, None]


@torch.inference_mode()
def row_logits(model, row: Row, fusion: AttentionFusion | None = None) -> torch.Tensor:
    """Last-position logits (vocab,) of one row, computed from scratch."""
    ids = torch.tensor([row.tokens], device=model.device)
    pos = torch.tensor([row.positions], device=model.device)
    mask = _dense_row_mask(row.segments).to(model.device)
    # sliding-window layers: keys less than w positions back (transformers: kv_idx > q_idx - w)
    distance = pos[0][:, None] - pos[0][None, :]
    terms = _fusion_terms(row.segments, fusion)
    extra = {}
    if terms is None:
        windows = WindowMasks(lambda w: mask & (distance < w)[None, None])
    else:
        mult, bias = (t.to(model.device) for t in terms)
        inf = torch.tensor(float("-inf"), device=model.device)

        def floating(m: torch.Tensor) -> torch.Tensor:
            return torch.where(m, bias, inf).to(model.dtype)

        allowed = mask
        windows = WindowMasks(lambda w: floating(allowed & (distance < w)[None, None]))
        mask = floating(allowed)
        if fusion.temperature != 1.0:
            extra["selfensemble_score_scale"] = mult.to(model.dtype)
    return model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False,
                 selfensemble_windows=windows, **extra).logits[0, -1]


@torch.inference_mode()
def reference_generate(model, rows: Sequence[Row], fuse: FusionFn, max_new_tokens: int, eos_ids: set[int],
                       weights: torch.Tensor | None = None, fusion: AttentionFusion | None = None,
                       sample: dict | None = None) -> list[int]:
    """Greedy tokens of one group of rows (fused each step), recomputing every row at every step.

    ``fusion``: attention-fusion knobs of packed flex rows (rows with one paraphrase ignore them).
    ``sample``: draw instead of argmax, with sampling.select_token's keywords (temperature, top_p,
    top_k, seed): step t draws from stream ``seed`` at step t, as the engine's group does.
    """
    rows = [Row(list(r.tokens), list(r.segments), list(r.positions)) for r in rows]
    out: list[int] = []
    for step in range(max_new_tokens):
        logits = torch.stack([row_logits(model, r, fusion) for r in rows])
        fused = fuse(logits, weights)
        token = select_token(fused, True, step=step, **sample) if sample else int(torch.argmax(fused))
        if token in eos_ids:
            break
        out.append(token)
        for r in rows:
            r.positions.append(r.next_position)
            r.tokens.append(token)
            r.segments.append(CUE)
    return out


@torch.inference_mode()
def hf_greedy(model, ids: list[int], max_new_tokens: int, eos_ids: set[int]) -> list[int]:
    """transformers' own greedy ``model.generate`` under its eager attention: the independent
    reference for one unpacked prompt. New tokens up to (not including) the first EOS."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        out = model.generate(torch.tensor([ids], device=model.device),
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(eos_ids),
                             pad_token_id=sorted(eos_ids)[0])[0, len(ids):].tolist()
    finally:
        model.set_attn_implementation(before)
    return out[:next((i for i, t in enumerate(out) if t in eos_ids), len(out))]
