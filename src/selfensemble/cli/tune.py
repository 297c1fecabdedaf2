"""`tune-weights`: per-prompt weights fit on a dev run, for weighted_* and select in a test run."""

from __future__ import annotations

from pathlib import Path

import typer

from selfensemble.cli.common import app


@app.command("tune-weights")
def tune_weights_command(
    run_dir: Path = typer.Argument(..., help="A dev run with per-prompt answers (a per_prompt run, or the folder of "
                                   "a --methods run holding one)."),
    out: Path = typer.Option(Path("weights.json"), help="Where the weights file goes."),
    scorer: str = typer.Option(None, help="Score each prompt's answer with exact | contains | f1 | partial "
                               "(default: the run's own --match)."),
):
    """Fit per-prompt weights on a dev run (per relation and template; per prompt position for model-written
    paraphrases): each prompt's Laplace-smoothed dev accuracy, normalised. Use the file in a test run with
    `run --weights FILE` (weighted_avg, weighted_max, select)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from selfensemble.pipeline.tuning import fit_weights, write_weights
    from selfensemble.store.records import check_scorer

    check_scorer(scorer)
    weights = fit_weights(run_dir, scorer=scorer)
    path = write_weights(weights, out)
    console = Console()
    table = Table(title=f"Dev-tuned prompt weights ({weights['fit']['items']} items, scorer "
                        f"{weights['fit'].get('scorer') or '–'})")
    for i, h in enumerate(("group", "by", "prompts", "best prompt", "its dev accuracy", "n")):
        table.add_column(h, justify="left" if i < 4 else "right", no_wrap=i != 3)
    for group, entry in weights["groups"].items():
        best = entry["prompts"][entry["best"]]
        table.add_row(escape(group or "(one pool)"), entry["key"], str(len(entry["prompts"])), escape(entry["best"]),
                      f"{best['accuracy']:.3f}", str(best["n"]))
    console.print(table)
    typer.echo(f"wrote {path}", err=True)
