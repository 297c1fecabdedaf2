"""Compare answering methods run on the same questions.

Accuracy differences between methods are small next to item-to-item noise, so every comparison
is *paired* over the question ids two runs share (compare.py: a seeded bootstrap interval and an
exact paired test per comparison). Which tests are confirmatory is fixed in advance by a family
file (family.py: Holm over exactly those, everything else exploratory and adjusted separately,
with the MDE and power of each test); the single-prompt baselines are ``mean_single`` (per item)
and AvgP (per prompt position), with MaxP and CPS; each cell says which code produced its
records (sources.py). See docs/statistics.md.

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

from selfensemble.analysis.baselines import demo_copy_split, no_model_baselines
from selfensemble.analysis.compare import BOOTSTRAP_N, SEED, SINGLE_PROMPT_RUN, compare
from selfensemble.analysis.costs import timing_notes, timing_summary
from selfensemble.analysis.family import Family, apply_families, load_family
from selfensemble.analysis.metrics import ece, echo_rate, prompt_sensitivity
from selfensemble.analysis.sources import cell_provenance, describe
from selfensemble.analysis.stats import bootstrap_ci
from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.methods.registry import METHODS
from selfensemble.store.record_view import AnyRecord, RecordView, demo_copy_rate
from selfensemble.store.records import check_scorer, mean_or_nan, nan_to_none, rescored, run_config, run_model
from selfensemble.store.run_store import is_run_dir, load_run

ECE_BINS = 10
SCORE_FIELDS = {"exact": "exact_match", "contains": "contains", "f1": "token_f1", "partial": "partial"}


# -- summaries ---------------------------------------------------------------------------------


def _sensitivity(records: Sequence[RecordView], scorer: str | None) -> dict | None:
    """metrics.prompt_sensitivity over the records with per-prompt answers (None without any)."""
    rows = [(list(r.per_prompt), r.per_prompt_values(scorer)) for r in records if r.per_prompt]
    rows = [(a, v) for a, v in rows if v]
    if not rows:
        return None
    return prompt_sensitivity([v for _, v in rows], [a for a, _ in rows])


def summarize(records: Sequence[AnyRecord], manifest: dict, seed: int = SEED, scorer: str | None = None) -> dict:
    """One row of the method table (also a run's metrics.json); JSON-able (NaN becomes None).

    ``records``: a run's records (dicts as stored, or their RecordViews). ``accuracy`` is the mean of
    the headline scorer: ``scorer`` if given, else the run's own ``correct`` (its --match, named in
    ``scorer``). exact_match / contains / token_f1 / partial are the four scorers' means side by side;
    ``scores_recomputed`` counts records whose scores were computed here because the run predates them.
    """
    cfg = run_config(manifest)
    check_scorer(scorer)
    method = cfg.get("method", "?")
    views = RecordView.all(records)
    correct = [r.value(scorer) for r in views]
    scores = [r.scores() for r in views]
    low, high = bootstrap_ci(correct, n=BOOTSTRAP_N, seed=seed)
    ps = _sensitivity(views, scorer)
    pp = ps or {"per_prompt_accuracy": [], "avg_prompt_accuracy": math.nan, "mean_single": math.nan,
                "min": math.nan, "max": math.nan, "std": math.nan}
    conf = [(r.confidence, c) for r, c in zip(views, correct, strict=True) if r.confidence is not None]
    secs = [r.seconds for r in views if r.seconds is not None]
    row = {
        "method": method, "model": run_model(cfg), "dataset": cfg.get("dataset"),
        "num_paraphrases": cfg.get("num_paraphrases"), "n": len(records),
        "scorer": scorer or cfg.get("match"),
        "accuracy": mean_or_nan(correct), "ci_low": low, "ci_high": high,
        **{field: mean_or_nan([float(s[name]) for s in scores]) for name, field in SCORE_FIELDS.items()},
        "scores_recomputed": sum(1 for r in views if r.stored_scores is None),
        "scores_realiased": sum(1 for r in views if r.scores_recomputed),  # records.rescored: gold aliases
        "per_prompt_accuracy": pp["per_prompt_accuracy"],
        "avg_prompt_accuracy": pp["avg_prompt_accuracy"],  # AvgP: per prompt position, averaged over positions
        "mean_single": pp["mean_single"],  # per item over its own prompts, averaged over items
        "per_prompt_min": pp["min"],
        "per_prompt_max": pp["max"],
        "per_prompt_std": pp["std"],  # population std over prompt indices
        "echo_rate": echo_rate([r.echo_for(method) for r in views]),
        "demo_copy_rate": demo_copy_rate(views),
        **demo_copy_split(views, scorer),  # demo_copy_right_rate + demo_copy_wrong_rate (analysis/baselines.py)
        "consistency": ps["consistency"] if ps else math.nan,
        "prompt_sensitivity": ps,
        "ece": ece([min(max(c, 0.0), 1.0) for c, _ in conf], [y for _, y in conf], ECE_BINS) if conf else math.nan,
        "seconds_per_item": mean_or_nan(secs),
        **timing_summary([r.raw for r in views], manifest),  # median and spread over batches, load (analysis/costs.py)
    }
    return nan_to_none(row)


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


def reliability_bins(records: Sequence[AnyRecord], n_bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins (lo, hi] of the fused answer probability (``confidence``; 0 joins bin 0, as in
    metrics.ece): per non-empty bin its count, mean confidence and accuracy. ECE = Σ count/n · |acc − conf|.

    Example: confidences .95, .95, .15, .15, .15 with correct T, T, T, F, F →
    bin (.9, 1]: n 2, conf .95, acc 1; bin (.1, .2]: n 3, conf .15, acc 1/3.
    """
    pairs = [(min(max(r.confidence, 0.0), 1.0), r.judged_correct()) for r in RecordView.all(records)
             if r.confidence is not None]
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


