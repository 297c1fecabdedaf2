"""The report on the checked-in confirmatory runs (old run folders, written by earlier versions):
they still open, their numbers are the published ones, and the tables fit 100 columns with a legend
that defines every term they use."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from rich.console import Console

from selfensemble.analysis.legend import TERMS
from selfensemble.analysis.render import (
    DIFF_COLUMNS,
    SENSITIVITY_COLUMNS,
    SUMMARY_COLUMNS,
    table_width,
    tables,
)
from selfensemble.analysis.report import report
from selfensemble.cli.report import show_report

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "confirm" / "runs.tar.gz"


@pytest.fixture(scope="module")
def confirm_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("confirm")
    with tarfile.open(RUNS) as tar:
        tar.extractall(out, filter="data")
    cells = sorted(p for p in (out / "confirm-runs").glob("*/*") if p.is_dir())
    return report(cells, family=ROOT / "benchmarks" / "results" / "confirm" / "confirm_v1.json")


def _by(result: dict) -> dict:
    return {(r["model"], r["dataset"], r["method"], r["baseline"]): r for r in result["comparisons"]}


def test_old_confirm_run_folders_open_with_their_published_numbers(confirm_result):
    runs = {(r["model"], r["dataset"], r["method"]): r for r in confirm_result["runs"]}
    assert len(runs) == 28
    assert runs["smollm2-135m", "pararel", "flex"]["accuracy"] == pytest.approx(111 / 403)  # .275
    assert runs["gemma3-270m", "pararel", "per_prompt"]["avg_prompt_accuracy"] == pytest.approx(0.305, abs=5e-4)
    assert runs["gemma3-270m", "pararel", "per_prompt"]["mean_single"] == pytest.approx(0.330, abs=5e-4)
    flex = _by(confirm_result)["smollm2-135m", "pararel", "flex", "origin"]
    assert (flex["n_better"], flex["n_worse"]) == (11, 1) and flex["p_value"] == pytest.approx(26 / 4096)
    assert flex["family"] == "confirmatory" and flex["family_size"] == 12
    assert _by(confirm_result)["smollm2-135m", "pararel", "per_prompt", "origin"]["p_value"] is None
    flags = {(c["model"], c["dataset"]): c["flags"] for c in confirm_result["provenance"]}
    assert "mixed" in flags["gemma3-270m", "pararel"] and "dirty" in flags["gemma3-270m", "jsonl"]


def test_report_tables_fit_100_columns_with_a_legend_for_every_term(confirm_result):
    buf = io.StringIO()
    show_report(confirm_result, "table", Console(file=buf, width=80))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    shown = {h for t in tables(confirm_result, 100) for h in t[1]}
    assert {"MDE", "Holm p", "fam.", "MaxP", "AvgP", "mean_single", "CPS", "demo copy", "echo"} <= shown
    assert shown <= set(TERMS)
    legend = text[text.index("legend:"):]
    for term in [*shown, "sign test", "McNemar", "ECE"]:
        assert f"\n{term}: " in legend, term
    flat = " ".join(legend.split())  # the note wraps at the console width
    assert "left out to fit 100 columns" in flat and "groups 95% CI" in flat
    wide = io.StringIO()
    show_report(confirm_result, "table", Console(file=wide, width=80), width=0)
    assert max(len(line) for line in wide.getvalue().splitlines()) > 100 and "groups 95% CI" in wide.getvalue()
    for title, headers, rows, _left_out in tables(confirm_result, 80):  # --width 80: optional columns leave
        optional = {c.header for c in (*SUMMARY_COLUMNS, *DIFF_COLUMNS, *SENSITIVITY_COLUMNS) if c.drop}
        assert table_width(headers, rows) <= 80 or optional & set(headers) == set(), title
