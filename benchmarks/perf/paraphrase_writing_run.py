"""Writing paraphrases as a run does (N=5, the gate on: 12 candidates a question), on WebQuestions.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/perf/paraphrase_writing_run.py 24 after out.json

Prints one JSON line: s/question, candidates drawn, engine calls and rows per call, prefill tokens
per candidate (prefilled rows plus few-shot prefix encodings), generated tokens per candidate, the
gate's keep rate and the share of questions left short. Rows per call and prefill tokens do not
depend on the machine's load; seconds do. Works on any checkout whose ``gated_paraphrases`` has
this signature (it counts engine calls by wrapping
``generate`` in whichever module defines the Engine), so the same script
measures older code through its PYTHONPATH.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

import selfensemble.methods as methods
from selfensemble.config.gate import GateConfig
from selfensemble.engine.models import load_model
from selfensemble.pipeline.paraphrase.gate import load_embedder
from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig, gated_paraphrases


def main(n: int, label: str, out: Path) -> dict:
    from selfensemble.data import load_dataset

    torch.set_num_threads(1)
    qs = [it.question for it in load_dataset("webqa", split="test", limit=n).items]  # shared data, else the sample
    engine = methods.Engine(load_model("smollm2-135m"), methods.EngineConfig())
    gate = GateConfig()
    load_embedder(gate.embedder)
    engine.answer(["What is the capital of France?"], "origin")  # warm-up
    count = {"calls": 0, "rows": 0}
    home = sys.modules[methods.Engine.__module__]  # the module whose ``generate`` the engine calls
    inner = home.generate

    def counting(model, tok, batch, cache, groups, *args, **kwargs):
        count["calls"] += 1
        count["rows"] += sum(len(g) for g in groups)
        return inner(model, tok, batch, cache, groups, *args, **kwargs)

    home.generate = counting
    before = dict(engine.stats)
    t0 = time.perf_counter()
    # N = 5 prompts (4 written); checkouts before num_paraphrases counted the question wrote N = 5 from 4
    entries = gated_paraphrases(engine, qs, ParaphraseConfig(num_paraphrases=5, seed=0), gate)
    sec = time.perf_counter() - t0
    d = {k: engine.stats[k] - before.get(k, 0) for k in engine.stats}
    cands, checked = count["rows"], sum(len(e["checks"]) for e in entries)
    kept = sum(len(e["paraphrases"]) for e in entries)
    res = {"label": label, "questions": n, "seconds": round(sec, 1), "s_per_question": round(sec / n, 2),
           "candidates": cands, "candidates_per_question": round(cands / n, 2), "engine_calls": count["calls"],
           "rows_per_call": round(cands / count["calls"], 1),
           "prefill_tokens_per_candidate": round((d["prefill_tokens"] + d["prefix_tokens_encoded"]) / cands, 1),
           "generated_tokens_per_candidate": round(d["generated_tokens"] / cands, 1), "checked": checked,
           "kept": kept, "keep_rate_of_checked": round(kept / max(1, checked), 3),
           "share_short": round(sum(len(e["paraphrases"]) < 4 for e in entries) / n, 3),
           "candidates_per_s": round(cands / sec, 2)}
    out.write_text(json.dumps({"result": res, "entries": dict(zip(qs, entries, strict=True))}, indent=1))
    return res


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))))
