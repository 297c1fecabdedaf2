"""Benchmark: what fusing N paraphrases costs next to answering the original question once.

Why a subpackage and not only ``benchmarks/``: ``selfensemble bench`` must work from an installed
wheel, and ``benchmarks/`` is not installed. So the whole benchmark lives here, one module per job,
apart from the engine (nothing in the library imports it):

  config.py     BenchConfig: what one run measures
  questions.py  the questions, read through ``data.load_dataset``; template paraphrases
  timing.py     timing one call (wall time, compiles, peak memory) and the environment
  sections.py   the sections: engine, naive, prefix, storm, batching
  paraphrase_writing.py  the cost of sampling candidate paraphrases, next to answering
  demos.py      per-item vs shared few-shot demonstrations (prefix reuse lost, what it costs)
  targets.py    the project's speed targets, judged met / missed / not measured
  tables.py     the result as markdown

``benchmarks/`` keeps the reading guide (README.md with the tables), GPU scripts and reproducers.
Heavy imports (torch, transformers) happen inside functions so ``selfensemble --help`` stays fast.
The command lives in ``selfensemble.cli.bench``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from selfensemble.bench.config import BenchConfig, default_ns
from selfensemble.bench.demos import demo_rows
from selfensemble.bench.paraphrase_writing import paraphrase_rows
from selfensemble.bench.questions import MAX_N, load_questions, make_queries, paraphrases
from selfensemble.bench.sections import (
    add_ratios,
    batching_rows,
    engine_rows,
    hf_generate_row,
    naive_rows,
    prefix_rows,
    progress,
    storm_section,
)
from selfensemble.bench.tables import format_table
from selfensemble.bench.targets import targets
from selfensemble.bench.timing import environment

__all__ = ["MAX_N", "BenchConfig", "default_ns", "format_table", "load_questions", "make_queries", "paraphrases",
           "run_benchmark"]


def run_benchmark(config: BenchConfig) -> dict:
    """Run every section on one loaded model; returns a JSON-serialisable dict (see module doc)."""
    import torch

    from selfensemble.config.load import LoadSpec
    from selfensemble.engine.attention import dispatch as attn
    from selfensemble.engine.factory import load
    from selfensemble.engine.prompts import build_parts

    saved, attn.COMPILE_FLEX = attn.COMPILE_FLEX, config.compile_flex
    saved_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        t0 = time.perf_counter()
        lm = load(LoadSpec(config.model, device=config.device, dtype=config.dtype, seed=config.seed))
        load_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        qs = load_questions(config.questions, config.few_shot, config.data_dir, config.seed)
        questions_load_seconds = time.perf_counter() - t1
        sample = build_parts(lm.tokenizer, qs.fmt, paraphrases(qs.questions[0], config.target_n))
        progress(f"{lm.spec} on {lm.device} ({load_seconds:.1f} s to load); questions: {qs.source}")
        rows, answers = engine_rows(lm, qs, config)
        if config.hf_reference:
            rows.insert(0, hf_generate_row(lm, qs, config))
        add_ratios(rows)
        result: dict[str, Any] = {
            "config": asdict(config), "environment": environment(lm), "load_seconds": load_seconds,
            "questions_load_seconds": questions_load_seconds,
            "questions_source": qs.source, "compile_flex": config.compile_flex,
            "prompt_tokens": {"prefix": len(sample.prefix), "first_prompt": len(sample.full(0)),
                              "segments": [len(s) for s in sample.segments]},
            "rows": rows,
            "naive": naive_rows(lm, qs, config, rows, answers) if config.naive else [],
            "prefix": prefix_rows(lm, qs, config) if config.prefix_section else [],
            "batching": batching_rows(rows),
            "paraphrase_writing": paraphrase_rows(lm, qs, config, rows) if config.paraphrase_section else [],
            "demos": demo_rows(lm, config) if config.demos_section else [],
        }
        result["storm"] = storm_section(lm, qs, config)
        result["targets"] = targets(result, config)
        return result
    finally:
        attn.COMPILE_FLEX = saved
        torch.set_num_threads(saved_threads)
