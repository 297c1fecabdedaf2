"""Does the paraphrase gate help, and do entropy weights beat sampled confidence? (issue 10)

  python benchmarks/experiments/paraphrase_gate.py run   --limit 200 --out runs/bench_gate   # resumable; kill any time
  python benchmarks/experiments/paraphrase_gate.py table --out runs/bench_gate               # markdown from what finished

One candidate pool per question (the embedded model's own paraphrases, oversampled 3×: 12 candidates
for N = 5 prompts) is generated once; every variant draws from that same pool, so the comparison
is paired on questions *and* candidates:
  nogate   the first 4 acceptable candidates (what `--no-gate` asks)
  gateT    paraphrase_gate.screen at min_similarity T (entity guard off, as shipped), up to 4 most diverse
  gateT-guard    the same with the entity guard on
Stages run in priority order; every run is a resumable run store, and comparisons pair the
question ids two runs share, so a stage cut short still compares honestly (n is printed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

N_PROMPTS = 5
OVERSAMPLE = 3
THRESHOLDS = (0.5, 0.6, 0.7)
COMPARE_T = 0.6  # the threshold the weight and guard comparisons ran at (the shipped default, now 0.7, is paraphrase_gate.DEFAULT_MIN_SIMILARITY)
# (variant, method, weights); in priority order
STAGES = [("nogate", "avg", None), (f"gate{COMPARE_T}", "avg", None),
          ("nogate", "flex", None), (f"gate{COMPARE_T}", "flex", None),
          ("nogate", "vote", None), (f"gate{COMPARE_T}", "vote", None),
          (f"gate{COMPARE_T}", "weighted_avg", "entropy"), (f"gate{COMPARE_T}-guard", "avg", None),
          ("gate0.7", "avg", None), ("gate0.5", "avg", None), ("nogate", "origin", None),
          (f"gate{COMPARE_T}", "weighted_avg", "confidence"),
          ("gate0.7", "flex", None), ("gate0.7", "vote", None)]  # the threshold choice across methods


def _items(limit: int):
    from selfensemble.config.run import RunConfig
    from selfensemble.pipeline.experiment import load_items

    return load_items(RunConfig(dataset="webqa", split="dev", limit=limit))  # tuning: dev split only


def make_pool(engine, items, out: Path, chunk: int = 25) -> dict[str, list[str]]:
    """{question: 12 candidates}, saved after every chunk (resumable)."""
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig, generate_paraphrases

    path = out / "pool.json"
    pool = json.loads(path.read_text()) if path.exists() else {}
    cfg = ParaphraseConfig(num_paraphrases=(N_PROMPTS - 1) * OVERSAMPLE + 1)  # N counts the question: 12 written
    todo = [it.question for it in items if it.question not in pool]
    for c in range(0, len(todo), chunk):
        t0 = time.perf_counter()
        qs = todo[c:c + chunk]
        for q, cands in zip(qs, generate_paraphrases(engine, qs, cfg), strict=True):
            pool[q] = cands
        path.write_text(json.dumps(pool, indent=1, ensure_ascii=False))
        timing = json.loads((out / "pool_time.json").read_text()) if (out / "pool_time.json").exists() else []
        timing.append([len(qs), time.perf_counter() - t0])
        (out / "pool_time.json").write_text(json.dumps(timing))
        print(f"pool: {len(pool)}/{len(items)} questions ({time.perf_counter() - t0:.0f}s for {len(qs)})", flush=True)
    return pool


def variant_items(variant: str, items, pool):
    """Items whose prompts are the original + the variant's paraphrases (meta: the gate's record)."""
    from selfensemble.config.gate import GateConfig
    from selfensemble.data.base import Item
    from selfensemble.pipeline.paraphrase.gate import gate_record, screen

    k = N_PROMPTS - 1
    out = []
    for it in items:
        cands = pool[it.question]
        if variant == "nogate":
            out.append(Item(it.id, (it.question, *cands[:k]), it.answers, it.group, it.meta))
            continue
        t = float(variant.removeprefix("gate").removesuffix("-guard"))
        gate = GateConfig(min_similarity=t, entity_guard=variant.endswith("-guard"))
        verdicts = screen(it.question, cands, k, gate)
        kept = [v.paraphrase for v in verdicts if v.kept]
        meta = {**it.meta, "paraphrase_gate": gate_record({"checks": [v.to_dict() for v in verdicts]},
                                                          len(kept), k, gate)}
        out.append(Item(it.id, (it.question, *kept), it.answers, it.group, meta))
    return out


def run(args) -> None:
    import torch

    torch.set_num_threads(1)
    from rich.console import Console

    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.gate import GateSettings
    from selfensemble.config.run import RunConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.models import load_model
    from selfensemble.engine.prompts import PromptFormat
    from selfensemble.engine.queries import Query
    from selfensemble.pipeline.backends import as_backend
    from selfensemble.pipeline.experiment import run_method

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    ds, items = _items(args.limit)
    engine = Engine(load_model("smollm2-135m"), EngineConfig(batch_size=8))
    backend = as_backend(engine)  # run_method takes a Backend
    pool = make_pool(engine, items, out)
    for variant, method, weights in STAGES:
        if args.only and variant not in args.only.split(","):
            continue
        v_items = variant_items(variant, items, pool)
        limit = args.confidence_limit if weights == "confidence" else len(v_items)
        v_items = v_items[:limit]
        cfg = RunConfig(dataset="webqa", split="dev", methods=[method], num_paraphrases=N_PROMPTS,
                        weights=weights or "confidence", out=str(out / variant),
                        gate=GateSettings(enabled=variant != "nogate"))
        queries = [Query(list(it.prompts), PromptFormat(instruction=ds.instruction,
                                                        examples=tuple(ds.few_shot(it, cfg.few_shot, cfg.seed))))
                   for it in v_items]
        name = method if weights is None else f"{method}-{weights}"
        t0 = time.perf_counter()
        m = run_method(backend, cfg, method, v_items, queries, out / variant / name, console)
        print(f"{variant}/{name}: acc {m['accuracy']:.3f} n={m['n']} ({time.perf_counter() - t0:.0f}s)", flush=True)


# -- the table -----------------------------------------------------------------------------------


def _records(folder: Path) -> dict[str, dict]:
    f = folder / "results.jsonl"
    if not f.exists():
        return {}
    return {r["id"]: r for r in (json.loads(line) for line in f.read_text().splitlines() if line.strip())}


def _pair(a: dict, b: dict) -> str:
    from selfensemble.analysis.stats import paired_bootstrap_diff

    ids = sorted(set(a) & set(b))
    if not ids:
        return "–"
    d = paired_bootstrap_diff([float(b[i]["correct"]) for i in ids], [float(a[i]["correct"]) for i in ids],
                              n=2000, seed=0)
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (n={len(ids)})"


def _acc(r: dict) -> str:
    from selfensemble.analysis.stats import bootstrap_ci

    if not r:
        return "–"
    c = [bool(x["correct"]) for x in r.values()]
    lo, hi = bootstrap_ci(c, n=2000, seed=0)
    return f"{np.mean(c):.3f} [{lo:.3f}, {hi:.3f}]"


def _ece(r: dict) -> str:
    from selfensemble.analysis.metrics import ece

    if not r:
        return "–"
    return f"{ece([min(1.0, x['confidence']) for x in r.values()], [bool(x['correct']) for x in r.values()]):.3f}"


def _secs(r: dict) -> str:
    return f"{np.mean([x['seconds'] for x in r.values()]):.2f}" if r else "–"


def gate_stats(items, pool, t: float, guard: bool = False, embedder: str = "wordllama") -> dict:
    """Share of candidates dropped by reason, questions left short, and the gate's cost per question."""
    from selfensemble.config.gate import GateConfig
    from selfensemble.pipeline.paraphrase.gate import load_embedder, screen

    t0 = time.perf_counter()
    emb = load_embedder(embedder)
    load_s = time.perf_counter() - t0
    gate = GateConfig(min_similarity=t, entity_guard=guard, embedder=embedder)
    counts = {"candidates": 0, "similarity": 0, "entity": 0, "surplus": 0, "kept": 0, "short": 0}
    screen(items[0].question, pool[items[0].question], N_PROMPTS - 1, gate, emb)  # warm-up (lemmatiser)
    t0 = time.perf_counter()
    for it in items:
        vs = screen(it.question, pool[it.question], N_PROMPTS - 1, gate, emb)
        counts["candidates"] += len(vs)
        counts["kept"] += sum(v.kept for v in vs)
        counts["short"] += sum(v.kept for v in vs) < N_PROMPTS - 1
        for v in vs:
            if v.reason and v.reason.startswith("similarity"):
                counts["similarity"] += 1
            elif v.reason and v.reason.startswith("entity"):
                counts["entity"] += 1
            elif v.reason:
                counts["surplus"] += 1
    counts["ms_per_question"] = (time.perf_counter() - t0) / len(items) * 1000
    counts["load_s"] = load_s
    return counts


