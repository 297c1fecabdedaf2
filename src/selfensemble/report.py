"""Compare answering methods run on the same questions.

Accuracy differences between methods are small next to item-to-item noise, so every comparison
here is *paired* over the question ids two runs share, with a seeded bootstrap interval; and the
single-prompt baseline is shown as a spread over prompts (a paraphrase can be much better or worse
than the original), not just one number.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selfensemble.errors import SelfEnsembleError
from selfensemble.scoring import (
    bootstrap_ci,
    consistency,
    ece,
    echo_rate,
    is_echo,
    mcnemar_exact,
    paired_bootstrap_diff,
    per_prompt_accuracy,
)
from selfensemble.store import is_run_dir, load_run

BOOTSTRAP_N = 1000
SEED = 0
ECE_BINS = 10
SINGLE_PROMPT_RUN = "per_prompt"  # the method whose per-prompt answers define "mean single prompt"
# Table/plot order: baselines first, then fusions from simplest up (mirrors methods.METHODS, which
# is not imported here because it pulls in torch).
_METHOD_ORDER = ("origin", "per_prompt", "vote", "avg", "max", "weighted_avg", "weighted_max", "flex")

# Statistics (bootstrap intervals, paired differences, ECE, consistency) live in scoring.py.


# -- summaries ---------------------------------------------------------------------------------


def _paired(a: Sequence[float], b: Sequence[float], seed: int) -> dict:
    """Bootstrap difference plus the exact paired test (McNemar on 0/1 values, sign test on means)."""
    p = mcnemar_exact(a, b)["p_value"] if len(a) else math.nan
    return {**paired_bootstrap_diff(a, b, n=BOOTSTRAP_N, seed=seed), "n": len(a), "p_exact": p}


def _echo(record: dict) -> bool:
    """The record's echo flag (written by runs since issue 7), else recomputed from its fields."""
    if "echo" in record:
        return bool(record["echo"])
    return is_echo(str(record.get("prediction", "")), record.get("prompts") or [], record.get("gold") or [])


def _config(manifest: dict) -> dict:
    return manifest.get("config", manifest) if isinstance(manifest, dict) else {}


def _correct(record: dict) -> bool:
    if "correct" not in record:
        raise SelfEnsembleError(f'record {record.get("id")!r} has no "correct" field; was it scored?')
    return bool(record["correct"])


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _nan_to_none(x.item())
    return x


def summarize(records: Sequence[dict], manifest: dict, seed: int = SEED) -> dict:
    """One row of the method table; JSON-able (NaN becomes None)."""
    cfg = _config(manifest)
    correct = [_correct(r) for r in records]
    n = len(records)
    acc = float(np.mean(correct)) if n else math.nan
    low, high = bootstrap_ci(correct, n=BOOTSTRAP_N, seed=seed)
    pp = per_prompt_accuracy([r["per_prompt_correct"] for r in records if r.get("per_prompt_correct")])
    answers = [r["per_prompt"] for r in records if r.get("per_prompt")]
    conf = [(float(r["confidence"]), c) for r, c in zip(records, correct, strict=True)
            if r.get("confidence") is not None]
    secs = [float(r["seconds"]) for r in records if r.get("seconds") is not None]
    row = {
        "method": cfg.get("method", "?"),
        "model": cfg.get("model"),
        "dataset": cfg.get("dataset"),
        "num_paraphrases": cfg.get("num_paraphrases"),
        "n": n,
        "accuracy": acc,
        "ci_low": low,
        "ci_high": high,
        "per_prompt_accuracy": pp["per_index"],
        "per_prompt_mean": pp["mean"],
        "per_prompt_min": pp["min"],
        "per_prompt_max": pp["max"],
        "per_prompt_std": pp["std"],  # population std over prompt indices
        "echo_rate": echo_rate([_echo(r) for r in records]),
        "consistency": consistency(answers) if answers else math.nan,
        "ece": ece([min(max(c, 0.0), 1.0) for c, _ in conf], [y for _, y in conf], ECE_BINS) if conf else math.nan,
        "seconds_per_item": float(np.mean(secs)) if secs else math.nan,
    }
    return {k: ([_nan_to_none(v) for v in val] if isinstance(val, list) else _nan_to_none(val))
            for k, val in row.items()}


