"""`report`: compare finished runs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from selfensemble.cli.common import app
from selfensemble.errors import SelfEnsembleError


def check_format(fmt: str) -> str:
    """``fmt`` when it is a report format, else a one-line user error (before any run is read)."""
    from selfensemble.analysis.render import FORMATS

    if fmt not in FORMATS:
        raise SelfEnsembleError(f"Unknown report format {fmt!r}; use one of {', '.join(FORMATS)}.")
    return fmt


def show_report(result: dict, fmt: str = "table", console=None) -> None:
    """Render report.report's result: "table" as rich tables on ``console`` (the comparison, then
    calibration), "markdown" / "csv" / "json" as plain text on stdout (report_render.render)."""
    from rich.console import Console

    from selfensemble.analysis.render import render
    from selfensemble.analysis.report import ECE_BINS

    if check_format(fmt) == "table":
        console = console or Console()
        print_tables(result, console)
        calibration_table(result["calibration"], ECE_BINS, console)
    else:
        sys.stdout.write(render(result, fmt))


def print_tables(result: dict, console) -> None:
    """Rich tables whose cells never wrap or truncate: each column is as wide as its widest cell."""
    from rich.markup import escape
    from rich.table import Table

    from selfensemble.analysis.render import tables

    for title, headers, rows in tables(result):
        t = Table(title=title)
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        for i, (h, w) in enumerate(zip(headers, widths, strict=True)):
            t.add_column(h, justify="left" if i < 2 else "right", no_wrap=True, min_width=w)
        for r in rows:
            t.add_row(*(escape(c) for c in r))  # run names like 'flex [dir]' are not markup
        # as wide as the cells need, even past a narrow terminal: rich would otherwise squeeze or drop
        # columns (print(width=...) does not reach the table's own measuring, the console width does)
        narrow = console.width
        console.width = max(narrow, sum(widths) + 3 * len(widths) + 1)
        try:
            console.print(t, crop=False)
        finally:
            console.width = narrow
    for note in result.get("notes", []):
        console.print(f"note: {escape(note)}", soft_wrap=True)


def calibration_table(rows: list[dict], ece_bins: int, console) -> None:
    """The rows of report.calibration as a rich table (nothing when no run has confidences)."""
    if not rows:
        return
    from rich.markup import escape
    from rich.table import Table

    from selfensemble.analysis.render import calibration_cells

    t = Table(title=f"Calibration of the fused answer probability ({ece_bins} bins)")
    for i, h in enumerate(("method", "n", "ECE", "mean confidence", "accuracy")):
        t.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for name, *cells in calibration_cells(rows):
        t.add_row(escape(name), *cells)
    console.print(t)


def echo_outputs(result: dict) -> None:
    """Where the report's files went (stderr, so a piped markdown/csv/json stdout stays clean)."""
    if result.get("png"):
        typer.echo(f"wrote {result['png']} (chart) and {result['json']} (numbers)", err=True)
    if result.get("reliability_png"):
        typer.echo(f"wrote {result['reliability_png']} (reliability diagram)", err=True)
    if result.get("sensitivity_png"):
        typer.echo(f"wrote {result['sensitivity_png']} (accuracy per variant value, by dimension)", err=True)


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
    from selfensemble.analysis.report import check_scorer
    from selfensemble.analysis.report import report as make_report

    fmt = check_format(output_format or ("table" if sys.stdout.isatty() else "markdown"))
    check_scorer(scorer)  # before reading any run
    result = make_report(list(run_dirs), png or Path(run_dirs[0]) / "report.png", scorer=scorer)
    show_report(result, fmt)
    echo_outputs(result)
