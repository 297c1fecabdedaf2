"""`report`: compare finished runs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from selfensemble.cli.common import app
from selfensemble.errors import SelfEnsembleError


def check_format(fmt: str) -> str:
    """``fmt`` when it is a report format, else a one-line user error (before any run is read)."""
    from selfensemble.report_render import FORMATS

    if fmt not in FORMATS:
        raise SelfEnsembleError(f"Unknown report format {fmt!r}; use one of {', '.join(FORMATS)}.")
    return fmt


def show_report(result: dict, fmt: str = "table", console=None) -> None:
    """Render report.report's result: "table" as rich tables on ``console`` (the comparison, then
    calibration), "markdown" / "csv" / "json" as plain text on stdout (report_render.render)."""
    from selfensemble.report import ECE_BINS
    from selfensemble.report_render import calibration_table, print_tables, render

    if check_format(fmt) == "table":
        print_tables(result, console)
        calibration_table(result["calibration"], ECE_BINS, console)
    else:
        sys.stdout.write(render(result, fmt))


def echo_outputs(result: dict) -> None:
    """Where the report's files went (stderr, so a piped markdown/csv/json stdout stays clean)."""
    if result.get("png"):
        typer.echo(f"wrote {result['png']} (chart) and {result['json']} (numbers)", err=True)
    if result.get("reliability_png"):
        typer.echo(f"wrote {result['reliability_png']} (reliability diagram)", err=True)


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (or folders of per-method runs)."),
    png: Path | None = typer.Option(None, help="Bar chart path (default: <first dir>/report.png)."),
    output_format: str | None = typer.Option(None, "--format", help="table | markdown | csv | json "
                                      "(default: table on a terminal, markdown when piped)."),
    scorer: str | None = typer.Option(None, help="Headline score of every table: exact | contains | f1 | partial "
                                      "(default: each run's own --match). All four are shown either way."),
):
    """Compare runs: accuracy under four scorers with 95% intervals, per-prompt spread and prompt
    sensitivity, paired differences with Holm-adjusted p, a bar chart."""
    from selfensemble.report import check_scorer
    from selfensemble.report import report as make_report

    fmt = check_format(output_format or ("table" if sys.stdout.isatty() else "markdown"))
    check_scorer(scorer)  # before reading any run
    result = make_report(list(run_dirs), png or Path(run_dirs[0]) / "report.png", scorer=scorer)
    show_report(result, fmt)
    echo_outputs(result)