def _single_prompt_source(runs: Sequence[tuple[str, Sequence[dict]]]) -> tuple[str, dict[str, float]] | None:
    """Per question, the mean correctness of its prompts asked one at a time (prefers the per_prompt run)."""
    candidates = [(name, recs) for name, recs in runs if any(r.get("per_prompt_correct") for r in recs)]
    if not candidates:
        return None
    candidates.sort(key=lambda nr: nr[0] != SINGLE_PROMPT_RUN)
    name, recs = candidates[0]
    return name, {str(r["id"]): float(np.mean([bool(c) for c in r["per_prompt_correct"]]))
                  for r in recs if r.get("per_prompt_correct")}


def compare(runs: Sequence[tuple[str, Sequence[dict]]], baseline: str = "origin", seed: int = SEED) -> list[dict]:
    """Paired accuracy differences of each run vs the baseline run and vs the mean single prompt,
    plus every flex run vs the avg run when both ran.

    Only question ids present in both sides are paired, so a run cut short by --limit or a kill
    is compared on what it finished rather than on different questions. Each difference carries
    an exact paired p: McNemar's test against another run, the exact sign test against the mean
    single prompt (per-question means are fractions; with 0/1 values the two tests coincide).
    """
    by_name = {name: {str(r["id"]): _correct(r) for r in recs} for name, recs in runs}
    base = by_name.get(baseline)
    single = _single_prompt_source(runs)
    rows = []
    for name, _ in runs:
        if name == baseline:
            continue
        mine = by_name[name]
        row: dict[str, Any] = {"method": name, "baseline": baseline if base is not None else None}
        row.update(_diff_fields(mine, base or {}, seed))
        if single is not None:
            src, means = single
            ids = [i for i in mine if i in means]
            s = _paired([mine[i] for i in ids], [means[i] for i in ids], seed=seed)
            row.update(single_source=src, vs_single_mean=s["mean"], vs_single_low=s["low"],
                       vs_single_high=s["high"], vs_single_n=s["n"], vs_single_p=s["p_exact"])
        else:
            row.update(single_source=None, vs_single_mean=math.nan, vs_single_low=math.nan,
                       vs_single_high=math.nan, vs_single_n=0, vs_single_p=math.nan)
        rows.append({k: _nan_to_none(v) for k, v in row.items()})
    avg = by_name.get("avg")
    if avg is not None and baseline != "avg":
        for name, mine in by_name.items():
            if name.startswith("flex"):
                row = {"method": name, "baseline": "avg", **_diff_fields(mine, avg, seed), "single_source": None,
                       "vs_single_mean": None, "vs_single_low": None, "vs_single_high": None, "vs_single_n": 0,
                       "vs_single_p": None}
                rows.append({k: _nan_to_none(v) for k, v in row.items()})
    return rows


def _diff_fields(mine: dict[str, bool], other: dict[str, bool], seed: int) -> dict:
    ids = [i for i in mine if i in other]
    d = _paired([mine[i] for i in ids], [other[i] for i in ids], seed=seed)
    return {"diff_mean": d["mean"], "diff_low": d["low"], "diff_high": d["high"], "p_value_like": d["p_value_like"],
            "mcnemar_p": d["p_exact"], "n_paired": d["n"]}


# -- discovery ---------------------------------------------------------------------------------


def find_runs(run_dirs: Sequence[Path | str]) -> list[Path]:
    """A dir with results.jsonl is a run; otherwise each immediate subdir with one is (one per method)."""
    found: list[Path] = []
    for d in map(Path, run_dirs):
        if not d.is_dir():
            raise SelfEnsembleError(f"{d}: no such directory.")
        if is_run_dir(d):
            found.append(d)
            continue
        subs = sorted(s for s in d.iterdir() if s.is_dir() and is_run_dir(s))
        if not subs:
            raise SelfEnsembleError(f"{d}: no results.jsonl here or in its immediate subdirectories.")
        found.extend(subs)
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


# -- rendering ---------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _signed(x: Any) -> str:
    return "–" if x is None else f"{x:+.3f}"


def _summary_cells(row: dict) -> list[str]:
    acc = f"{_fmt(row['accuracy'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
    pp = ("–" if row.get("per_prompt_mean") is None else
          f"{_fmt(row['per_prompt_mean'])} ({_fmt(row['per_prompt_min'])}–{_fmt(row['per_prompt_max'])})")
    echo = "–" if row.get("echo_rate") is None else f"{row['echo_rate']:.1%}"
    return [str(row.get("name", row["method"])), str(row["n"]), acc, pp, echo, _fmt(row.get("consistency")),
            _fmt(row.get("seconds_per_item"), 2)]


