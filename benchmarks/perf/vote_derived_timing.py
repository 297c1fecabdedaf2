"""What deriving vote from per_prompt saves: wall time of per_prompt, of per_prompt + vote (vote
derived from per_prompt's answers), and of vote decoded alone, on the bundled trivia sample.

    python benchmarks/perf/vote_derived_timing.py smollm2-135m
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from selfensemble.config.engine import EngineConfig
from selfensemble.config.load import LoadSpec
from selfensemble.config.run import RunConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.models import load_model
from selfensemble.pipeline.experiment import SAMPLE_DATA, run_experiment


def main(model: str) -> None:
    torch.set_num_threads(1)
    engine = Engine(load_model(model), EngineConfig(attention="sdpa", batch_size=8))
    console = Console(file=io.StringIO())

    def timed(out: Path, methods: list[str]) -> float:
        cfg = RunConfig(dataset="jsonl", data_path=str(SAMPLE_DATA), num_paraphrases=5, few_shot=0,
                        load=LoadSpec(model=model),
                        dataset_options={"paraphrase_columns": ["paraphrases"], "id_column": "id"},
                        engine=engine.config, max_new_tokens=8, out=str(out), methods=methods)
        t0 = time.perf_counter()
        run_experiment(cfg, console, engine)
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        timed(Path(tmp) / "warm", ["per_prompt"])
        pp, both, vote = (timed(Path(tmp) / k, m) for k, m in
                          (("a", ["per_prompt"]), ("b", ["per_prompt", "vote"]), ("c", ["vote"])))
    print("| model | per_prompt s | per_prompt + vote (derived) s | vote decoded alone s |\n|---|---:|---:|---:|")
    print(f"| {model} | {pp:.2f} | {both:.2f} | {vote:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "random:llama")
