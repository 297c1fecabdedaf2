"""First and later loads of a GGUF model, with the de-quantised-weights cache (engine/gguf_cache.py).

Each figure is a fresh process, as a user's command is: the load alone (`load_model(spec)`, import
of transformers excluded) and `selfensemble ask ... --method origin` end to end. The first process
runs on an empty cache folder (it de-quantises and writes the cache); the next ``--repeats`` read it.
The 1-minute load average is recorded before each process: on a shared machine the figures are
inflated by other work, and the ratio first/later is what to read.

    python benchmarks/perf/load_cache.py --spec smollm2-135m --repeats 3 --out benchmarks/results/load_cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
LOAD = """
import json, sys, time
from selfensemble.engine.models import load_model   # transformers is imported here, before the clock
from selfensemble.engine import gguf_cache
import transformers.modeling_utils  # noqa: F401 (the import itself is not the load)
t0 = time.perf_counter()
load_model(sys.argv[1])
print(json.dumps({"load_s": time.perf_counter() - t0, "conversions": gguf_cache.conversions}))
"""


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=True)
    return time.perf_counter() - t0, done.stdout


def sample(kind: str, spec: str, env: dict) -> dict:
    load = round(os.getloadavg()[0], 2)
    if kind == "load":
        wall, out = run([sys.executable, "-c", LOAD, spec], env)
        got = json.loads(out.strip().splitlines()[-1])
        return {"load_s": round(got["load_s"], 2), "process_s": round(wall, 2), "conversions": got["conversions"],
                "load_average_before": load}
    wall, _ = run([sys.executable, "-m", "selfensemble", "ask", "What is the capital of France?", "--method", "origin",
                   "--model", spec], env)
    return {"ask_s": round(wall, 2), "load_average_before": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result: dict = {"spec": args.spec, "cpus": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS")}
    for kind in ("load", "ask"):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": SRC, "PYTHONWARNINGS": "ignore", "SELFENSEMBLE_MODEL_CACHE": tmp,
                   "SELFENSEMBLE_CACHE": str(Path(tmp) / "user-cache")}
            first = sample(kind, args.spec, env)
            later = [sample(kind, args.spec, env) for _ in range(args.repeats)]
        key = "load_s" if kind == "load" else "ask_s"
        result[kind] = {"first": first, "later": later, "later_median_s": statistics.median(x[key] for x in later)}
        print(json.dumps({kind: result[kind]}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
