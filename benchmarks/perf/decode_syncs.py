"""Host syncs per decode step of the engine in whichever source tree PYTHONPATH points at.

    PYTHONPATH=src python benchmarks/perf/decode_syncs.py > syncs.json

Counts tensor → Python copies (Tensor.tolist/item/__bool__/__int__/__float__, wrapped) while the
engine answers 8 questions (N=5, 10 new tokens, no newline stop, random:llama: the count does
not depend on the model's size) for origin, avg and flex at batch 1 and 8, and divides by the
decode steps (engine stats; for a tree without that counter, calls × 10 when every answer ran all
10 tokens). It uses only public names, so it runs on older trees too: that is how the count
before the batched decode step was taken (bench.timing.count_host_syncs is the same counter).
"""
import json

import torch

from selfensemble.decoding import GenerationConfig
from selfensemble.methods import Engine, EngineConfig, Query
from selfensemble.models import load_model
from selfensemble.prompts import default_format

SYNC = ("tolist", "item", "__bool__", "__int__", "__float__")
count = {"n": 0}
saved = {m: getattr(torch.Tensor, m) for m in SYNC}
def wrap(f):
    def g(self, *a, **k):
        count["n"] += 1
        return f(self, *a, **k)
    return g
lm = load_model("random:llama")
qs = [Query([f"What is the capital of country number {i}?", f"Which city is the capital of country {i}?",
             f"Name the capital of country {i}.", f"Country {i}: its capital is?", f"Capital of {i}?"],
            default_format()) for i in range(8)]
gen = GenerationConfig(max_new_tokens=10, stop_at_newline=False)
out = {}
for bs in (1, 8):
    for method in ("origin", "avg", "flex"):
        eng = Engine(lm, EngineConfig(attention="sdpa", batch_size=bs))
        eng.answer_many(qs[:2], method, gen)  # warm
        calls0, gen0 = eng.stats["calls"], eng.stats["generated_tokens"]
        steps0 = eng.stats.get("decode_steps")
        count["n"] = 0
        for m, f in saved.items():
            setattr(torch.Tensor, m, wrap(f))
        try:
            ans = eng.answer_many(qs, method, gen)
        finally:
            for m, f in saved.items():
                setattr(torch.Tensor, m, f)
        calls = eng.stats["calls"] - calls0
        steps = (eng.stats["decode_steps"] - steps0) if steps0 is not None else None
        full = all(len(a.tokens) == 10 for a in ans)
        if steps is None:
            steps = calls * 10 if full else None
        out[f"{method} b{bs}"] = {"syncs": count["n"], "calls": calls, "decode_steps": steps,
                                  "syncs_per_step": round(count["n"] / steps, 2) if steps else None,
                                  "all_full_length": full}
print(json.dumps(out, indent=1))
