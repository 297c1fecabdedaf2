"""Compare answering methods run on the same questions.

Accuracy differences between methods are small next to item-to-item noise, so every comparison
here is *paired* over the question ids two runs share, with a seeded bootstrap interval; and the
single-prompt baseline is shown as a spread over prompts (a paraphrase can be much better or worse
than the original), not just one number.
"""

from __future__ import annotations

import json
import math
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


def _per_prompt_accuracies(records: Sequence[dict]) -> list[float]:
    """Accuracy of each prompt index, over the questions that have that many prompts."""
    rows = [r["per_prompt_correct"] for r in records if r.get("per_prompt_correct")]
    width = max((len(r) for r in rows), default=0)
    accs = []
    for j in range(width):
        col = [bool(r[j]) for r in rows if len(r) > j]
        accs.append(float(np.mean(col)))
    return accs


def summarize(records: Sequence[dict], manifest: dict, seed: int = SEED) -> dict:
    """One row of the method table; JSON-able (NaN becomes None)."""
    cfg = _config(manifest)
    correct = [_correct(r) for r in records]
    n = len(records)
    acc = float(np.mean(correct)) if n else math.nan
    low, high = bootstrap_ci(correct, n=BOOTSTRAP_N, seed=seed)
    pp = _per_prompt_accuracies(records)
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
        "per_prompt_accuracy": pp,
        "per_prompt_mean": float(np.mean(pp)) if pp else math.nan,
        "per_prompt_min": float(np.min(pp)) if pp else math.nan,
        "per_prompt_max": float(np.max(pp)) if pp else math.nan,
        "per_prompt_std": float(np.std(pp)) if pp else math.nan,  # population std over prompt indices
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


def to_markdown(summary_rows: Sequence[dict]) -> str:
    """The method table as GitHub markdown, for pasting into notes."""
    lines = ["| " + " | ".join(_SUMMARY_HEADERS) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(_SUMMARY_HEADERS) - 1)) + "|"]
    lines += ["| " + " | ".join(_summary_cells(r)) + " |" for r in summary_rows]
    return "\n".join(lines) + "\n"


def _print_tables(summary_rows: list[dict], diff_rows: list[dict], console) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    t = Table(title="Accuracy by method")
    for i, h in enumerate(_SUMMARY_HEADERS):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in summary_rows:
        t.add_row(*(escape(c) for c in _summary_cells(r)))  # run names like 'flex [dir]' are not markup
    console.print(t)
    if diff_rows:
        d = Table(title="Paired differences (bootstrap over shared questions)")
        for i, h in enumerate(_DIFF_HEADERS):
            d.add_column(h, justify="left" if i < 2 else "right")
        for r in diff_rows:
            d.add_row(*(escape(c) for c in _diff_cells(r)))
        console.print(d)


def _plot(summary_rows: list[dict], out_png: Path) -> None:
    # Figure + Agg canvas rather than pyplot: no global backend switch, safe under any GUI/test setup.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # One slot per run (bar + CI); a run with per-prompt answers gets a second slot right after it
    # showing each prompt asked alone (dots), their min–max range and mean, so the fused methods
    # can be read against the best and worst single paraphrase, not only the original question.
    slots: list[tuple[str, dict, bool]] = []
    for r in summary_rows:
        name = str(r.get("name", r["method"]))
        slots.append((name, r, False))
        if any(p is not None for p in (r.get("per_prompt_accuracy") or [])):
            slots.append((f"{name}\nsingle prompts", r, True))
    fig = Figure(figsize=(max(4.5, 1.0 * len(slots) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bar_label = spread_label = True
    for x, (_, r, spread) in enumerate(slots):
        if not spread:
            acc = r["accuracy"]
            if acc is None:
                continue
            err = [[acc - (r["ci_low"] if r["ci_low"] is not None else acc)],
                   [(r["ci_high"] if r["ci_high"] is not None else acc) - acc]]
            ax.bar(x, acc, width=0.6, yerr=err, capsize=4, color="#4C72B0", alpha=0.85,
                   label="accuracy (95% bootstrap CI)" if bar_label else None)
            bar_label = False
            continue
        pp = [p for p in r["per_prompt_accuracy"] if p is not None]
        ax.vlines(x, min(pp), max(pp), color="#DD8452", lw=3,
                  label="single prompts: min–max" if spread_label else None)
        ax.scatter([x] * len(pp), pp, s=14, color="#DD8452", alpha=0.7, zorder=3)
        ax.scatter([x], [float(np.mean(pp))], marker="D", s=45, color="#C44E52", zorder=4,
                   label="single prompts: mean" if spread_label else None)
        spread_label = False
    ax.set_xticks(range(len(slots)))
    rotate = len(slots) > 5
    ax.set_xticklabels([s[0] for s in slots], rotation=30 if rotate else 0, ha="right" if rotate else "center",
                       fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.grid(axis="y", alpha=0.3)
    titles = sorted({f"{r.get('model')} · {r.get('dataset')}" for r in summary_rows if r.get("model")})
    ax.set_title(" | ".join(titles) if 0 < len(titles) <= 2 else "accuracy by method", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if not rotate else -0.3), ncol=3, fontsize=8,
              frameon=False)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)


def report(run_dirs: Sequence[Path | str], out_png: Path | str | None = None, console=None,
           baseline: str = "origin", seed: int = SEED) -> dict:
    """Tables and plot for runs found under run_dirs; returns (and writes next to out_png) a JSON-able dict.

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

    _print_tables(summary_rows, diff_rows, console)
    result: dict[str, Any] = {"runs": summary_rows, "comparisons": diff_rows, "baseline": baseline,
                              "bootstrap": {"n": BOOTSTRAP_N, "seed": seed, "alpha": 0.05}}
    if out_png is not None:
        out_png = Path(out_png)
        _plot(summary_rows, out_png)
        result["png"] = str(out_png)
        result["json"] = str(out_png.with_name("report.json"))
        out_png.with_name("report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