_SUMMARY_HEADERS = ["method", "n", "accuracy [95% CI]", "per-prompt mean (min–max)", "echo", "consistency",
                    "s/question"]
_DIFF_HEADERS = ["method", "vs", "n", "Δ accuracy [95% CI]", "McNemar p", "vs mean single prompt [95% CI]",
                 "sign-test p"]


def _diff_cells(row: dict) -> list[str]:
    vs_base = ("–" if row.get("diff_mean") is None else
               f"{_signed(row['diff_mean'])} [{_signed(row['diff_low'])}, {_signed(row['diff_high'])}]")
    vs_single = ("–" if row.get("vs_single_mean") is None else
                 f"{_signed(row['vs_single_mean'])} [{_signed(row['vs_single_low'])}, "
                 f"{_signed(row['vs_single_high'])}] (n={row['vs_single_n']})")
    group = row.get("group")
    method = row["method"] if not group else f"{row['method']} ({group})"
    return [method, str(row.get("baseline") or "–"), str(row.get("n_paired", 0)), vs_base,
            _fmt(row.get("mcnemar_p")), vs_single, _fmt(row.get("vs_single_p"))]


FORMATS = ("table", "markdown", "csv", "json")


def _tables(summary_rows: Sequence[dict], diff_rows: Sequence[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows of cells) per table; a new column is one header plus one cell in *_cells."""
    out = [("Accuracy by method", _SUMMARY_HEADERS, [_summary_cells(r) for r in summary_rows])]
    if diff_rows:
        out.append(("Paired differences (bootstrap over shared questions)", _DIFF_HEADERS,
                    [_diff_cells(r) for r in diff_rows]))
    return out


def to_markdown(summary_rows: Sequence[dict], diff_rows: Sequence[dict] = ()) -> str:
    """The tables as GitHub markdown (names whole, '|' escaped), for pasting into notes."""
    parts = []
    for title, headers, rows in _tables(summary_rows, diff_rows):
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


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
        row = {k: (";".join(_fmt(x, 6) for x in v) if isinstance(v, list) else v) for k, v in run.items()}
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
    """The report as text in ``fmt`` ("markdown", "csv" or "json"; "table" is printed by rich)."""
    if fmt == "markdown":
        return to_markdown(result["runs"], result["comparisons"])
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    raise SelfEnsembleError(f"Unknown report format {fmt!r}; use one of {', '.join(FORMATS)}.")


def _print_tables(summary_rows: list[dict], diff_rows: list[dict], console) -> None:
    """Rich tables whose cells never wrap or truncate: each column is as wide as its widest cell."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    for title, headers, rows in _tables(summary_rows, diff_rows):
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


def _console():
    from rich.console import Console

    return Console()


# -- calibration -------------------------------------------------------------------------------


def reliability_bins(records: Sequence[dict], n_bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins (lo, hi] of the fused answer probability (``confidence``; 0 joins bin 0, as in
    scoring.ece): per non-empty bin its count, mean confidence and accuracy. ECE = Σ count/n · |acc − conf|.

    Example: confidences .95, .95, .15, .15, .15 with correct T, T, T, F, F →
    bin (.9, 1]: n 2, conf .95, acc 1; bin (.1, .2]: n 3, conf .15, acc 1/3.
    """
    pairs = [(min(max(float(r["confidence"]), 0.0), 1.0), _correct(r)) for r in records
             if r.get("confidence") is not None]
    if not pairs:
        return []
    conf = np.array([c for c, _ in pairs])
    corr = np.array([y for _, y in pairs], dtype=float)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    return [{"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int((idx == b).sum()),
             "confidence": float(conf[idx == b].mean()), "accuracy": float(corr[idx == b].mean())}
            for b in range(n_bins) if (idx == b).any()]


def calibration(runs: Sequence[tuple[str, Sequence[dict]]], out_png: Path | None = None, console=None) -> list[dict]:
    """ECE and a reliability diagram (PNG) of the fused answer probability for each run.

    Does ensembling calibrate? A method is calibrated when its answers given probability p are
    right a share p of the time: points on the diagonal. Returns one row per run with its bins.
    """
    rows = []
    for name, records in runs:
        bins = reliability_bins(records)
        if not bins:
            continue
        n = sum(b["n"] for b in bins)
        rows.append({"name": name, "n": n, "bins": bins,
                     "ece": float(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins)),
                     "mean_confidence": float(sum(b["n"] * b["confidence"] for b in bins) / n),
                     "accuracy": float(sum(b["n"] * b["accuracy"] for b in bins) / n)})
    if rows and console is not False:
        calibration_table(rows, console)
    if rows and out_png is not None:
        from selfensemble.report_plot import plot_reliability

        plot_reliability(rows, Path(out_png))
    return rows


def calibration_table(rows: list[dict], console=None) -> None:
    """The rows of :func:`calibration` as a rich table (nothing when no run has confidences)."""
    if not rows:
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"Calibration of the fused answer probability ({ECE_BINS} bins)")
    for i, h in enumerate(("method", "n", "ECE", "mean confidence", "accuracy")):
        t.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        t.add_row(escape(r["name"]), str(r["n"]), _fmt(r["ece"]), _fmt(r["mean_confidence"]), _fmt(r["accuracy"]))
    (console or _console()).print(t)


def report(run_dirs: Sequence[Path | str], out_png: Path | str | None = None, console=None,
           baseline: str = "origin", seed: int = SEED, fmt: str = "table") -> dict:
    """Tables and plot for runs found under run_dirs; returns (and writes next to out_png) a JSON-able dict.

    ``fmt`` "table" prints rich tables on ``console``; "markdown" / "csv" / "json" print plain text
    (see :func:`render`) to stdout. The result's "png" and "json" say where the files went.

    Paired comparisons only make sense on the same questions asked of the same model, so runs are
    grouped by (model, dataset) and compared within each group.
    """
    paths = find_runs(run_dirs)
    loaded = []
    for p in paths:
        manifest, records, _metrics = load_run(p)
        cfg = _config(manifest)
        loaded.append((p, cfg, records, summarize(records, manifest, seed=seed)))

    groups: dict[tuple, list[int]] = {}
    for i, (_, cfg, _, _) in enumerate(loaded):
        groups.setdefault((cfg.get("model"), cfg.get("dataset")), []).append(i)
    multi_group = len(groups) > 1

    summary_rows: list[dict] = []
    diff_rows: list[dict] = []
    def order(i: int) -> tuple:
        m = loaded[i][3]["method"]
        return (m != baseline, _METHOD_ORDER.index(m) if m in _METHOD_ORDER else len(_METHOD_ORDER), m)

    for (model, dataset), idxs in groups.items():
        idxs = sorted(idxs, key=order)
        methods = [loaded[i][3]["method"] for i in idxs]
        runs = []
        for i in idxs:
            p, _, records, row = loaded[i]
            name = row["method"] if methods.count(row["method"]) == 1 else f"{row['method']} [{p.name}]"
            row = {"name": name, **row, "path": str(p)}
            if multi_group:
                row["name"] = f"{name} ({model}, {dataset})"
            summary_rows.append(row)
            runs.append((name, records))
        for d in compare(runs, baseline=baseline, seed=seed):
            if multi_group:
                d["group"] = f"{model}, {dataset}"
            d["model"], d["dataset"] = model, dataset
            diff_rows.append(d)

    if fmt not in FORMATS:
        raise SelfEnsembleError(f"Unknown report format {fmt!r}; use one of {', '.join(FORMATS)}.")
    result: dict[str, Any] = {"runs": summary_rows, "comparisons": diff_rows, "baseline": baseline,
                              "bootstrap": {"n": BOOTSTRAP_N, "seed": seed, "alpha": 0.05}}
    reliability_png = Path(out_png).with_name("reliability.png") if out_png is not None else None
    records_by_path = {str(p): recs for p, _, recs, _ in loaded}
    result["calibration"] = calibration([(r["name"], records_by_path[r["path"]]) for r in summary_rows],
                                        reliability_png, console=False)
    if out_png is not None:
        out_png = Path(out_png)
        from selfensemble.report_plot import plot_summary

        result["chart"] = plot_summary(summary_rows, out_png)  # what the chart shows, as data
        result["png"] = str(out_png)
        if result["calibration"]:
            result["reliability_png"] = str(reliability_png)
        result["json"] = str(out_png.with_name("report.json"))
        out_png.with_name("report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if fmt == "table":
        _print_tables(summary_rows, diff_rows, console)
        calibration_table(result["calibration"], console)
    else:
        sys.stdout.write(render(result, fmt))
    return result
