"""Reproducer: torch 2.13's CPU inductor fails to rebuild compiled flex for a sliding-window mask.

Run: python benchmarks/repro/flex_cpu_window_repro.py [dynamic|static] [WINDOW (0 = none)]
Measured on this project's CPU machine (torch 2.13): with ``dynamic`` (torch.compile's default) the
first length compiles, the second (a cached prefix, another length) fails with CppCompileError
('cur_kvSplitSize9' was not declared); without a window all three compile; with ``static``
(dynamic=False) all three compile with the window. attention.py therefore runs sliding-window
layers on CPU through a static-shape compile of flex.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch.nn.attention.flex_attention import flex_attention

from selfensemble.engine.attention import masks
from selfensemble.engine.packing import PackedBatch, pack_row


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    mode = sys.argv[1] if len(sys.argv) > 1 else "dynamic"
    window = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    f = torch.compile(flex_attention, dynamic=False if mode == "static" else None)
    for prefix, shared in [(0, 40), (40, 0), (40, 30)]:
        rows = [pack_row(list(range(shared)), [list(range(50, 70)), list(range(80, 95))], [5, 6], start=prefix)]
        batch = PackedBatch.from_rows(rows, prefix_len=prefix, multiple_of=32)
        B, L = batch.shape
        bm = masks.block_mask(batch, window or None)
        q = torch.randn(B, 4, L, 16)
        k, v = (torch.randn(B, 2, prefix + L, 16) for _ in range(2))
        try:
            f(q, k, v, block_mask=bm, enable_gqa=True)
            print(mode, window, prefix, L, "OK", flush=True)
        except Exception as err:  # noqa: BLE001 - the point is to print it
            print(mode, window, prefix, L, "FAIL", type(err).__name__, str(err).splitlines()[0][:80], flush=True)


if __name__ == "__main__":
    main()
