"""Answers of every method for a few sample questions, and s/question of origin / avg / flex (N=5).

Run: python benchmarks/experiments/sample_answers.py [--model smollm2-135m] [--attention sdpa|flex]
All numbers come from one process and one loaded model, after a warm-up pass.
"""

from __future__ import annotations

import argparse
import time

from selfensemble import Engine, EngineConfig, GenerationConfig, load_model
from selfensemble.engine.prompts import default_format
from selfensemble.methods.registry import METHODS

QUESTIONS = [
    ["What is the capital of France?", "Which city is the capital of France?", "Name the French capital.",
     "France's capital city is which one?", "What city serves as the capital of France?"],
    ["Who wrote Romeo and Juliet?", "Who is the author of Romeo and Juliet?", "Romeo and Juliet was written by whom?",
     "Which playwright wrote Romeo and Juliet?", "Name the writer of Romeo and Juliet."],
    ["What language is spoken in Mexico?", "Which language do people in Mexico speak?",
     "What is the main language of Mexico?", "In Mexico, what language is spoken?", "Mexicans speak which language?"],
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--attention", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    engine = Engine(load_model(args.model), EngineConfig(attention=args.attention, batch_size=1))
    gen, fmt = GenerationConfig(max_new_tokens=10), default_format()
    weights = [1.0, 0.8, 0.6, 0.8, 1.0]
    print(f"model {args.model}, attention: {engine.attention_note}\n")
    print("| question | " + " | ".join(METHODS) + " |")
    print("|---|" + "---|" * len(METHODS))
    for prompts in QUESTIONS:
        cells = []
        for m in METHODS:
            a = engine.answer(prompts, m, gen, fmt, weights if m.startswith("weighted") else None)
            cells.append(a.answer + (f" ({'; '.join(a.per_prompt)})" if m == "per_prompt" else ""))
        print(f"| {prompts[0]} | " + " | ".join(cells) + " |")
    print("\n| method | s/question (N=5, mean of 3 questions × repeats) | × origin |")
    print("|---|---|---|")
    timings = {}
    for m in ("origin", "avg", "flex"):
        engine.answer(QUESTIONS[0], m, gen, fmt)  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for prompts in QUESTIONS:
                engine.answer(prompts, m, gen, fmt)
        timings[m] = (time.perf_counter() - t0) / (args.repeats * len(QUESTIONS))
    for m, t in timings.items():
        print(f"| {m} | {t:.3f} | {t / timings['origin']:.2f}× |")


if __name__ == "__main__":
    main()