Loaded = tuple  # (path, manifest, config, records, summary row)


def _load(paths: Sequence[Path], seed: int, scorer: str | None) -> list[Loaded]:
    out = []
    for p in paths:
        manifest, records, _metrics = load_run(p)
        cfg = run_config(manifest)
        records = rescored(records, cfg.get("match"))  # an older run's records under today's scoring rules
        out.append((p, manifest, cfg, records, summarize(records, manifest, seed=seed, scorer=scorer)))
    return out


def _notes(summary_rows: Sequence[dict], scorer: str | None) -> list[str]:
    """What a reader must know to read the tables: recomputed scores, mixed headline scorers."""
    notes = []
    old = [f"{r['name']} {r['scores_recomputed']}/{r['n']}" for r in summary_rows if r.get("scores_recomputed")]
    if old:
        notes.append(f"records without per-record scores (written by an older version): {', '.join(old)}; "
                     "their exact/contains/F1/partial were computed here from prediction and gold.")
    aliased = [f"{r['name']} {r['scores_realiased']}/{r['n']}" for r in summary_rows if r.get("scores_realiased")]
    if aliased:
        notes.append(f"records scored before the gold alias rule (scoring.gold_forms) whose golds have aliases: "
                     f"{', '.join(aliased)}; rescored here from their answers and golds.")
    used = sorted({str(r.get("scorer")) for r in summary_rows})
    if scorer is None and len(used) > 1:
        notes.append(f"runs were scored with different --match ({', '.join(used)}); pass --scorer to compare "
                     "them under one scorer.")
    return notes + timing_notes(summary_rows)


def _family_notes(block: dict) -> list[str]:
    """What the reader must know about the confirmatory family: where it came from, what is missing."""
    conf = block.get("confirmatory")
    if conf is None:
        k = block["exploratory"]["k"]
        return [f"no family file: all {k} tests are exploratory (Holm over all of them); pass --family to "
                "mark the comparisons fixed in advance."] if k > 1 else []
    notes = [f"confirmatory family from {conf['source']}: {conf['tested']} tests, Holm over k = {conf['k']} at "
             f"alpha {conf['alpha']}; the other {block['exploratory']['k']} tests are exploratory, Holm-adjusted "
             "separately."]
    if conf["missing"]:
        notes.append(f"declared but not in these runs (counted in k as p = 1): {'; '.join(conf['missing'])}.")
    if conf["not_testable"]:
        notes.append(f"declared but identical by construction, not tested: {'; '.join(conf['not_testable'])}.")
    return notes


def _provenance_notes(cells: Sequence[dict]) -> list[str]:
    notes = []
    for c in cells:
        if c["flags"]:
            sources = "; ".join(describe(s) for s in c["sources"])
            notes.append(f"{c['model']}, {c['dataset']}: provenance {', '.join(c['flags'])} — {sources}.")
    return notes


def resolve_family(family: Family | Path | str | None, scorer: str | None) -> tuple[Family | None, str | None]:
    """The family (loaded from a file when given a path) and the scorer the report uses: the family's
    own when it names one (a different ``scorer`` is refused), else ``scorer``."""
    fam = load_family(family) if isinstance(family, (str, Path)) else family
    if fam is not None and fam.scorer is not None:
        if scorer is not None and scorer != fam.scorer:
            raise ConfigError(f"the family ({fam.source}) fixes scorer {fam.scorer!r}; scorer={scorer!r} contradicts it.")
        scorer = fam.scorer
    return fam, check_scorer(scorer)


