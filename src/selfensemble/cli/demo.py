"""`demo`: prompt sensitivity and what each method does about it, on the bundled ParaRel sample."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from selfensemble.cli.common import app
from selfensemble.pipeline.demo import DEFAULT_LIMIT, DEFAULT_MAX_NEW_TOKENS


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for the runs, the report and demo.json."),
    limit: int = typer.Option(DEFAULT_LIMIT, help="Facts to ask (taken round-robin over the sample's 5 relations)."),
    num_paraphrases: int = typer.Option(5, help="Prompts per fact (N): ParaRel's own templates."),
    model: str = typer.Option("smollm2-135m"),
    max_new_tokens: int = typer.Option(DEFAULT_MAX_NEW_TOKENS),
):
    """How much the answer depends on the phrasing, and what each method does about it, at what cost."""
    from rich.console import Console

    from selfensemble.analysis.report import report
    from selfensemble.cli.progress import ConsoleProgress
    from selfensemble.cli.report import show_report
    from selfensemble.cli.run import graceful_stop
    from selfensemble.pipeline import demo
    from selfensemble.pipeline.experiment import run_experiment

    console = Console()
    cfg = demo.demo_config(out, limit, num_paraphrases, model, max_new_tokens)
    minutes = demo.expected_seconds(limit, num_paraphrases) / 60
    console.print(f"[bold]demo[/]: {limit} facts of the bundled ParaRel sample (5 relations, human-written templates), "
                  f"each asked through N={num_paraphrases} templates, methods {', '.join(demo.DEMO_METHODS)}, "
                  f"model {model}.\nExpected run time: about {minutes:.0f} minutes on 2 free CPU cores, longer on a busy machine "
                  f"(resumable: rerun the same command after an interruption). Output: {out}/")
    timing: dict = {}

    def time_methods(engine, queries) -> None:
        with console.status(f"timing each method: {demo.DEFAULT_ROUNDS} interleaved rounds of "
                            f"{min(demo.DEFAULT_FACTS, len(queries))} facts…"):
            timing.update(demo.time_demo_methods(engine, queries, cfg))

    with graceful_stop():
        run_experiment(cfg, progress=ConsoleProgress(console), then=time_methods)
    result = report([out], out / "report.png")
    show_report(result, console=console)
    summary = demo.summarize_demo(out, result, timing or None)
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    _print_summary(console, summary)


def _print_summary(console, summary: dict) -> None:
    from rich.table import Table

    s = summary["sensitivity"]
    if s.get("n"):
        accs = "  ".join(f"{a:.2f}" for a in s["per_prompt_accuracy"])
        console.print(f"\n[bold]Prompt sensitivity[/] ({s['n']} facts, {s['prompts']:.1f} prompts each): accuracy of "
                      f"each prompt alone {accs} (spread {s['spread']:.2f}); the prompts disagree on the answer "
                      f"for {s['disagree_share']:.0%} of the facts, and {s['mixed_share']:.0%} are right through "
                      f"some prompts and wrong through others ({s['any_right_share']:.0%} right through at least one).")
    t = Table(title="What each method does about it, and at what cost")
    for i, h in enumerate(("method", "accuracy [95% CI]", "vs origin", "s/fact (min–max)", "cost × origin (min–max)",
                           "consistency")):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in summary["methods"]:
        ci = r["ci"]
        t.add_row(r["method"], _num(r["accuracy"]) + (f" [{_num(ci[0])}, {_num(ci[1])}]" if None not in ci else ""),
                  _num(r["vs_origin"], signed=True), _ranged(r["seconds_per_item"], r["seconds_range"], 3),
                  _ranged(r["cost_x_origin"], r["cost_range"], 2, "×"), _num(r["consistency"]))
    console.print(t)
    console.print(_timing_line(summary.get("timing")), soft_wrap=True)
    files = summary["files"]
    console.print("[bold]Where everything went[/]:")
    for method, path in files["runs"].items():
        console.print(f"  {path}/  {method}: results.jsonl (one line per fact), metrics.json, manifest.json")
    for key, what in (("png", "accuracy chart"), ("reliability_png", "reliability diagram"),
                      ("json", "report numbers"), ("demo", "this summary")):
        if key in files:
            console.print(f"  {files[key]}  {what}")


def _timing_line(timing: dict | None) -> str:
    """How the cost columns were measured, and a warning when the machine was busy meanwhile."""
    if not timing:
        return ("[dim]costs: each method's mean seconds per fact in its own run (one figure per method, "
                "timed minutes apart: a busy spell in one run moves its figure)[/]")
    line = (f"[dim]costs: median of {timing['rounds']} interleaved rounds of {timing['facts']} facts per method "
            "(min–max of the rounds in brackets); × origin is the median of the per-round ratios; vote decodes "
            "nothing of its own and shows per_prompt's time[/]")
    if timing.get("warning"):
        line += f"\n[yellow]warning:[/] {timing['warning']}"
    return line


def _ranged(x, span, digits: int, unit: str = "") -> str:
    """'0.412 (0.398–0.455)' — a median with the min–max of its samples, or the lone figure."""
    if x is None:
        return "–"
    if not span or None in span:
        return f"{x:.{digits}f}{unit}"
    return f"{x:.{digits}f}{unit} ({span[0]:.{digits}f}–{span[1]:.{digits}f})"


def _num(x, digits: int = 3, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
