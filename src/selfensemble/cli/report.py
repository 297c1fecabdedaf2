"""`report`: compare finished runs."""

from __future__ import annotations

from pathlib import Path

import typer

from selfensemble.cli.common import app


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (or folders of per-method runs)."),
    png: Path | None = typer.Option(None, help="Bar chart path (default: <first dir>/report.png)."),
):
    """Compare runs: accuracy with 95% intervals, per-prompt spread, paired differences, a bar chart."""
    from selfensemble.report import report as make_report

    make_report(list(run_dirs), png or Path(run_dirs[0]) / "report.png")