def table(args) -> None:
    out = Path(args.out)
    _, items = _items(args.limit)
    pool = json.loads((out / "pool.json").read_text())
    items = [it for it in items if it.question in pool]
    timing = json.loads((out / "pool_time.json").read_text()) if (out / "pool_time.json").exists() else []
    n_cand = [len(pool[it.question]) for it in items]
    print(f"## Paraphrase gate on WebQuestions test (first {len(items)} questions), SmolLM2-135M, N={N_PROMPTS}\n")
    if timing:
        print(f"Candidate pool: mean {np.mean(n_cand):.1f} candidates/question (asked for "
              f"{(N_PROMPTS - 1) * OVERSAMPLE}), {sum(t for _, t in timing) / sum(n for n, _ in timing):.1f} s/question "
              "to generate.\n")
    print("| gate | candidates dropped: similarity | entity guard | surplus (diversity) | questions short of 4 | ms/question |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in THRESHOLDS:
        for guard in (False, True):
            s = gate_stats(items, pool, t, guard)
            c = s["candidates"]
            print(f"| wordllama ≥{t}{', entity guard' if guard else ''} | {s['similarity'] / c:.1%} | {s['entity'] / c:.1%} | "
                  f"{s['surplus'] / c:.1%} | {s['short'] / len(items):.1%} | {s['ms_per_question']:.2f} |")
    if args.minilm:
        s = gate_stats(items[:50], pool, 0.8, False, "minilm")
        print(f"| minilm ≥0.8 (50 q) | {s['similarity'] / s['candidates']:.1%} | {s['entity'] / s['candidates']:.1%} | "
              f"{s['surplus'] / s['candidates']:.1%} | {s['short'] / 50:.1%} | {s['ms_per_question']:.2f} (load {s['load_s']:.1f}s) |")
    print("\n| variant | method | n | accuracy [95% CI] | Δ vs no gate, paired [95% CI] | ECE | s/question |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = {m: _records(out / "nogate" / m) for m in ("avg", "flex", "vote", "origin")}
    for variant, method, weights in STAGES:
        name = method if weights is None else f"{method}-{weights}"
        r = _records(out / variant / name)
        if not r:
            continue
        ref = base.get(method) if variant != "nogate" else None
        print(f"| {variant} | {name} | {len(r)} | {_acc(r)} | {_pair(ref, r) if ref else '–'} | {_ece(r)} | {_secs(r)} |")
    gavg = _records(out / f"gate{COMPARE_T}" / "avg")
    for name in ("weighted_avg-entropy", "weighted_avg-confidence"):
        r = _records(out / f"gate{COMPARE_T}" / name)
        if r and gavg:
            print(f"\n{name} − avg (gate{COMPARE_T}), paired: {_pair(gavg, r)}")
    for t in ("0.5", "0.7"):
        r = _records(out / f"gate{t}" / "avg")
        if r and gavg:
            print(f"avg gate{t} − avg gate{COMPARE_T}, paired: {_pair(gavg, r)}")
    r = _records(out / f"gate{COMPARE_T}-guard" / "avg")
    if r and gavg:
        print(f"avg gate{COMPARE_T} with entity guard − without, paired: {_pair(gavg, r)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["run", "table"])
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--confidence-limit", type=int, default=200, help="questions for sampled confidence (costly)")
    p.add_argument("--only", default=None, help="variants to run, comma-separated")
    p.add_argument("--minilm", action="store_true", help="table: also time the MiniLM embedder")
    p.add_argument("--out", default="runs/bench_gate")
    args = p.parse_args()
    run(args) if args.what == "run" else table(args)


if __name__ == "__main__":
    main()
