"""`bench`: what fusing N paraphrases costs next to answering once (see benchmarks/README.md)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import typer

from selfensemble.cli.common import app, parse_list
from selfensemble.cli.config_flags import config_flags
from selfensemble.config import defaults
from selfensemble.config.engine import EngineConfig

#: The EngineConfig fields bench takes as they are (it sweeps --layouts and --batch-sizes instead).
BENCH_ENGINE_FLAGS = ("attention", "positions", "rescale", "fusion_temperature", "fusion_scale", "compile",
                      "prefix_cache_mb")


@app.command("bench")
@config_flags("engine_config", EngineConfig, only=BENCH_ENGINE_FLAGS)
def bench_command(
    model: str = typer.Option("smollm2-135m", help="Model spec (embedded default, hub id, path, random:<arch>)."),
    methods: str = typer.Option("origin,avg,flex", help="Comma-separated methods to time."),
    n: str | None = typer.Option(None, "--n", help="Comma-separated paraphrase counts (default: 5 on CPU, "
                                 "1,3,5,10 on CUDA)."),
    batch_sizes: str = typer.Option("1,8", help="Comma-separated engine batch sizes."),
    layouts: str = typer.Option(..., default_factory=defaults.layouts_default_first,
                                show_default=defaults.layouts_default_first(), help="flex layouts: shared,full."),
    questions: int = typer.Option(8, help="Questions per timed pass."),
    max_new_tokens: int = typer.Option(10, help="Answer length in tokens (newlines do not stop it)."),
    naive: bool = typer.Option(True, "--naive/--no-naive", help="Time the full-recompute baseline (slow)."),
    naive_questions: int = typer.Option(2, help="Questions for the naive baseline."),
    storm_questions: int = typer.Option(100, help="Questions for the compile-storm section (0: skip)."),
    paraphrase_writing: bool = typer.Option(True, "--paraphrase-writing/--no-paraphrase-writing",
                                            help="Time sampling 12 candidate paraphrases a question (two ways)."),
    demo_cost: bool = typer.Option(True, "--demo-cost/--no-demo-cost",
                               help="Time per-item against shared few-shot demonstrations (bundled ParaRel)."),
    compile_flex: bool = typer.Option(True, "--compile-flex/--eager-flex", help="torch.compile flex attention."),
    compare_compile: bool = typer.Option(False, "--compare-compile", help="Time every engine row twice, eager and "
                                         "compiled decode step, side by side."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16"),
    threads: int | None = typer.Option(None, help="torch CPU threads (1 is steadier on a busy machine)."),
    out: Path | None = typer.Option(None, help="Write the full result as JSON here."),
    tiny: bool = typer.Option(False, help="CI size: random:llama, 2 questions, N=2, 2 new tokens."),
    engine_config: EngineConfig = None,  # built from its flags by config_flags
) -> None:
    """Time the methods on one model: s/question, prefill tokens, compiles, memory, targets."""
    from selfensemble.bench import BenchConfig, default_ns, format_table, run_benchmark

    knobs = {k: getattr(engine_config, k) for k in BENCH_ENGINE_FLAGS if k != "compile"}
    compile_step = engine_config.compile
    options = dict(methods=tuple(parse_list(methods, "--methods")), batch_sizes=tuple(parse_list(batch_sizes, "--batch-sizes", int)),
                   layouts=tuple(parse_list(layouts, "--layouts")), **knobs, naive=naive,
                   naive_questions=naive_questions, compile_flex=compile_flex, device=device, dtype=dtype,
                   threads=threads, paraphrase_section=paraphrase_writing, demos_section=demo_cost,
                   decode_modes=("eager", "compiled") if compare_compile else ("compiled",) if compile_step else ("eager",))
    if tiny:
        config = BenchConfig.tiny(**options, **({"ns": tuple(parse_list(n, "--n", int))} if n else {}),
                                  storm_questions=min(storm_questions, 10))
    else:
        config = BenchConfig(model=model, ns=tuple(parse_list(n, "--n", int)) if n else default_ns(device), questions=questions,
                             max_new_tokens=max_new_tokens, storm_questions=storm_questions, **options)
    with _progress_on_stderr():
        result = run_benchmark(config)
    typer.echo(format_table(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}", err=True)


@contextlib.contextmanager
def _progress_on_stderr():
    """The bench's progress log (logger ``selfensemble.bench``) as '[bench] …' lines on stderr."""
    from selfensemble.bench.sections import LOG

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[bench] %(message)s"))
    level, propagate = LOG.level, LOG.propagate
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # shown once, here
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(level)
        LOG.propagate = propagate
