"""Reproducer: torch 2.13's compiled CPU FlexAttention returns wrong values for some sequence lengths.

Run: python benchmarks/repro/flex_cpu_length_repro.py [--lengths 8,16,24,...] [--head-dim 16] [--dynamic none|true|false]

Prints, for each length, the max |compiled flex - SDPA| under a causal mask (1 batch, 2 heads,
random q, k, v). Seen on an AVX2-only AMD EPYC (2 cores): lengths 24 or 40 differed by ~2.0 while
the others agreed to 1e-6, and which length failed changed from one process to the next — run it a
few times. This is why engine/attention/dispatch.py's flex_available probes several lengths and
head dims before the engine uses compiled flex on a machine, instead of one shape.
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="8,16,24,32,40,48,56,64,77,96,128,130,160")
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--dynamic", choices=("none", "true", "false"), default="none",
                        help="torch.compile's dynamic= (the engine compiles flex with None)")
    args = parser.parse_args()
    dynamic = {"none": None, "true": True, "false": False}[args.dynamic]
    compiled = torch.compile(flex_attention, dynamic=dynamic)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, dynamic={dynamic}, head dim {args.head_dim}")
    worst = 0.0
    for length in (int(x) for x in args.lengths.split(",")):
        q, k, v = (torch.randn(1, 2, length, args.head_dim) for _ in range(3))
        mask = create_block_mask(lambda b, h, qi, kv: qi >= kv, 1, None, length, length, device="cpu")
        try:
            out = compiled(q, k, v, block_mask=mask)
        except Exception as err:  # noqa: BLE001 - a compile failure is a result here
            print(f"length {length:4d}: FAIL {type(err).__name__}: {str(err).splitlines()[0][:100]}")
            continue
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        err = float((out - ref).abs().max())
        worst = max(worst, err)
        print(f"length {length:4d}: max abs error {err:.3g}{'   <-- WRONG' if err > 1e-4 else ''}")
    print(f"worst {worst:.3g}: {'compiled flex is wrong here' if worst > 1e-4 else 'all lengths agree'}")


if __name__ == "__main__":
    main()
