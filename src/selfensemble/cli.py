"""Command-line interface: thin wrappers over the library; heavy imports happen inside commands."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer

from selfensemble.errors import SelfEnsembleError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Ask one question through N paraphrases and fuse them into one answer.")

MODEL_HELP = "smollm2-135m (embedded default), a hub id, a local folder, a .gguf path, or random:<arch>."
ATTENTION_HELP = ("flex (compiled FlexAttention) | sdpa (same mask, dense) | auto (flex, loud fallback to sdpa). "
                  "Default: sdpa on CPU, auto on CUDA.")
METHOD_HELP = "origin | per_prompt | vote | avg | max | weighted_avg | weighted_max | flex"


def _parse_floats(text: str | None, what: str) -> list[float | None]:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise SelfEnsembleError(f"{what} must be comma-separated numbers, got {text!r}.") from err


def _engine(model: str, device: str, dtype: str, attention: str, layout: str, positions: str,
            rescale: bool = False, batch_size: int = 8, seed: int = 0):
    from selfensemble.methods import Engine, EngineConfig
    from selfensemble.models import load_model

    cfg = EngineConfig(attention=attention, layout=layout, positions=positions, rescale=rescale,
                       batch_size=batch_size)
    return Engine(load_model(model, device=device, dtype=dtype, seed=seed), cfg)


@app.command()
def ask(
    question: str = typer.Argument(..., help="The original question (prompt 0)."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", "-p", help="A paraphrase (repeatable)."),
    method: str = typer.Option("flex", "--method", "-m", help=METHOD_HELP),
    model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16"),
    max_new_tokens: int = typer.Option(16, help="Longest answer in tokens."),
    weights: str | None = typer.Option(None, help="Per-prompt weights for weighted_* methods, e.g. 1,0.5,0.8"),
    layout: str = typer.Option("shared", help="flex layout: shared (one prefix) | full (prefix per paraphrase)"),
    positions: str = typer.Option("restart", help="flex positions: restart | right | sequential"),
    attention: str = typer.Option(None, help=ATTENTION_HELP),
    rescale: bool = typer.Option(False, help="flex: down-weight paraphrase keys by 1/N for fusion tokens."),
    few_shot: bool = typer.Option(True, help="Prefix generic few-shot Q/A examples."),
    chat: bool = typer.Option(False, help="Wrap the prompt in the model's chat template."),
    sample: bool = typer.Option(False, help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0),
    top_p: float = typer.Option(1.0),
    top_k: int = typer.Option(0),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Answer QUESTION, fused over its paraphrases."""
    from selfensemble.decoding import GenerationConfig
    from selfensemble.methods import check_method
    from selfensemble.prompts import default_format

    check_method(method)
    prompts = [question, *paraphrase]
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature,
                           top_p=top_p, top_k=top_k, seed=seed)
    engine = _engine(model, device, dtype, attention, layout, positions, rescale, seed=seed)
    t0 = time.perf_counter()
    ans = engine.answer(prompts, method, gen, default_format(few_shot, chat), _parse_floats(weights, "--weights"))
    seconds = time.perf_counter() - t0
    if as_json:
        out = {"answer": ans.answer, "method": method, "prompts": ans.prompts, "per_prompt": ans.per_prompt,
               "generation": ans.generation, "prob": ans.prob, "finish": ans.finish, "seconds": seconds,
               "attention": ans.attention, "model": model, "notes": ans.notes}
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    from rich.console import Console

    console = Console()
    for note in ans.notes:
        console.print(f"[yellow]note:[/] {note}")
    if ans.per_prompt is not None:
        for p, a in zip(ans.prompts, ans.per_prompt, strict=True):
            console.print(f"  [dim]{p}[/] → {a}")
    console.print(f"[bold]{ans.answer}[/]  [dim]({method}, p={ans.prob:.3f}, {seconds:.2f}s, {ans.attention})[/]")


@app.command()
def mask(
    question: str = typer.Argument(..., help="The original question."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", "-p"),
    out: Path = typer.Option(Path("mask.png"), help="PNG to write."),
    layout: str = typer.Option("shared"),
    positions: str = typer.Option("restart"),
    few_shot: bool = typer.Option(False, help="Include the generic few-shot prefix (makes a big picture)."),
    model: str = typer.Option("smollm2-135m", help="Whose tokenizer to use. " + MODEL_HELP),
):
    """Draw the flex attention mask for QUESTION and its paraphrases."""
    from selfensemble.maskplot import layout_row, plot_mask
    from selfensemble.models import load_tokenizer
    from selfensemble.prompts import default_format

    row = layout_row(load_tokenizer(model), [question, *paraphrase], default_format(few_shot), layout, positions)
    path = plot_mask(row, out, title=f"flex mask, layout={layout}, positions={positions}")
    typer.echo(f"wrote {path} ({len(row.tokens)} prompt tokens)")


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (or folders of per-method runs)."),
    png: Path | None = typer.Option(None, help="Bar chart path (default: <first dir>/report.png)."),
):
    """Compare runs: accuracy with 95% intervals, per-prompt spread, paired differences, a bar chart."""
    from selfensemble.report import report as make_report

    make_report(list(run_dirs), png or Path(run_dirs[0]) / "report.png")


def _register_optional_commands() -> None:
    """Commands whose modules are large live in their own modules; register them here."""
    from selfensemble import experiment
    from selfensemble.bench import bench_command

    experiment.register(app)
    app.command("bench", help="Benchmark methods: s/question, prefill tokens, memory, compiles.")(bench_command)


def main() -> None:
    """Entry point: user errors become one line on stderr, never a traceback."""
    _register_optional_commands()
    debug = os.environ.get("SELFENSEMBLE_DEBUG") == "1"
    try:
        app(standalone_mode=False)
    except SelfEnsembleError as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted (results written so far are kept; rerun to resume)", err=True)
        sys.exit(130)
    except Exception as err:  # click usage errors and anything unexpected
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        if debug:
            raise
        typer.echo(f"internal error: {type(err).__name__}: {err} (set SELFENSEMBLE_DEBUG=1 for a traceback)",
                   err=True)
        sys.exit(1)
