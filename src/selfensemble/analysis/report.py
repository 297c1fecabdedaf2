"""Compare answering methods run on the same questions.

Accuracy differences between methods are small next to item-to-item noise, so every comparison
here is *paired* over the question ids two runs share, with a seeded bootstrap interval, an exact
paired test and Holm's adjustment over every test the report prints; when items come in groups
(ParaRel relations) a second interval resamples whole groups. The single-prompt baseline is shown
as a spread over prompts (a paraphrase can be much better or worse than the original), with the
prompt-sensitivity numbers of multi-prompt evaluation (MaxP, AvgP, CPS).

Every record is read under four scorers (scoring.score_all); runs written before records carried
``scores`` get them computed from prediction and gold here, and the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selfensemble.analysis.costs import timing_notes, timing_summary
from selfensemble.analysis.render import to_markdown as to_markdown  # re-exported for callers of report
from selfensemble.analysis.stats import (
    bootstrap_ci,
    cluster_bootstrap_diff,
    holm,
    mcnemar_exact,
    paired_bootstrap_diff,
)
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import METHODS
from selfensemble.scoring import ece, echo_rate, prompt_sensitivity
from selfensemble.store.records import (
    check_scorer,
    demo_copy_rate,
    mean_or_nan,
    nan_to_none,
    per_prompt_values,
    record_correct,
    record_echo,
    record_group,
    record_scores,
    record_value,
    run_config,
    run_model,
)
from selfensemble.store.run_store import is_run_dir, load_run

BOOTSTRAP_N = 1000
SEED = 0
ECE_BINS = 10
SINGLE_PROMPT_RUN = "per_prompt"  # the method whose per-prompt answers define "mean single prompt"
SCORE_FIELDS = {"exact": "exact_match", "contains": "contains", "f1": "token_f1", "partial": "partial"}


# -- summaries ---------------------------------------------------------------------------------


def _sensitivity(records: Sequence[dict], scorer: str | None) -> dict | None:
    """scoring.prompt_sensitivity over the records with per-prompt answers (None without any)."""
    rows = [(r["per_prompt"], per_prompt_values(r, scorer)) for r in records if r.get("per_prompt")]
    rows = [(a, v) for a, v in rows if v]
    if not rows:
        return None
    return prompt_sensitivity([v for _, v in rows], [a for a, _ in rows])


def summarize(records: Sequence[dict], manifest: dict, seed: int = SEED, scorer: str | None = None) -> dict:
    """One row of the method table (also a run's metrics.json); JSON-able (NaN becomes None).

    ``accuracy`` is the mean of the headline scorer: ``scorer`` if given, else the run's own
    ``correct`` (its --match, named in ``scorer``). exact_match / contains / token_f1 / partial are
    the four scorers' means side by side; ``scores_recomputed`` counts records whose scores were
    computed here because the run predates them.
    """
    cfg = run_config(manifest)
    check_scorer(scorer)
    method = cfg.get("method", "?")
    correct = [record_value(r, scorer) for r in records]
    scores = [record_scores(r) for r in records]
    low, high = bootstrap_ci(correct, n=BOOTSTRAP_N, seed=seed)
    ps = _sensitivity(records, scorer)
    pp = ps or {"per_prompt_accuracy": [], "avg_prompt_accuracy": math.nan, "min": math.nan, "max": math.nan,
                "std": math.nan}
    conf = [(float(r["confidence"]), c) for r, c in zip(records, correct, strict=True)
            if r.get("confidence") is not None]
    secs = [float(r["seconds"]) for r in records if r.get("seconds") is not None]
    row = {
        "method": method, "model": run_model(cfg), "dataset": cfg.get("dataset"),
        "num_paraphrases": cfg.get("num_paraphrases"), "n": len(records),
        "scorer": scorer or cfg.get("match"),
        "accuracy": mean_or_nan(correct), "ci_low": low, "ci_high": high,
        **{field: mean_or_nan([float(s[name]) for s in scores]) for name, field in SCORE_FIELDS.items()},
        "scores_recomputed": sum(1 for r in records if not isinstance(r.get("scores"), dict)),
        "per_prompt_accuracy": pp["per_prompt_accuracy"],
        "per_prompt_mean": pp["avg_prompt_accuracy"],
        "per_prompt_min": pp["min"],
        "per_prompt_max": pp["max"],
        "per_prompt_std": pp["std"],  # population std over prompt indices
        "echo_rate": echo_rate([record_echo(r, method) for r in records]),
        "demo_copy_rate": demo_copy_rate(records),
        "consistency": ps["consistency"] if ps else math.nan,
        "prompt_sensitivity": ps,
        "ece": ece([min(max(c, 0.0), 1.0) for c, _ in conf], [y for _, y in conf], ECE_BINS) if conf else math.nan,
        "seconds_per_item": mean_or_nan(secs),
        **timing_summary(records, manifest),  # median and spread over batches, load (analysis/costs.py)
    }
    return nan_to_none(row)


def _paired(a: Sequence[float], b: Sequence[float], seed: int) -> dict:
    """Bootstrap difference plus the exact paired test (McNemar on 0/1 values, sign test on means)."""
    p = mcnemar_exact(a, b)["p_value"] if len(a) else math.nan
    return {**paired_bootstrap_diff(a, b, n=BOOTSTRAP_N, seed=seed), "n": len(a), "p_exact": p}


def _single_prompt_source(runs: Sequence[tuple[str, Sequence[dict]]],
                          scorer: str | None = None) -> tuple[str, dict[str, float]] | None:
    """Per question, the mean score of its prompts asked one at a time (prefers the per_prompt run)."""
    candidates = [(name, recs) for name, recs in runs if any(per_prompt_values(r, scorer) for r in recs)]
    if not candidates:
        return None
    candidates.sort(key=lambda nr: nr[0] != SINGLE_PROMPT_RUN)
    name, recs = candidates[0]
    values = {str(r["id"]): per_prompt_values(r, scorer) for r in recs}
    return name, {i: float(np.mean(v)) for i, v in values.items() if v}


def _diff_fields(mine: dict[str, float], other: dict[str, float], seed: int,
                 groups: dict[str, str | None]) -> dict:
    """Paired difference of two runs over their shared ids; the group interval when every id has a
    group and there are at least two (one group resampled is no interval)."""
    ids = [i for i in mine if i in other]
    a, b = [mine[i] for i in ids], [other[i] for i in ids]
    d = _paired(a, b, seed=seed)
    out = {"diff_mean": d["mean"], "diff_low": d["low"], "diff_high": d["high"], "p_value_like": d["p_value_like"],
           "mcnemar_p": d["p_exact"], "n_paired": d["n"], "cluster_low": None, "cluster_high": None,
           "n_groups": None}
    labels = [groups.get(i) for i in ids]
    if ids and all(labels) and len(set(labels)) > 1:
        c = cluster_bootstrap_diff(a, b, labels, n=BOOTSTRAP_N, seed=seed)
        out.update(cluster_low=c["low"], cluster_high=c["high"], n_groups=c["n_groups"])
    return out


def holm_adjust(rows: list[dict]) -> list[dict]:
    """Fill ``mcnemar_p_holm`` and ``vs_single_p_holm``: Holm over every p-value the rows hold
    (both columns, all rows), the family of tests one report prints."""
    keys = [(i, k) for i, r in enumerate(rows) for k in ("mcnemar_p", "vs_single_p") if r.get(k) is not None]
    adjusted = holm([rows[i][k] for i, k in keys])
    for r in rows:
        r["mcnemar_p_holm"] = r["vs_single_p_holm"] = None
    for (i, k), p in zip(keys, adjusted, strict=True):
        rows[i][f"{k}_holm"] = p
    return rows


def compare(runs: Sequence[tuple[str, Sequence[dict]]], baseline: str = "origin", seed: int = SEED,
            scorer: str | None = None, dataset: str | None = None) -> list[dict]:
    """Paired score differences of each run vs the baseline run and vs the mean single prompt,
    plus each run vs the method its Method names in ``compared_with`` (flex vs avg) when both ran.

    Only question ids present in both sides are paired, so a run cut short by --limit or a kill
    is compared on what it finished rather than on different questions. Each difference carries
    an exact paired p: McNemar's test against another run, the exact sign test against the mean
    single prompt (per-question means are fractions; with 0/1 values the two tests coincide),
    Holm-adjusted over all rows (:func:`holm_adjust`); items with groups also get a group interval.
    """
    by_name = {name: {str(r["id"]): record_value(r, scorer) for r in recs} for name, recs in runs}
    groups = {str(r["id"]): record_group(r, dataset) for _, recs in runs for r in recs}
    base = by_name.get(baseline)
    single = _single_prompt_source(runs, scorer)
    rows = []
    none_single = {"single_source": None, "vs_single_mean": None, "vs_single_low": None, "vs_single_high": None,
                   "vs_single_n": 0, "vs_single_p": None}
    for name, _ in runs:
        if name == baseline:
            continue
        mine = by_name[name]
        row: dict[str, Any] = {"method": name, "baseline": baseline if base is not None else None}
        row.update(_diff_fields(mine, base or {}, seed, groups))
        row.update(none_single)
        if single is not None:
            src, means = single
            ids = [i for i in mine if i in means]
            s = _paired([mine[i] for i in ids], [means[i] for i in ids], seed=seed)
            row.update(single_source=src, vs_single_mean=s["mean"], vs_single_low=s["low"],
                       vs_single_high=s["high"], vs_single_n=s["n"], vs_single_p=s["p_exact"])
        rows.append(nan_to_none(row))
    for name, mine in by_name.items():  # a method's own comparison (flex vs the avg it replaces), if both ran
        spec = METHODS.get(name.split(" [")[0])  # run names: "method" or "method [folder]"
        other = spec.compared_with if spec is not None else None
        if other is not None and other != baseline and other in by_name:
            row = {"method": name, "baseline": other, **_diff_fields(mine, by_name[other], seed, groups), **none_single}
            rows.append(nan_to_none(row))
    return holm_adjust(rows)

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


# -- calibration -------------------------------------------------------------------------------


def reliability_bins(records: Sequence[dict], n_bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins (lo, hi] of the fused answer probability (``confidence``; 0 joins bin 0, as in
    scoring.ece): per non-empty bin its count, mean confidence and accuracy. ECE = Σ count/n · |acc − conf|.

    Example: confidences .95, .95, .15, .15, .15 with correct T, T, T, F, F →
    bin (.9, 1]: n 2, conf .95, acc 1; bin (.1, .2]: n 3, conf .15, acc 1/3.
    """
    pairs = [(min(max(float(r["confidence"]), 0.0), 1.0), record_correct(r)) for r in records
             if r.get("confidence") is not None]
    if not pairs:
        return []
    conf = np.array([c for c, _ in pairs])
    corr = np.array([y for _, y in pairs], dtype=float)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    return [{"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int((idx == b).sum()),
             "confidence": float(conf[idx == b].mean()), "accuracy": float(corr[idx == b].mean())}
            for b in range(n_bins) if (idx == b).any()]


def calibration(runs: Sequence[tuple[str, Sequence[dict]]], out_png: Path | None = None) -> list[dict]:
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
    if rows and out_png is not None:
        from selfensemble.analysis.plots import plot_reliability

        plot_reliability(rows, Path(out_png))
    return rows


# -- the report --------------------------------------------------------------------------------


def _load(paths: Sequence[Path], seed: int, scorer: str | None) -> list[tuple[Path, dict, list[dict], dict]]:
    out = []
    for p in paths:
        manifest, records, _metrics = load_run(p)
        out.append((p, run_config(manifest), records, summarize(records, manifest, seed=seed, scorer=scorer)))
    return out


def _notes(summary_rows: Sequence[dict], scorer: str | None) -> list[str]:
    """What a reader must know to read the tables: recomputed scores, mixed headline scorers."""
    notes = []
    old = [f"{r['name']} {r['scores_recomputed']}/{r['n']}" for r in summary_rows if r.get("scores_recomputed")]
    if old:
        notes.append(f"records without per-record scores (written by an older version): {', '.join(old)}; "
                     "their exact/contains/F1/partial were computed here from prediction and gold.")
    used = sorted({str(r.get("scorer")) for r in summary_rows})
    if scorer is None and len(used) > 1:
        notes.append(f"runs were scored with different --match ({', '.join(used)}); pass --scorer to compare "
                     "them under one scorer.")
    return notes + timing_notes(summary_rows)


def report(run_dirs: Sequence[Path | str], out_png: Path | str | None = None, baseline: str = "origin",
           seed: int = SEED, scorer: str | None = None) -> dict:
    """The comparison of the runs found under run_dirs, as a JSON-able dict (also written next to out_png).

    ``scorer`` (one of scoring.SCORERS) is the headline score of every table; None keeps each
    run's own --match. Nothing is printed: the CLI renders the result (tables, markdown, csv,
    json; report_render.py). The result's "png" and "json" say where the files went; "notes"
    what the reader must know (recomputed scores, mixed scorers).

    Paired comparisons only make sense on the same questions asked of the same model, so runs are
    grouped by (model, dataset) and compared within each group; Holm's adjustment spans them all.
    """
    check_scorer(scorer)
    loaded = _load(find_runs(run_dirs), seed, scorer)
    groups: dict[tuple, list[int]] = {}
    for i, (_, cfg, _, _) in enumerate(loaded):
        groups.setdefault((run_model(cfg), cfg.get("dataset")), []).append(i)
    multi_group = len(groups) > 1

    def order(i: int) -> tuple:
        # the registry's order: baselines first, then fusions from simplest up (method_registry imports
        # no torch, so the report still runs without a model stack); unregistered names last
        m, known = loaded[i][3]["method"], list(METHODS)
        return (m != baseline, known.index(m) if m in known else len(known), m)

    summary_rows: list[dict] = []
    diff_rows: list[dict] = []
    sensitivity: list[dict] = []
    for (model, dataset), idxs in groups.items():
        idxs = sorted(idxs, key=order)
        methods = [loaded[i][3]["method"] for i in idxs]
        runs = []
        for i in idxs:
            p, _, records, row = loaded[i]
            name = row["method"] if methods.count(row["method"]) == 1 else f"{row['method']} [{p.name}]"
            summary_rows.append({"name": f"{name} ({model}, {dataset})" if multi_group else name, **row,
                                 "path": str(p)})
            runs.append((name, records))
        for d in compare(runs, baseline=baseline, seed=seed, scorer=scorer, dataset=dataset):
            if multi_group:
                d["group"] = f"{model}, {dataset}"
            d["model"], d["dataset"] = model, dataset
            diff_rows.append(d)
        sensitivity += _group_sensitivity(summary_rows[-len(idxs):], model, dataset)

    result: dict[str, Any] = {"runs": summary_rows, "comparisons": holm_adjust(diff_rows), "baseline": baseline,
                              "scorer": scorer, "prompt_sensitivity": sensitivity,
                              "bootstrap": {"n": BOOTSTRAP_N, "seed": seed, "alpha": 0.05},
                              "notes": _notes(summary_rows, scorer)}
    reliability_png = Path(out_png).with_name("reliability.png") if out_png is not None else None
    records_by_path = {str(p): recs for p, _, recs, _ in loaded}
    result["calibration"] = calibration([(r["name"], records_by_path[r["path"]]) for r in summary_rows],
                                        reliability_png)
    if out_png is not None:
        _write_files(result, Path(out_png), reliability_png)
    return result


def _group_sensitivity(rows: Sequence[dict], model: Any, dataset: Any) -> list[dict]:
    """The prompt-sensitivity block of one (model, dataset): from its per_prompt run, else the first
    run with per-prompt answers (vote derives from the same answers)."""
    have = sorted((r for r in rows if r.get("prompt_sensitivity")), key=lambda r: r["method"] != SINGLE_PROMPT_RUN)
    if not have:
        return []
    return [{"model": model, "dataset": dataset, "source": have[0]["name"], **have[0]["prompt_sensitivity"]}]


def _write_files(result: dict, out_png: Path, reliability_png: Path | None) -> None:
    """The bar chart, the reliability diagram (when any run has confidences) and report.json."""
    from selfensemble.analysis.plots import plot_summary

    result["chart"] = plot_summary(result["runs"], out_png, result["comparisons"], result["baseline"])  # as data
    result["png"] = str(out_png)
    if result["calibration"]:
        result["reliability_png"] = str(reliability_png)
    result["json"] = str(out_png.with_name("report.json"))
    out_png.with_name("report.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
