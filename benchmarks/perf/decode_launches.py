"""Kernel launches per decode step, counted with torch.profiler, in whichever tree PYTHONPATH points at.

    PYTHONPATH=src python benchmarks/perf/decode_launches.py [--device cpu] [--model random:llama] > launches.json

For origin, avg and flex (N=5) at batch 1 and 8 (8 questions), answers 2 and 10 tokens long
(no newline stop); the operations of the 8 extra decode steps ÷ 8 are one step's. Counted: every
``aten::`` operation the profiler records (``all``) and the leaves among them (``leaf``: operations
that call no other aten operation — on CPU each is one kernel; on CUDA ``cuda_kernels`` counts the
kernels themselves). It uses only public engine names, so it runs on older trees too: that is how
the count before the static decode step was taken. A batch's count must not grow with its questions.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch.profiler import ProfilerActivity, profile

from selfensemble.config.engine import EngineConfig

try:
    from selfensemble.config.generation import GenerationConfig
except ImportError:  # trees before GenerationConfig moved to config/
    from selfensemble.engine.decoding import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.models import load_model
from selfensemble.engine.prompts import default_format
from selfensemble.engine.queries import Query

METHODS = ("origin", "avg", "flex")
SHORT, LONG = 2, 10


def prompts(count: int) -> list[list[str]]:
    return [[f"What is the capital of country number {i}?", f"Which city is the capital of country {i}?",
             f"Name the capital of country {i}.", f"Country {i}: its capital is?", f"Capital of {i}?"]
            for i in range(count)]


def count(engine: Engine, queries: list[Query], method: str, new_tokens: int, cuda: bool) -> dict:
    """aten operations (all, leaves) and CUDA kernels of answering ``queries`` with ``new_tokens`` tokens."""
    gen = GenerationConfig(max_new_tokens=new_tokens, stop_at_newline=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        answers = engine.answer_many(queries, method, gen)
        if cuda:
            torch.cuda.synchronize()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    leaves = [e for e in events if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    kernels = sum(1 for e in prof.events() if getattr(e, "device_type", None) is not None
                  and str(e.device_type).endswith("CUDA")) if cuda else None
    return {"all": len(events), "leaf": len(leaves), "cuda_kernels": kernels,
            "full_length": all(len(a.tokens) == new_tokens for a in answers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="random:llama")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="count the compiled decode step (trees that have it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = load_model(args.model, device=args.device)
    cuda = lm.device.type == "cuda"
    extra = {"compile": True} if args.compile else {}
    out: dict = {"model": args.model, "device": str(lm.device), "torch": torch.__version__,
                 "load_average": list(os.getloadavg()), "per_step": {}}
    for bs in (1, 8):
        queries = [Query(p, default_format()) for p in prompts(bs)]
        for method in METHODS:
            engine = Engine(lm, EngineConfig(attention="sdpa", batch_size=bs, **extra))
            engine.answer_many(queries, method, GenerationConfig(max_new_tokens=LONG, stop_at_newline=False))  # warm
            short, long = (count(engine, queries, method, n, cuda) for n in (SHORT, LONG))
            steps = LONG - SHORT
            out["per_step"][f"{method} b{bs}"] = {
                k: (long[k] - short[k]) / steps for k in ("all", "leaf", "cuda_kernels") if long[k] is not None}
            out["per_step"][f"{method} b{bs}"]["full_length"] = short["full_length"] and long["full_length"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
