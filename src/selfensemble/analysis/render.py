"""The report as text: table cells, markdown, CSV and JSON (report.py computes, this module lays out,
cli/report.py draws the cells as rich tables). Nothing here prints.

Each table is (title, headers, rows of cells) built once and rendered by every format, so a new
column is one Column. Tables fit ``width`` characters (100 by default; None = every column): the
columns marked optional leave, least important first, until the table fits, and the report says
which left. Cells never wrap or truncate: names like 'flex [pararel-relations-…]' stay whole.
One table per (model, dataset) cell, so no cell repeats its model and dataset on every row.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from selfensemble.analysis.baselines import copy_cell
from selfensemble.analysis.costs import seconds_cell
from selfensemble.analysis.legend import legend_lines
from selfensemble.errors import SelfEnsembleError

FORMATS = ("table", "markdown", "csv", "json")
DEFAULT_WIDTH = 100


class Table(NamedTuple):
    title: str
    headers: list[str]
    rows: list[list[str]]
    left_out: tuple[str, ...] = ()  # optional columns left out to fit the width


@dataclass(frozen=True)
class Column:
    """A header, the cell of one row, and ``drop``: 0 = always shown, else the order in which optional
    columns leave a table too wide for its width (highest first)."""

    header: str
    cell: Callable[[dict], str]
    drop: int = 0


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _short(x: Any, digits: int = 3) -> str:
    """.325 rather than 0.325 (and -.012), for the columns of the narrow tables."""
    return "–" if x is None else re.sub(r"^([+-]?)0\.", r"\1.", f"{x:.{digits}f}")


def _signed(x: Any, short: bool = False) -> str:
    if x is None:
        return "–"
    text = f"{x:+.3f}"
    return re.sub(r"^([+-]?)0\.", r"\1.", text) if short else text


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:.1%}"


def _interval(mean: Any, low: Any, high: Any, short: bool = False) -> str:
    if mean is None:
        return "–"
    return f"{_signed(mean, short)} [{_signed(low, short)}, {_signed(high, short)}]"


def table_width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """Characters a boxed table of these cells takes: every column as wide as its widest cell plus
    ' | ' between columns and '| ' / ' |' at the edges (rich's default box and markdown alike)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    return sum(widths) + 3 * len(widths) + 1


def build(title: str, columns: Sequence[Column], items: Sequence[dict], width: int | None) -> Table:
    """The table of ``items`` under ``columns``, optional columns left out until it fits ``width``."""
    kept = list(columns)

    def cells(cols: Sequence[Column]) -> list[list[str]]:
        return [[c.cell(it) for c in cols] for it in items]

    while width is not None and table_width([c.header for c in kept], cells(kept)) > width:
        optional = [c for c in kept if c.drop > 0]
        if not optional:
            break  # names stay whole: a table whose fixed columns are wider than width stays wider
        kept.remove(max(optional, key=lambda c: (c.drop, kept.index(c))))
    left_out = tuple(c.header for c in columns if c not in kept)
    return Table(title, [c.header for c in kept], cells(kept), left_out)


# -- the tables --------------------------------------------------------------------------------


def _acc(r: dict) -> str:
    return f"{_fmt(r['accuracy'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"


def _avgp(r: dict) -> str:
    avg = r.get("avg_prompt_accuracy")
    return "–" if avg is None else f"{_fmt(avg)} ({_fmt(r['per_prompt_min'])}–{_fmt(r['per_prompt_max'])})"


SUMMARY_COLUMNS = [
    Column("method", lambda r: str(r.get("label") or r.get("name") or r["method"])),
    Column("n", lambda r: str(r["n"])),
    Column("accuracy [95% CI]", _acc),
    Column("EM/cont/F1/part", lambda r: "/".join(_short(r.get(k)) for k in ("exact_match", "contains", "token_f1",
                                                                                  "partial")), drop=3),
    Column("AvgP (min–max)", _avgp, drop=5),
    Column("echo", lambda r: _pct(r.get("echo_rate")), drop=1),
    Column("demo copy", copy_cell, drop=1),
    Column("consistency", lambda r: _fmt(r.get("consistency")), drop=4),
    Column("s/q", seconds_cell, drop=2),
]
SCORER_COLUMN = Column("scorer", lambda r: str(r.get("scorer") or "–"))


def _p_cell(r: dict) -> str:
    return "=" if r.get("not_tested") else _short(r.get("p_value"))


def _holm_cell(r: dict) -> str:
    """The adjusted p, starred when significant in its family: only the adjusted p decides."""
    p = r.get("p_holm")
    return "–" if p is None else f"{_short(p)}{' *' if r.get('significant') else ''}"


def _mde_cell(r: dict) -> str:
    if r.get("mde_80") is not None:
        return _short(r["mde_80"])
    if r.get("family") is None:
        return "–"
    if r.get("test") != "mcnemar":
        return "n/c"
    return "–" if r.get("discordance") is None else f">{_short(r['discordance'])}"


def _groups_cell(r: dict) -> str:
    return "–" if r.get("cluster_low") is None else f"[{_signed(r['cluster_low'], True)}, {_signed(r['cluster_high'], True)}]"


DIFF_COLUMNS = [
    Column("method", lambda r: str(r["method"])),
    Column("vs", lambda r: str(r.get("baseline") or "–")),
    Column("n", lambda r: str(r.get("n_paired", 0))),
    Column("Δ [95% CI]", lambda r: _interval(r.get("diff_mean"), r.get("diff_low"), r.get("diff_high"), short=True)),
    Column("groups 95% CI", _groups_cell, drop=3),
    Column("test", lambda r: {"mcnemar": "McNemar", "sign": "sign"}.get(r.get("test") or "", "="), drop=4),
    Column("p", _p_cell),
    Column("Holm p", _holm_cell),
    Column("fam.", lambda r: {"confirmatory": "conf", "exploratory": "expl"}.get(r.get("family") or "", "–")),
    Column("MDE", _mde_cell),
    Column("power", lambda r: _short(r.get("power"), 2), drop=1),
]

SENSITIVITY_COLUMNS = [
    Column("model, dataset", lambda r: f"{r.get('model')}, {r.get('dataset')}"),
    Column("from", lambda r: str(r["source"]), drop=5),
    Column("n", lambda r: str(r["n_items"])),
    Column("per prompt", lambda r: " ".join(_fmt(x) for x in r["per_prompt_accuracy"]), drop=4),
    Column("min–max", lambda r: f"{_fmt(r['min'])}–{_fmt(r['max'])}", drop=2),
    Column("std", lambda r: _fmt(r["std"]), drop=3),
    Column("MaxP", lambda r: _fmt(r["max_prompt_accuracy"])),
    Column("AvgP", lambda r: _fmt(r["avg_prompt_accuracy"])),
    Column("mean_single", lambda r: _fmt(r.get("mean_single"))),
    Column("CPS", lambda r: _fmt(r["cps"])),
    Column("consistency", lambda r: _fmt(r["consistency"]), drop=1),
    Column("disagree", lambda r: _pct(r["prompt_disagreement"]), drop=1),
]


def _cells_of(result: dict) -> list[tuple[Any, Any]]:
    """The (model, dataset) cells in report order."""
    return list(dict.fromkeys((r.get("model"), r.get("dataset")) for r in result["runs"]))


def _cell_title(result: dict, cell: tuple, what: str) -> str:
    """'<what> — model, dataset', with the cell's provenance flags when it has any."""
    prov = next((p for p in result.get("provenance") or [] if (p["model"], p["dataset"]) == cell), None)
    flags = f" [provenance: {', '.join(prov['flags'])}; see notes]" if prov and prov.get("flags") else ""
    return f"{what} — {cell[0]}, {cell[1]}{flags}"


def summary_tables(result: dict, width: int | None) -> list[Table]:
    """Accuracy by method, one table per cell; the scorer in the title when the cell has one."""
    out = []
    for cell in _cells_of(result):
        rows = [r for r in result["runs"] if (r.get("model"), r.get("dataset")) == cell]
        scorers = sorted({str(r.get("scorer")) for r in rows})
        cols = SUMMARY_COLUMNS if len(scorers) == 1 else [*SUMMARY_COLUMNS[:3], SCORER_COLUMN, *SUMMARY_COLUMNS[3:]]
        what = f"Accuracy (scorer {scorers[0]})" if len(scorers) == 1 and scorers[0] != "None" else "Accuracy"
        out.append(build(_cell_title(result, cell, what), cols, rows, width))
    return out


BASELINE_COLUMNS = [
    Column("dataset", lambda r: str(r["dataset"])),
    Column("baseline (no model)", lambda r: str(r["name"])),
    Column("n", lambda r: str(r["n"])),
    Column("accuracy", lambda r: _fmt(r.get("accuracy"))),
]


def baseline_tables(result: dict, width: int | None) -> list[Table]:
    """Rules that never read the question (analysis/baselines.py): what no model needs to know."""
    rows = result.get("no_model_baselines") or []
    return [build("No-model baselines (rules that never read the question)", BASELINE_COLUMNS, rows, width)] if rows else []


def comparison_tables(result: dict, width: int | None) -> list[Table]:
    """Paired differences, one table per cell, each test labelled with its family."""
    out = []
    for cell in _cells_of(result):
        rows = [r for r in result.get("comparisons") or [] if (r.get("model"), r.get("dataset")) == cell]
        if rows:
            out.append(build(_cell_title(result, cell, "Paired differences"), DIFF_COLUMNS, rows, width))
    return out


def sensitivity_tables(result: dict, width: int | None) -> list[Table]:
    rows = result.get("prompt_sensitivity") or []
    return [build("Prompt sensitivity (each prompt asked alone)", SENSITIVITY_COLUMNS, rows, width)] if rows else []


def tables(result: dict, width: int | None = DEFAULT_WIDTH) -> list[Table]:
    """Every table of a report result, each fitted to ``width`` (None: every column)."""
    out = summary_tables(result, width)
    out += baseline_tables(result, width)
    out += comparison_tables(result, width)
    out += sensitivity_tables(result, width)
    return out


def legend(result: dict, shown: Sequence[Table], width: int | None = DEFAULT_WIDTH,
           wrap: bool = True, also: Sequence[str] = ()) -> list[str]:
    """The definitions of the terms the shown tables (and the headers in ``also``) use, then which
    optional columns were left out to fit ``width``; lines wrapped to it when ``wrap``."""
    wrap_at = width if wrap else None
    headers = [h for t in shown for h in t[1]] + list(also)
    lines = legend_lines(headers, wrap_at, comparisons=bool(result.get("comparisons")))
    left = [f"{t[0].split(' — ')[0]}: {', '.join(t[3])}" for t in shown if len(t) > 3 and t[3]]
    if left:
        text = (f"left out to fit {width} columns (shown with --wide; every field is in --format json/csv): "
                + "; ".join(dict.fromkeys(left)) + ".")
        lines += _wrap(text, wrap_at)
    return lines


def _wrap(text: str, width: int | None) -> list[str]:
    import textwrap

    return [text] if width is None else textwrap.wrap(text, width=width, subsequent_indent="    ")


def notes(result: dict, width: int | None = DEFAULT_WIDTH) -> list[str]:
    """The report's notes, each wrapped to ``width``."""
    return [line for note in result.get("notes", []) for line in _wrap(f"note: {note}", width)]


def to_markdown(result: dict, width: int | None = DEFAULT_WIDTH) -> str:
    """The tables as GitHub markdown (names whole, '|' escaped), then the notes and the legend."""
    parts = []
    shown = tables(result, width)
    for title, headers, rows, *_ in shown:
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        parts.append("\n".join(lines))
    parts += [f"> {note}" for note in result.get("notes", [])]
    terms = legend(result, shown, width, wrap=False)
    if terms:
        parts.append("**Legend**\n\n" + "\n".join(f"- {line}" for line in terms))
    return "\n\n".join(parts) + "\n"


def _flat(row: dict) -> dict:
    """A run row for CSV: lists joined by ';', nested dicts (prompt_sensitivity) as prefixed columns."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_flat({f"{k}_{kk}": vv for kk, vv in v.items()}))
        elif isinstance(v, list):
            out[k] = ";".join(_fmt(x, 6) for x in v)
        else:
            out[k] = v
    return out


def to_csv(result: dict) -> str:
    """One CSV row per run with raw numbers (no rounding): the run's summary fields, then its paired
    comparisons': against the baseline prefixed ``cmp_``, against another side ``cmp_vs_<side>_``
    (``cmp_vs_mean_single_``, ``cmp_vs_avg_``). List fields (per-prompt accuracies) are joined with ';'."""
    import csv
    import io

    by_run: dict[tuple, dict] = {}  # (model, dataset, run label) -> {vs: comparison}
    for c in result["comparisons"]:
        by_run.setdefault((c.get("model"), c.get("dataset"), c["method"]), {})[c.get("baseline")] = c
    rows = []
    for run in result["runs"]:
        row = _flat(run)
        key = (run.get("model"), run.get("dataset"), run.get("label") or run.get("name"))
        for base, cmp in by_run.get(key, {}).items():
            prefix = "cmp_" if base == result["baseline"] else f"cmp_vs_{base}_"
            row.update({f"{prefix}{k}": v for k, v in cmp.items() if k not in ("method", "model", "dataset", "group")})
        rows.append(row)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def render(result: dict, fmt: str, width: int | None = DEFAULT_WIDTH) -> str:
    """The report as text in ``fmt`` ("markdown", "csv" or "json"; "table" is drawn by cli/report.py).
    ``width`` fits markdown tables like the terminal's; csv and json always hold every field."""
    if fmt == "markdown":
        return to_markdown(result, width)
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    raise SelfEnsembleError(f"Unknown report format {fmt!r}; use one of {', '.join(FORMATS)}.")


PLAN_COLUMNS = [
    Column("model, dataset", lambda r: f"{r.get('model')}, {r.get('dataset')}"),
    Column("method", lambda r: str(r["method"])),
    Column("vs", lambda r: str(r.get("vs"))),
    Column("n dev", lambda r: str(r.get("n_dev"))),
    Column("d", lambda r: _short(r.get("discordance"), 4)),
    Column("Δ dev", lambda r: _signed(r.get("observed_diff"), True), drop=1),
    Column("n formula", lambda r: _fmt(r.get("n_normal"))),
    Column("n exact", lambda r: _fmt(r.get("n_exact"))),
    Column("power at n dev", lambda r: _short(r.get("power_at_n_dev"), 2), drop=2),
]


def plan_tables(plan: dict, width: int | None = DEFAULT_WIDTH) -> list[Table]:
    """The planner's result (plan.plan) as one table: per comparison, the items it needs."""
    title = (f"Items needed for Δ = {plan['effect']:g} at power {plan['power']:g} (alpha {plan['alpha']:g} / k = "
             f"{plan['k']}, {plan['family']} family)")
    return [build(title, PLAN_COLUMNS, plan["comparisons"], width)]


def plan_lines(plan: dict, width: int | None = DEFAULT_WIDTH) -> list[str]:
    """What to read under the planner's table: the answer, the formula, and each row's note."""
    need = plan["n_needed"]
    lines = [f"needed: {need} items per cell (the largest n exact)" if need is not None
             else "needed: no comparison could be sized (see the notes)",
             "n formula = (z(1-a/2)·√d + z(power)·√(d − Δ²))² / Δ², a = alpha/k; n exact = the smallest n whose "
             "exact McNemar power reaches the target; d = dev discordance (share of items where exactly one "
             "side is right)."]
    lines += [f"declared but not in these runs (counted in k): {m}" for m in plan.get("missing") or []]
    lines += [f"{r['method']} vs {r['vs']} ({r['model']}, {r['dataset']}): {r['note']}"
              for r in plan["comparisons"] if r.get("note")]
    return [w for line in lines for w in _wrap(line, width)]


def calibration_cells(rows: Sequence[dict]) -> list[list[str]]:
    """The rows of report.calibration as table cells: method, n, ECE, mean confidence, accuracy."""
    return [[r["name"], str(r["n"]), _fmt(r["ece"]), _fmt(r["mean_confidence"]), _fmt(r["accuracy"])] for r in rows]
