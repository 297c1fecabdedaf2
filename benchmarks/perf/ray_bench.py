"""Ray backend vs local backend on the same run: items/s, start-up, overhead per item.

    python benchmarks/perf/ray_bench.py --items 64 --workers 2 [--model random:smollm2-135m]
        [--methods avg | --methods origin,avg,flex] [--ray-only]
        [--ray-address HOST:PORT] [--out benchmarks/results/ray_vs_local.json]

Both backends answer the same synthetic questions (``--items``, each with two paraphrases) by the
same method(s) and settings into fresh run folders (one run holding every ``--methods``, each
method a pass over the items; weighted methods add a sampled-confidence pass), through
``run_experiment`` (so the timings
include the driver writing every record). A thin proxy around the backend time-stamps each
answer as the driver receives it:

  startup_s      backend creation (model load; Ray: connect) up to the first answer
  total_s        backend creation up to the last answer
  steady_items_s items after the first batch / time from the first to the last answer
  passes         Ray passes (answer_many / sample calls); ``ray_actor_starts``: actors created
                 (each loads the model once), when the backend reports it
  overhead_ms_per_item  (Ray total − local run time ÷ workers) / answers: what the pool costs
                 over a perfect split of the local engine's own work, start-up included

It also checks the two runs gave the same predictions. The default model has the embedded
SmolLM2-135M's architecture and size with random weights (no ~15 s GGUF de-quantisation per
actor), so every answer runs the full ``--max-new-tokens``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

PLACES = ["France", "Spain", "Italy", "Japan", "Egypt", "Peru", "Chile", "Kenya", "Norway", "Canada", "India",
          "Cuba", "Brazil", "Mexico", "Greece", "Ghana", "Nepal", "Chad", "Fiji", "Iran"]
TEMPLATES = [("What is the capital of {}?", "Which city is the capital of {}?", "Name the capital city of {}."),
             ("What language is spoken in {}?", "Which language do people in {} speak?", "Name a language of {}."),
             ("What currency is used in {}?", "Which currency does {} use?", "Name the money of {}."),
             ("On which continent is {}?", "{} lies on which continent?", "Name the continent of {}.")]


class Timed:
    """Engine-like proxy recording when each answer reaches the driver."""

    def __init__(self, inner):
        self.inner, self.stamps = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def answer_many(self, queries, method, gen=None, on_done=None):
        def stamp(i, answer):
            self.stamps.append(time.perf_counter())
            if on_done:
                on_done(i, answer)

        return self.inner.answer_many(queries, method, gen, on_done=stamp if on_done else None)


def write_dataset(path: Path, n: int) -> None:
    rows = []
    for i in range(n):
        q, a, b = TEMPLATES[i % len(TEMPLATES)]
        place = PLACES[(i // len(TEMPLATES)) % len(PLACES)]
        rows.append({"id": f"b{i:03d}", "question": q.format(place), "answers": [place],
                     "paraphrases": [a.format(place), b.format(place)]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_once(backend_cfg, cfg, workers: int) -> dict:
    from rich.console import Console

    from selfensemble.pipeline.backends import open_backend
    from selfensemble.pipeline.experiment import run_experiment

    console = Console(file=io.StringIO())
    t0 = time.perf_counter()
    engine = Timed(open_backend(backend_cfg, cfg.load, cfg.engine, console))
    t_ready = time.perf_counter()
    try:
        run_experiment(cfg, console=console, engine=engine)
    finally:
        engine.inner.close()
    s, n = engine.stamps, len(engine.stamps)
    first_batch = min(cfg.engine.batch_size, n)
    records = [(m, json.loads(x)) for m in cfg.methods
               for x in (Path(cfg.out) / m / "results.jsonl").read_text().splitlines()]
    prov = engine.inner.provenance()
    return {"backend": backend_cfg.name, "workers": workers, "methods": list(cfg.methods), "answers": n,
            "passes": prov.get("ray_passes"), "ray_actor_starts": prov.get("ray_actor_starts"),
            "ready_s": t_ready - t0,
            "startup_s": s[0] - t0, "total_s": s[-1] - t0, "run_s": s[-1] - t_ready,
            "items_per_s": n / (s[-1] - t0),
            "steady_items_per_s": (n - first_batch) / (s[-1] - s[first_batch - 1]) if n > first_batch else None,
            "engine_s_per_item": sum(r["seconds"] for _, r in records) / len(records),
            "predictions": {f"{m}/{r['id']}": r["prediction"] for m, r in records}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default="random:smollm2-135m")
    ap.add_argument("--methods", default="avg", help="comma-separated: one run answering each in turn")
    ap.add_argument("--ray-only", action="store_true", help="skip the local run (no predictions check)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_vs_local.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # the local engine gets one core; each Ray actor gets its --cpus-per-worker (1)
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig
    from selfensemble.pipeline.backends import BackendConfig

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bench.jsonl"
        write_dataset(data, args.items)
        base = dict(dataset="jsonl", data_path=str(data), dataset_options={"paraphrase_columns": ["paraphrases"],
                                                                           "id_column": "id"},
                    num_paraphrases=3, few_shot=2, load=LoadSpec(model=args.model),
                    engine=EngineConfig(attention="sdpa", batch_size=args.batch_size), max_new_tokens=args.max_new_tokens, methods=args.methods.split(","))
        local = None if args.ray_only else run_once(BackendConfig("local"), RunConfig(**base, out=f"{tmp}/local"), 1)
        ray = run_once(BackendConfig("ray", args.ray_address, args.workers),
                       RunConfig(**base, out=f"{tmp}/ray"), args.workers)
    same = None if local is None else local.pop("predictions") == ray.pop("predictions")
    ray.pop("predictions", None)
    if local is not None:
        ray["overhead_ms_per_item"] = 1000 * (ray["total_s"] - local["run_s"] / args.workers) / ray["answers"]
    result = {"config": vars(args) | {"out": str(args.out)}, "same_predictions": same, "local": local, "ray": ray,
              "cpus": __import__("os").cpu_count(), "machine_load": __import__("os").getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| backend | workers | answers | passes | actor starts | startup s | total s | answers/s | steady | s/item |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in (x for x in (local, ray) if x is not None):
        steady = f"{r['steady_items_per_s']:.2f}" if r["steady_items_per_s"] else "–"
        print(f"| {r['backend']} | {r['workers']} | {r['answers']} | {r['passes']} | {r['ray_actor_starts']} | "
              f"{r['startup_s']:.1f} | {r['total_s']:.1f} | {r['items_per_s']:.2f} | {steady} | "
              f"{r['engine_s_per_item']:.3f} |")
    if local is not None:
        print(f"\nRay overhead over a perfect {args.workers}-way split of the local run: "
              f"{ray['overhead_ms_per_item']:.0f} ms/item; same predictions: {same}")
    print(f"load {result['machine_load']}")
    if same is False:
        sys.exit(1)


if __name__ == "__main__":
    main()
