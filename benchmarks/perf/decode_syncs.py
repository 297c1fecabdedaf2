"""Host syncs per decode step of the engine in whichever source tree PYTHONPATH points at.

    PYTHONPATH=src python benchmarks/perf/decode_syncs.py > syncs.json

Counts tensor → Python copies (``bench.timing.count_host_syncs``, taken from this checkout's file so
an older tree on PYTHONPATH is counted the same way) while the engine answers 8 questions (N=5,
10 new tokens, no newline stop, random:llama: the count does not depend on the model's size) for
origin, avg, flex and weighted_avg (weights 1..5, and the per-step "entropy" rule) at batch 1 and 8, and divides by the decode steps (engine stats; for a tree
without that counter, calls × 10 when every answer ran all 10 tokens). It uses only public engine
names, so it runs on older trees too: that is how the count before the batched decode step was taken.
"""

import importlib.util
import json
import sys
from pathlib import Path

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.models import load_model
from selfensemble.engine.prompts import default_format
from selfensemble.engine.queries import Query

TIMING = Path(__file__).resolve().parents[2] / "src" / "selfensemble" / "bench" / "timing.py"


#: (method, weights): numeric weights and a per-step rule (weighted_avg) as well as the unweighted methods
RUNS = (("origin", None), ("avg", None), ("flex", None), ("weighted_avg", [1, 2, 3, 4, 5]),
        ("weighted_avg", "entropy"))


def counter():
    """count_host_syncs from this checkout (timing.py imports only the standard library at load)."""
    spec = importlib.util.spec_from_file_location("_timing_here", TIMING)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.count_host_syncs


def main() -> None:
    count_host_syncs = counter()
    lm = load_model("random:llama")
    prompts = [[f"What is the capital of country number {i}?", f"Which city is the capital of country {i}?",
                f"Name the capital of country {i}.", f"Country {i}: its capital is?", f"Capital of {i}?"]
               for i in range(8)]
    gen = GenerationConfig(max_new_tokens=10, stop_at_newline=False)
    out = {}
    for bs in (1, 8):
        for method, weights in RUNS:
            qs = [Query(p, default_format(), weights=weights) for p in prompts]
            eng = Engine(lm, EngineConfig(attention="sdpa", batch_size=bs))
            eng.answer_many(qs[:2], method, gen)  # warm
            calls0, steps0 = eng.stats["calls"], eng.stats.get("decode_steps")
            with count_host_syncs() as syncs:
                ans = eng.answer_many(qs, method, gen)
            calls = eng.stats["calls"] - calls0
            full = all(len(a.tokens) == 10 for a in ans)
            steps = eng.stats["decode_steps"] - steps0 if steps0 is not None else (calls * 10 if full else None)
            name = method if weights is None or not isinstance(weights, str) else f"{method}:{weights}"
            out[f"{name} b{bs}"] = {"syncs": syncs["syncs"], "calls": calls, "decode_steps": steps,
                                      "syncs_per_step": round(syncs["syncs"] / steps, 2) if steps else None,
                                      "all_full_length": full}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
