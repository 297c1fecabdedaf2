"""`plan`: how many items a confirmatory run needs, from a dev run (analysis/plan.py computes)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from selfensemble.cli.common import app


@app.command()
def plan(
    run_dirs: list[Path] = typer.Argument(..., help="Dev run folders (or folders of per-method runs)."),
    effect: float = typer.Option(0.02, help="Difference to detect, as a share of items (0.02 = 2 points)."),
    power: float = typer.Option(0.8, help="Probability of detecting it."),
    family: Path | None = typer.Option(None, "--family", help="Family file (as for report): plan its "
                                       "comparisons under its alpha and Holm over its k tests (default: "
                                       "every McNemar comparison of the runs, as one family)."),
    scorer: str | None = typer.Option(None, help="exact | contains | f1 | partial (default: the family's, "
                                      "else each run's own --match)."),
    output_format: str = typer.Option("table", "--format", help="table | json"),
    width: int = typer.Option(100, "--width", min=40, help="Fit the table to this many characters."),
):
    """Items needed per cell so each family comparison detects --effect with --power (exact McNemar)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from selfensemble.analysis.plan import plan as make_plan
    from selfensemble.analysis.render import plan_lines, plan_tables
    from selfensemble.errors import SelfEnsembleError

    if output_format not in ("table", "json"):
        raise SelfEnsembleError(f"Unknown plan format {output_format!r}; use table or json.")
    result = make_plan(list(run_dirs), effect=effect, power=power, family=family, scorer=scorer)
    if output_format == "json":
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    console = Console()
    for title, headers, rows, *_ in plan_tables(result, width):
        t = Table(title=escape(title))
        for i, h in enumerate(headers):
            t.add_column(escape(h), justify="left" if i < 3 else "right", no_wrap=True)
        for r in rows:
            t.add_row(*(escape(c) for c in r))
        console.width = max(console.width, width)
        console.print(t, crop=False)
    for line in plan_lines(result, width):
        console.print(escape(line), soft_wrap=True)
