"""What pacing engine calls for checkpoints costs: paraphrase writing with saves at least every minute
(``checkpoint_s=60``, calls sized to ``writing.PACE`` of it) against unpaced calls (every call as many questions as
``batch_size`` allows), on the embedded model and WebQuestions, N = 5 with the gate on (12 candidates a
question).

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/perf/paraphrase_pacing.py 8 out.json

Prints and writes one JSON object per variant: seconds, engine calls, candidates per call, the longest
engine call (the longest stretch without a save) and the load average; and whether both variants wrote
the same paraphrases (they must: a question's candidates do not depend on its call neighbours). One
sample per variant on a shared machine: the seconds are noisy, the call sizes are not.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path


def main(n: int, out: Path) -> list[dict]:
    import torch

    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.gate import GateConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.data import load_dataset
    from selfensemble.engine.factory import build_engine
    from selfensemble.pipeline.paraphrase.gate import load_embedder
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig
    from selfensemble.pipeline.paraphrase.writing import write_paraphrases

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    qs = [it.question for it in load_dataset("webqa", split="test", limit=n).items]
    engine = build_engine(LoadSpec("smollm2-135m"), EngineConfig(batch_size=8))
    gate = GateConfig()
    load_embedder(gate.embedder)
    engine.answer(["What is the capital of France?"], "origin")  # warm-up
    rows, entries = [], {}
    for label, checkpoint_s in (("paced (checkpoint 60 s)", 60.0), ("unpaced", math.inf)):
        calls: list[tuple[float, int]] = []

        def on_event(e, calls=calls) -> None:
            if e.kind == "sampling":
                calls.append((time.perf_counter(), e.candidates))

        with tempfile.TemporaryDirectory() as root:
            t0 = time.perf_counter()
            found = write_paraphrases(lambda: engine, "smollm2-135m", qs, ParaphraseConfig(num_paraphrases=5), gate,
                                      on_event=on_event, checkpoint_s=checkpoint_s, root=Path(root))
            seconds = time.perf_counter() - t0
        ends = [t for t, _ in calls[1:]] + [t0 + seconds]
        longest = max(end - start for (start, _), end in zip(calls, ends, strict=True))
        entries[label] = found.entries
        rows.append({"variant": label, "questions": n, "seconds": round(seconds, 1),
                     "s_per_question": round(seconds / n, 1), "engine_calls": len(calls),
                     "candidates_per_call": [c for _, c in calls], "longest_call_s": round(longest, 1),
                     "loadavg_1min": round(os.getloadavg()[0], 2), "cores": os.cpu_count()})
        print(json.dumps(rows[-1]), flush=True)
    same = len({json.dumps(e, sort_keys=True) for e in entries.values()}) == 1
    result = {"rows": rows, "same_paraphrases": same, "torch_threads": torch.get_num_threads()}
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({"same_paraphrases": same}))
    return rows


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8, Path(sys.argv[2] if len(sys.argv) > 2 else "pacing.json"))
