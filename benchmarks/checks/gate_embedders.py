"""Which embedder for the paraphrase gate, which threshold, and does the entity guard help? (issue 10)

  python benchmarks/checks/gate_embedders.py [--pool runs/bench_gate/pool.json]

Labelled pairs: hand-written (a true paraphrase and crafted drifts per question) and real
candidates the embedded model wrote for WebQuestions test questions (from the gate benchmark's
pool), labelled by hand: 1 = asks the same question (same gold answer), 0 = drifted.
Prints, per embedder: AUC (how well similarity ranks true above drifted), accuracy and kept-share
at each threshold with and without the entity guard, and the cost.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# hand-written (original, true paraphrase, crafted drifts); the same cases the gate's tests use
HAND = [(c["original"], c["paraphrase"], c["drifts"]) for c in
        json.loads((Path(__file__).resolve().parents[2] / "tests" / "data" / "gate_cases.json").read_text())]


# real candidates (index into the pool's 12 per question) labelled by hand; 1 = same question
REAL = {
    "who plays ken barlow in coronation street?": [0, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0],
    "where was george washington carver from?": [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
    "who was richard nixon married to?": [1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0],
    "who is governor of ohio 2011?": [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0],
    "where is the fukushima daiichi nuclear plant located?": [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0],
    "what countries are part of the uk?": [0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1],
    "who plays bilbo baggins in the hobbit?": [1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0],
    "what kind government does egypt have?": [0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
    "what town was martin luther king assassinated in?": [1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0],
    "where did edgar allan poe died?": [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0],
}


def pairs(pool: dict) -> list[tuple[str, str, int, str]]:
    out = [(q, good, 1, "hand") for q, good, _ in HAND]
    out += [(q, d, 0, "hand") for q, _, drifts in HAND for d in drifts]
    for q, labels in REAL.items():
        if q in pool:
            out += [(q, c, y, "real") for c, y in zip(pool[q], labels, strict=True)]
    return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random true pair > a random drifted pair), ties count half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from selfensemble.pipeline.paraphrase.gate import entity_problem, load_embedder, similarities

    p = argparse.ArgumentParser()
    p.add_argument("--pool", default="runs/bench_gate/pool.json")
    args = p.parse_args()
    pool = json.loads(Path(args.pool).read_text()) if Path(args.pool).exists() else {}
    data = pairs(pool)
    labels = np.array([y for *_, y, _ in data])
    kind = np.array([k for *_, k in data])
    guard_ok = np.array([entity_problem(q, c) is None for q, c, _, _ in data])
    print(f"{len(data)} labelled pairs: {int((kind == 'hand').sum())} hand-written, {int((kind == 'real').sum())} real "
          f"({int(labels[kind == 'real'].sum())} true); entity guard alone: accuracy "
          f"{np.mean(guard_ok == labels.astype(bool)):.3f}\n")
    print("| embedder | load s | ms/pair | AUC hand | AUC real | threshold | guard | accuracy | true kept | drifts kept |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for name, thresholds in (("wordllama", (0.5, 0.6, 0.7)), ("minilm", (0.7, 0.8, 0.9))):
        t0 = time.perf_counter()
        emb = load_embedder(name)
        load_s = time.perf_counter() - t0
        emb.embed(["warm up"])
        t0 = time.perf_counter()
        sims = np.array([float(similarities(q, [c], emb)[0][0]) for q, c, _, _ in data])
        ms = (time.perf_counter() - t0) / len(data) * 1000
        a_hand = auc(sims[kind == "hand"], labels[kind == "hand"])
        a_real = auc(sims[kind == "real"], labels[kind == "real"]) if (kind == "real").any() else float("nan")
        for t in thresholds:
            for guard in (False, True):
                keep = (sims >= t) & (guard_ok if guard else True)
                acc = np.mean(keep == labels.astype(bool))
                print(f"| {name} | {load_s:.1f} | {ms:.2f} | {a_hand:.3f} | {a_real:.3f} | {t} | {'on' if guard else 'off'} | "
                      f"{acc:.3f} | {keep[labels == 1].mean():.2f} | {keep[labels == 0].mean():.2f} |")


if __name__ == "__main__":
    main()
