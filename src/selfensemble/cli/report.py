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


def show_report(result: dict, fmt: str = "table", console=None, width: int | None = None) -> None:
    """Render report.report's result: "table" as rich tables on ``console`` (the comparison, then
    calibration, the notes and the legend), "markdown" / "csv" / "json" as plain text on stdout
    (render.render). Tables fit ``width`` characters (default render.DEFAULT_WIDTH; 0 = every column)."""
    from rich.console import Console

    from selfensemble.analysis.render import DEFAULT_WIDTH, render
    from selfensemble.analysis.report import ECE_BINS

    width = DEFAULT_WIDTH if width is None else (width or None)
    if check_format(fmt) == "table":
        console = console or Console()
        print_tables(result, console, width)
        calibration_table(result["calibration"], ECE_BINS, console)
        print_legend(result, console, width)
    else:
        sys.stdout.write(render(result, fmt, width))


def print_tables(result: dict, console, width: int | None = None) -> None:
    """Rich tables whose cells never wrap or truncate: each column is as wide as its widest cell, and
    each table fits ``width`` by leaving out optional columns (render.tables)."""
    from rich.markup import escape
    from rich.table import Table

    from selfensemble.analysis.render import tables

    for title, headers, rows, *_ in tables(result, width):
        t = Table(title=escape(title))
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        for i, (h, w) in enumerate(zip(headers, widths, strict=True)):
            t.add_column(escape(h), justify="left" if i < 2 else "right", no_wrap=True, min_width=w)
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


def print_legend(result: dict, console, width: int | None = None) -> None:
    """The notes and the legend of the printed tables, wrapped to ``width``."""
    from rich.markup import escape

    from selfensemble.analysis.render import legend, notes, tables

    for line in notes(result, width):
        console.print(escape(line), soft_wrap=True)
    lines = legend(result, tables(result, width), width, also=["ECE"] if result.get("calibration") else [])
    if lines:
        console.print("legend:", soft_wrap=True)
        for line in lines:
            console.print(escape(line), soft_wrap=True)


def calibration_table(rows: list[dict], ece_bins: int, console) -> None:
    """The rows of report.calibration as a rich table (nothing when no run has confidences)."""
    if not rows:
        return
    from rich.markup import escape
    from rich.table import Table

    from selfensemble.analysis.render import calibration_cells

    t = Table(title=f"Calibration of the fused answer probability ({ece_bins} bins)")
    headers, cells = ("method", "n", "ECE", "mean confidence", "accuracy"), calibration_cells(rows)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for i, (h, w) in enumerate(zip(headers, widths, strict=True)):
        t.add_column(h, justify="left" if i == 0 else "right", no_wrap=True, min_width=w)
    for name, *rest in cells:
        t.add_row(escape(name), *rest)
    narrow = console.width  # never squeezed by a narrow (or non-terminal, 80-column) console
    console.width = max(narrow, sum(widths) + 3 * len(widths) + 1)
    try:
        console.print(t, crop=False)
    finally:
        console.width = narrow


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
                                      "(default: each run's own --match, or the family's). All four are shown."),
    family: Path | None = typer.Option(None, "--family", help="JSON file naming the confirmatory comparisons, "
                                       "scorer and alpha, fixed before the run (docs/statistics.md); Holm over "
                                       "exactly those, every other test exploratory."),
    wide: bool = typer.Option(False, "--wide", help="Every column, however wide the tables get."),
    width: int | None = typer.Option(None, "--width", min=40, help="Fit tables to this many characters "
                                     "(default 100); optional columns leave, and the legend says which."),
):
    """Compare runs: accuracy under four scorers with 95% intervals, prompt sensitivity (MaxP, AvgP,
    mean_single, CPS), paired differences with Holm-adjusted p per family, MDE and power, a bar chart."""
    from selfensemble.analysis.report import report as make_report
    from selfensemble.analysis.report import resolve_family

    fmt = check_format(output_format or ("table" if sys.stdout.isatty() else "markdown"))
    if wide and width is not None:
        raise SelfEnsembleError("--wide shows every column; --width fits a width: give one of them.")
    fam, scorer = resolve_family(family, scorer)  # before reading any run
    result = make_report(list(run_dirs), png or Path(run_dirs[0]) / "report.png", scorer=scorer, family=fam)
    show_report(result, fmt, width=0 if wide else width)
    echo_outputs(result)
