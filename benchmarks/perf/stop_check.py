"""Cost of the decode loop's stop check per step: the incremental TextWatch vs decoding the whole answer.

    python benchmarks/perf/stop_check.py [--lengths 16,64,256] [--answers 20] [--out FILE.json]

No model runs: answers are token sequences of real text (the embedded SmolLM2 tokenizer encoding
a long English passage, cut at each length), pushed one token at a time as the decode loop does,
with the default rule (a newline after some text; the passage has none, so no answer stops early).
Reported per length: µs per step for each way, and their ratio. Both ways must agree on every
answer (they do: the check is asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

PASSAGE = ("The capital of France is Paris, a city on the Seine that has been the seat of the French "
           "government for most of the last thousand years; its population is about two million people, "
           "and the wider region holds more than twelve million. ") * 8


def per_step_us(fn, answers: list[list[int]]) -> float:
    t0 = time.perf_counter()
    steps = 0
    for tokens in answers:
        fn(tokens)
        steps += len(tokens)
    return (time.perf_counter() - t0) / steps * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="16,64,256")
    parser.add_argument("--answers", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.models import load_tokenizer
    from selfensemble.engine.stopping import TextWatch, stop_text

    tok, gen = load_tokenizer(), GenerationConfig()
    ids = tok.encode(PASSAGE, add_special_tokens=False)
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        answers = [ids[i:i + length] for i in range(args.answers)]
        assert all(len(a) == length for a in answers), f"the passage is shorter than {length} + {args.answers}"

        def watched(tokens):
            watch = TextWatch(tok, gen)
            return [watch.push(tokens[:n]) for n in range(1, len(tokens) + 1)]

        def full(tokens):
            return [stop_text(tok.decode(tokens[:n], skip_special_tokens=True), gen)[1]
                    for n in range(1, len(tokens) + 1)]

        assert all(watched(a) == full(a) for a in answers)
        w, f = per_step_us(watched, answers), per_step_us(full, answers)
        rows.append({"length": length, "watch_us_per_step": round(w, 1), "full_decode_us_per_step": round(f, 1),
                     "full_over_watch": round(f / w, 2)})
        print(f"length {length:4d}: watch {w:7.1f} µs/step, full decode {f:7.1f} µs/step, ratio {f / w:.2f}")
    result = {"rows": rows, "answers_per_length": args.answers, "load_average": list(os.getloadavg()),
              "cpu_count": os.cpu_count()}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
