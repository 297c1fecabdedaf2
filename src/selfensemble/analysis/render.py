"""The report as text: table cells, markdown, CSV and JSON (report.py computes, this module lays out,
cli/report.py draws the cells as rich tables). Nothing here prints.

Each table is (title, headers, rows of cells) built once and rendered by every format, so a new
column is one header plus one cell. Cells never wrap or truncate: names like
'flex [pararel-relations-…]' stay whole in a narrow terminal as in markdown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from selfensemble.analysis.costs import seconds_cell
from selfensemble.errors import SelfEnsembleError

FORMATS = ("table", "markdown", "csv", "json")
ALPHA = 0.05  # a difference is marked significant when its Holm-adjusted p is below this


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _signed(x: Any) -> str:
    return "–" if x is None else f"{x:+.3f}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:.1%}"


def _interval(mean: Any, low: Any, high: Any) -> str:
    return "–" if mean is None else f"{_signed(mean)} [{_signed(low)}, {_signed(high)}]"


_SUMMARY_HEADERS = ["method", "n", "accuracy [95% CI]", "scorer", "exact / contains / F1 / partial",
                    "per-prompt mean (min–max)", "echo", "demo copy", "consistency", "s/question"]


def _summary_cells(row: dict) -> list[str]:
    acc = f"{_fmt(row['accuracy'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
    scorers = " / ".join(_fmt(row.get(k)) for k in ("exact_match", "contains", "token_f1", "partial"))
    pp = ("–" if row.get("per_prompt_mean") is None else
          f"{_fmt(row['per_prompt_mean'])} ({_fmt(row['per_prompt_min'])}–{_fmt(row['per_prompt_max'])})")
    return [str(row.get("name", row["method"])), str(row["n"]), acc, str(row.get("scorer") or "–"), scorers, pp,
            _pct(row.get("echo_rate")), _pct(row.get("demo_copy_rate")), _fmt(row.get("consistency")),
            seconds_cell(row)]


_DIFF_HEADERS = ["method", "vs", "n", "Δ accuracy [95% CI]", "groups [95% CI]", "McNemar p", "Holm p",
                 "vs mean single prompt [95% CI]", "sign-test p", "sign-test Holm p"]


def _p_holm(p: Any) -> str:
    """The adjusted p, starred when significant: only the adjusted p decides."""
    return "–" if p is None else f"{p:.3f}{' *' if p < ALPHA else ''}"


def _diff_cells(row: dict) -> list[str]:
    cluster = ("–" if row.get("cluster_low") is None else
               f"[{_signed(row['cluster_low'])}, {_signed(row['cluster_high'])}] ({row['n_groups']} groups)")
    vs_single = ("–" if row.get("vs_single_mean") is None else
                 f"{_interval(row['vs_single_mean'], row['vs_single_low'], row['vs_single_high'])} "
                 f"(n={row['vs_single_n']})")
    group = row.get("group")
    method = row["method"] if not group else f"{row['method']} ({group})"
    return [method, str(row.get("baseline") or "–"), str(row.get("n_paired", 0)),
            _interval(row.get("diff_mean"), row.get("diff_low"), row.get("diff_high")), cluster,
            _fmt(row.get("mcnemar_p")), _p_holm(row.get("mcnemar_p_holm")), vs_single, _fmt(row.get("vs_single_p")),
            _p_holm(row.get("vs_single_p_holm"))]


_SENSITIVITY_HEADERS = ["model, dataset", "prompts from", "n", "accuracy per prompt", "min–max", "std",
                        "MaxP", "AvgP", "CPS", "consistency", "prompts disagree"]


def _sensitivity_cells(row: dict) -> list[str]:
    per = " ".join(_fmt(x) for x in row["per_prompt_accuracy"])
    return [f"{row.get('model')}, {row.get('dataset')}", str(row["source"]), str(row["n_items"]), per,
            f"{_fmt(row['min'])}–{_fmt(row['max'])}", _fmt(row["std"]), _fmt(row["max_prompt_accuracy"]),
            _fmt(row["avg_prompt_accuracy"]), _fmt(row["cps"]), _fmt(row["consistency"]),
            _pct(row["prompt_disagreement"])]


def tables(result: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows of cells) per table of a report result."""
    out = [("Accuracy by method", _SUMMARY_HEADERS, [_summary_cells(r) for r in result["runs"]])]
    if result.get("comparisons"):
        out.append((f"Paired differences (bootstrap over shared questions; * = Holm-adjusted p < {ALPHA})",
                    _DIFF_HEADERS, [_diff_cells(r) for r in result["comparisons"]]))
    if result.get("prompt_sensitivity"):
        out.append(("Prompt sensitivity (each prompt asked alone)", _SENSITIVITY_HEADERS,
                    [_sensitivity_cells(r) for r in result["prompt_sensitivity"]]))
    return out


def to_markdown(result: dict) -> str:
    """The tables as GitHub markdown (names whole, '|' escaped), then the notes, for pasting into notes."""
    parts = []
    for title, headers, rows in tables(result):
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        parts.append("\n".join(lines))
    parts += [f"> {note}" for note in result.get("notes", [])]
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
    comparison's (prefixed ``cmp_``). List fields (per-prompt accuracies) are joined with ';'."""
    import csv
    import io

    by_name: dict[str, dict] = {}  # method -> {baseline: comparison}; flex also has a row against avg
    for c in result["comparisons"]:
        by_name.setdefault(c["method"], {})[c.get("baseline")] = c
    rows = []
    for run in result["runs"]:
        row = _flat(run)
        for base, cmp in by_name.get(run.get("name"), {}).items():
            prefix = "cmp_" if base == result["baseline"] else f"cmp_vs_{base}_"
            row.update({f"{prefix}{k}": v for k, v in cmp.items() if k not in ("method", "model", "dataset")})
        rows.append(row)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def render(result: dict, fmt: str) -> str:
    """The report as text in ``fmt`` ("markdown", "csv" or "json"; "table" is drawn by cli/report.py)."""
    if fmt == "markdown":
        return to_markdown(result)
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    raise SelfEnsembleError(f"Unknown report format {fmt!r}; use one of {', '.join(FORMATS)}.")


def calibration_cells(rows: Sequence[dict]) -> list[list[str]]:
    """The rows of report.calibration as table cells: method, n, ECE, mean confidence, accuracy."""
    return [[r["name"], str(r["n"]), _fmt(r["ece"]), _fmt(r["mean_confidence"]), _fmt(r["accuracy"])] for r in rows]
