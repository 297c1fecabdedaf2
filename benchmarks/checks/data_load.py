"""How long the dataset loaders take (measured here, never asserted in tests: a busy CI box is slow).

    python benchmarks/checks/data_load.py            # prints a markdown table

Rows: a generated 1,000-item jsonl with a paraphrase column; WebQuestions test (all); ParaRel
limit 300 (the shared data folder's copies, skipped when absent). Best of 3 runs each.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from selfensemble.data import default_data_dir, load_dataset


def best_of(fn, runs: int = 3) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        n = len(fn().items)
        times.append(time.perf_counter() - t0)
    return min(times), n


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "big.jsonl"
        f.write_text("".join(json.dumps({"question": f"Question number {i}?", "answers": [str(i)],
                                         "para": [f"Q {i}?"]}) + "\n" for i in range(1000)))
        rows.append(("jsonl, 1000 generated items", *best_of(lambda: load_dataset("jsonl", f, paraphrase_columns="para"))))
    if default_data_dir() is not None:
        rows.append(("webqa test (all)", *best_of(lambda: load_dataset("webqa"))))
        rows.append(("pararel, limit 300", *best_of(lambda: load_dataset("pararel", limit=300))))
    print("| loader | items | seconds (best of 3) |\n|---|---:|---:|")
    for name, secs, n in rows:
        print(f"| {name} | {n} | {secs:.3f} |")


if __name__ == "__main__":
    main()