def _cells(loaded: Sequence[Loaded], baseline: str) -> dict[tuple, list[int]]:
    """Indices of the loaded runs per (model, dataset), each in the registry's order (baseline first,
    then fusions from simplest up; unregistered names last)."""
    cells: dict[tuple, list[int]] = {}
    for i, (_, _, cfg, _, _) in enumerate(loaded):
        cells.setdefault((run_model(cfg), cfg.get("dataset")), []).append(i)

    def order(i: int) -> tuple:
        m, known = loaded[i][4]["method"], list(METHODS)
        return (m != baseline, known.index(m) if m in known else len(known), m)

    return {cell: sorted(idxs, key=order) for cell, idxs in cells.items()}


def report(run_dirs: Sequence[Path | str], out_png: Path | str | None = None, baseline: str = "origin",
           seed: int = SEED, scorer: str | None = None, family: Family | Path | str | None = None) -> dict:
    """The comparison of the runs found under run_dirs, as a JSON-able dict (also written next to out_png).

    ``scorer`` (one of scoring.SCORERS) is the headline score of every table; None keeps each
    run's own --match (a family that names a scorer sets it). ``family``: a family file or Family
    (family.py) naming the confirmatory comparisons; without one every test is exploratory.
    Nothing is printed: the CLI renders the result (render.py). The result's "png" and "json"
    say where the files went; "notes" what the reader must know.

    Paired comparisons only make sense on the same questions asked of the same model, so runs are
    grouped by (model, dataset) cells and compared within each; each family's Holm spans all cells.
    """
    fam, scorer = resolve_family(family, scorer)
    loaded = _load(find_runs(run_dirs), seed, scorer)
    cells = _cells(loaded, baseline)
    multi = len(cells) > 1
    summary_rows: list[dict] = []
    diff_rows: list[dict] = []
    sensitivity: list[dict] = []
    provenance: list[dict] = []
    for (model, dataset), idxs in cells.items():
        methods = [loaded[i][4]["method"] for i in idxs]
        runs, cell_runs = [], []
        for i in idxs:
            p, manifest, _, records, row = loaded[i]
            name = row["method"] if methods.count(row["method"]) == 1 else f"{row['method']} [{p.name}]"
            summary_rows.append({"name": f"{name} ({model}, {dataset})" if multi else name, **row, "label": name,
                                 "path": str(p)})
            runs.append((name, records))
            cell_runs.append((name, manifest, records))
        for d in compare(runs, baseline=baseline, seed=seed, scorer=scorer, dataset=dataset):
            d.update({"group": f"{model}, {dataset}"} if multi else {}, model=model, dataset=dataset)
            diff_rows.append(d)
        sensitivity += _group_sensitivity(summary_rows[-len(idxs):], model, dataset)
        provenance.append({"model": model, "dataset": dataset, **cell_provenance(cell_runs)})
    families = apply_families(diff_rows, list(cells), fam)
    result: dict[str, Any] = {"runs": summary_rows, "comparisons": diff_rows, "families": families,
                              "baseline": baseline, "scorer": scorer, "prompt_sensitivity": sensitivity,
                              "provenance": provenance,
                              "bootstrap": {"n": BOOTSTRAP_N, "seed": seed, "alpha": 0.05},
                              "notes": _notes(summary_rows, scorer) + _family_notes(families)
                              + _provenance_notes(provenance)}
    result["no_model_baselines"], notes = no_model_baselines([(cfg, recs) for _, _, cfg, recs, _ in loaded], scorer)
    result["notes"] += notes
    reliability_png = Path(out_png).with_name("reliability.png") if out_png is not None else None
    records_by_path = {str(p): recs for p, _, _, recs, _ in loaded}
    _variant_sensitivity(result, summary_rows, records_by_path, out_png, seed, scorer)
    result["calibration"] = calibration([(r["name"], records_by_path[r["path"]]) for r in summary_rows],
                                        reliability_png)
    result = nan_to_none(result)
    if out_png is not None:
        _write_files(result, Path(out_png), reliability_png)
    return result


def _variant_sensitivity(result: dict, summary_rows: list[dict], records_by_path: dict, out_png, seed: int,
                         scorer: str | None) -> None:
    """Per-dimension sensitivity and the budgeted estimate (analysis/variants.py), and their figure
    ``sensitivity.png`` beside the report chart when any run recorded its prompts' variants."""
    from selfensemble.analysis.variants import add_variant_blocks

    add_variant_blocks(result["prompt_sensitivity"], summary_rows, records_by_path, scorer, seed)
    if out_png is not None and any(s.get("by_dimension") for s in result["prompt_sensitivity"]):
        from selfensemble.analysis.sensitivity_plot import plot_sensitivity

        path = Path(out_png).with_name("sensitivity.png")
        result["sensitivity_chart"] = plot_sensitivity(result["prompt_sensitivity"], path)
        result["sensitivity_png"] = str(path)


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
