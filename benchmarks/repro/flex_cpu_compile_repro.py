"""Reproducer: torch 2.13's CPU inductor fails to build compiled FlexAttention for segment masks.

Run: python benchmarks/repro/flex_cpu_compile_repro.py [none|true] [clamp|kseg]
On this project's 2-core CPU machine it prints "FAIL CppCompileError" for several shapes, e.g.
(3, 70, 64) right after (3, 70, 32) compiled fine (C++: 'cur_qSplitSize8' / 'cur_kvSplitSize7' was
not declared). Both mask forms the engine has used fail for some shapes, with dynamic=None and
dynamic=True alike. This is why the engine's default on CPU is the dense SDPA path (the same
mask), and why --attention flex raises a clear error instead of falling back silently.
Inside pytest the failure did not reproduce (inductor cache / process state), so this is a script.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

SHARED, CUE, PAD = 0, -1, -2
SHAPES = [(3, 70, 32), (3, 70, 64), (1, 70, 96), (5, 120, 64), (8, 826, 32), (1, 0, 160), (2, 826, 96)]


def segments(B: int, L: int) -> torch.Tensor:
    seg = torch.full((B, L), PAD)
    for b in range(B):
        n = L - 3 * b - 2
        seg[b, L - n:] = torch.randint(1, 4, (n,)).sort().values
        seg[b, -2:] = CUE
    return seg


def mask_mod_for(form: str, seg: torch.Tensor, P: int):
    kseg = torch.cat([torch.zeros(seg.shape[0], P, dtype=torch.long), seg], 1)

    def clamp(b, h, q, kv):
        r = kv - P
        sq, sk = seg[b, q], seg[b, r.clamp(min=0)]
        sees = (sk == SHARED) | (sk == CUE) | (sq == CUE) | (sq == sk)
        return (r < 0) & (sq != PAD) | ((q >= r) & (sk != PAD) & (sq != PAD) & sees) | ((sq == PAD) & (r == q))

    def two_lookups(b, h, q, kv):
        sq, sk = seg[b, q], kseg[b, kv]
        sees = (sk == SHARED) | (sk == CUE) | (sq == CUE) | (sq == sk)
        return ((q + P >= kv) & (sk != PAD) & (sq != PAD) & sees) | ((sq == PAD) & (kv == q + P))

    return clamp if form == "clamp" else two_lookups


def main() -> None:
    dynamic = {"none": None, "true": True}[sys.argv[1] if len(sys.argv) > 1 else "none"]
    form = sys.argv[2] if len(sys.argv) > 2 else "clamp"
    compiled = torch.compile(flex_attention, dynamic=dynamic)
    for B, P, L in SHAPES:
        seg = segments(B, L)
        bm = create_block_mask(mask_mod_for(form, seg, P), B, None, L, P + L, device="cpu")
        q, k, v = torch.randn(B, 9, L, 64), torch.randn(B, 3, P + L, 64), torch.randn(B, 3, P + L, 64)
        t0 = time.time()
        try:
            out = compiled(q, k, v, block_mask=bm, enable_gqa=True)
            ref = flex_attention(q, k, v, block_mask=bm, enable_gqa=True)
            status = "ok" if (out - ref).abs().max() < 1e-4 else "MISMATCH"
        except Exception as err:  # noqa: BLE001 - the point is to print it
            status = f"FAIL {str(err).splitlines()[0][:80]}"
        print(form, dynamic, (B, P, L), status, f"{time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
