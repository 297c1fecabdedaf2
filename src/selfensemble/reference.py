"""The slow reference path: no KV cache, no padding, no batching, a mask written out by hand.

Every step recomputes each row from scratch. Tests check the fast engine against it, and the
benchmark times it as the naive baseline. Kept deliberately simple and independent of masks.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from selfensemble.attention import WindowMasks
from selfensemble.fusion import FusionFn
from selfensemble.packing import CUE, Row


def _dense_row_mask(segments: list[int]) -> torch.Tensor:
    """(1, 1, T, T) boolean mask of one unpadded row; generated tokens count as CUE."""
    seg = torch.tensor(segments)
    T = len(segments)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    sq, sk = seg[:, None], seg[None, :]
    sees = (sk <= 0) | (sq == CUE) | (sq == sk)
    return (causal & sees)[None, None]


@torch.inference_mode()
def row_logits(model, row: Row) -> torch.Tensor:
    """Last-position logits (vocab,) of one row, computed from scratch."""
    ids = torch.tensor([row.tokens], device=model.device)
    pos = torch.tensor([row.positions], device=model.device)
    mask = _dense_row_mask(row.segments).to(model.device)
    # sliding-window layers: keys less than w positions back (transformers: kv_idx > q_idx - w)
    distance = pos[0][:, None] - pos[0][None, :]
    windows = WindowMasks(lambda w: mask & (distance < w)[None, None])
    return model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False,
                 selfensemble_windows=windows).logits[0, -1]


@torch.inference_mode()
def reference_generate(model, rows: Sequence[Row], fuse: FusionFn, max_new_tokens: int, eos_ids: set[int],
                       weights: torch.Tensor | None = None) -> list[int]:
    """Greedy tokens of one group of rows (fused each step), recomputing every row at every step."""
    rows = [Row(list(r.tokens), list(r.segments), list(r.positions)) for r in rows]
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = torch.stack([row_logits(model, r) for r in rows])
        token = int(torch.argmax(fuse(logits, weights)))
        if token in eos_ids:
            break
        out.append(token)
        for r in rows:
            r.positions.append(r.next_position)
            r.tokens.append(token)
            r.segments.append(CUE)
    return out
