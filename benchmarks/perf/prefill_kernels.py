"""Prefill of packed rows under compiled FlexAttention (BlockMask) vs SDPA with the same mask made dense.

    python benchmarks/perf/prefill_kernels.py --device cuda --tokens 2048 [--model random:llama-3.2-1b --dtype bf16]
    python benchmarks/perf/prefill_kernels.py --tokens 256 --batch-sizes 1 --repeats 2   # a CPU dry run

Each row packs a shared prefix, N paraphrase segments and an answer cue into ``--tokens`` tokens
(random ids: the content does not change the cost), as flex's layout does. For each batch size the
prefill (decoding.prefill, the engine's masks) runs under "flex" and "sdpa"; after one warm-up call
(flex compiles there), the median of ``--repeats`` timed calls is reported, with the largest
difference between the two paths' last-position logits. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from selfensemble.engine.attention import dispatch as attn
from selfensemble.engine.cache import new_cache
from selfensemble.engine.decoding import prefill
from selfensemble.engine.models import load_model
from selfensemble.engine.packing import PackedBatch, pack_row


def packed_batch(vocab: int, tokens: int, n: int, batch: int, device) -> PackedBatch:
    """``batch`` rows of ``tokens`` tokens each: a prefix of a fifth, N segments, a 4-token cue."""
    gen = torch.Generator().manual_seed(0)
    prefix, cue = tokens // 5, 4
    seg = (tokens - prefix - cue) // n

    def ids(k: int) -> list[int]:
        return torch.randint(10, vocab, (k,), generator=gen).tolist()

    rows = [pack_row(ids(prefix), [ids(seg) for _ in range(n)], ids(cue), 0, "restart") for _ in range(batch)]
    return PackedBatch.from_rows(rows, 0, 0, 128, device)


def time_prefill(model, batch: PackedBatch, attention: str, repeats: int, cuda: bool) -> tuple[float, torch.Tensor]:
    layers = model.config.get_text_config().num_hidden_layers
    times, logits = [], None
    for i in range(repeats + 1):  # the first call warms up (and compiles flex)
        cache = new_cache(layers, batch.shape[1])
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            logits = prefill(model, batch, cache, attention)
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:llama-3.2-1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per packed row")
    parser.add_argument("--n", type=int, default=5, help="paraphrase segments per row")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-probe", action="store_true",
                        help="time flex even where the availability probe refuses it (its logits diff then says how wrong)")
    args = parser.parse_args()
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    cuda = lm.device.type == "cuda"
    cfg = lm.model.config.get_text_config()
    ok, why = attn.flex_available(lm.device, (16, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads))
    ok = ok or args.skip_probe
    out = {"model": args.model, "device": str(lm.device), "dtype": str(lm.dtype), "torch": torch.__version__,
           "device_name": torch.cuda.get_device_name(lm.device) if cuda else "cpu", "tokens_per_row": args.tokens,
           "n": args.n, "load_average": list(os.getloadavg()), "flex_probe": why, "rows": []}
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        batch = packed_batch(lm.model.config.get_text_config().vocab_size, args.tokens, args.n, bs, lm.device)
        dense_s, dense = time_prefill(lm.model, batch, "sdpa", args.repeats, cuda)
        row = {"batch_size": bs, "padded_length": batch.shape[1], "sdpa_dense_s": dense_s}
        if ok:
            flex_s, flex = time_prefill(lm.model, batch, "flex", args.repeats, cuda)
            row.update(flex_compiled_s=flex_s, flex_over_sdpa=flex_s / dense_s,
                       max_abs_logit_diff=float((flex.float() - dense.float()).abs().max()))
        out["rows"].append(row)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
