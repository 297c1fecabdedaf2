"""`selfensemble demo`: what the tool is for, measured on the bundled ParaRel sample in a few minutes.

A small model's answer depends on how a question is phrased. The demo asks each fact through N
human-written templates (ParaRel), measures that sensitivity — each prompt's accuracy alone, the
share of facts whose prompts disagree — and runs every method on the same facts to show what each
does about it and at what cost (seconds per fact, × origin: the median of a few interleaved timing
rounds after the run, timing.py). Everything goes to one folder: a run folder per method, the
report (table, chart, reliability diagram, report.json) and ``demo.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from selfensemble.config.load import LoadSpec
from selfensemble.config.run import RunConfig
from selfensemble.pipeline.timing import DEFAULT_FACTS, DEFAULT_ROUNDS, time_methods
from selfensemble.scoring import answer_key
from selfensemble.store.record_view import AnyRecord, RecordView

DEMO_METHODS = ["origin", "per_prompt", "vote", "avg", "max", "flex"]
DEFAULT_LIMIT = 100  # 20 facts per relation of the sample's 5
DEFAULT_MAX_NEW_TOKENS = 8  # cloze answers are a word or a name; a newline ends them sooner
# Measured: the default demo (100 facts, all six methods, N = 5) took 6 min 12 s of wall time and
# 11.6 CPU-minutes on a quiet 2-core machine (`/usr/bin/time selfensemble demo`), about 20 s of it
# loading the model: ~3.5 s of wall time per fact. A busy machine takes longer.
_START_S, _PER_FACT_S = 20.0, 3.5
# The timing rounds after the run (timing.py): DEFAULT_ROUNDS × DEFAULT_FACTS facts at the same ~3.5 s
# per fact for all methods together, plus a one-fact warm-up per method: ~45 s on 2 free cores.
_TIMING_S = (DEFAULT_ROUNDS * DEFAULT_FACTS + 1) * _PER_FACT_S


def demo_config(out: Path | str, limit: int = DEFAULT_LIMIT, num_paraphrases: int = 5,
                model: str = "smollm2-135m", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> RunConfig:
    """The demo's run: the bundled ParaRel sample read by path (so it never depends on a data
    folder or the network), every method, one subfolder per method under ``out``."""
    from selfensemble.data.bundled import sample_path

    return RunConfig(dataset="pararel", data_path=str(sample_path("pararel")), limit=limit,
                     num_paraphrases=num_paraphrases, methods=list(DEMO_METHODS), load=LoadSpec(model=model),
                     max_new_tokens=max_new_tokens, out=str(out))


def expected_seconds(limit: int, num_paraphrases: int = 5) -> float:
    """Rough wall time of the demo on 2 free CPU cores (scaled linearly in facts and prompts), its
    timing rounds included."""
    return _START_S + (_PER_FACT_S * limit + _TIMING_S) * num_paraphrases / 5


def sensitivity(per_prompt_records: Sequence[AnyRecord]) -> dict:
    """How much the answer depends on the phrasing, from a ``per_prompt`` run's records.

    Returns n, prompts (mean prompts per fact), per_prompt_accuracy (accuracy of prompt i alone,
    over the facts that have an i-th prompt), spread (max − min of those), disagree_share (facts
    whose prompts do not all give the same answer, after normalisation + lemmatisation),
    mixed_share (facts right through some prompts and wrong through others: what fusion can win or
    lose) and any_right_share (right through at least one prompt: an upper bound for choosing).
    """
    rows = [(r.per_prompt_correct, r.per_prompt or ()) for r in RecordView.all(per_prompt_records)
            if r.per_prompt_correct]
    if not rows:
        return {"n": 0}
    width = max(len(c) for c, _ in rows)
    per_index = []
    for i in range(width):
        col = [c[i] for c, _ in rows if len(c) > i]
        per_index.append(float(np.mean(col)))
    disagree = [len({answer_key(a) for a in answers}) > 1 for _, answers in rows]
    mixed = [0 < sum(c) < len(c) for c, _ in rows]
    return {"n": len(rows), "prompts": float(np.mean([len(c) for c, _ in rows])),
            "per_prompt_accuracy": per_index, "spread": max(per_index) - min(per_index),
            "disagree_share": float(np.mean(disagree)), "mixed_share": float(np.mean(mixed)),
            "any_right_share": float(np.mean([any(c) for c, _ in rows]))}


def method_rows(summary_rows: Sequence[dict], timing: dict | None = None) -> list[dict]:
    """Per method: accuracy [CI], its difference from ``origin`` and its cost (s/fact and × origin).

    With ``timing`` (timing.time_methods' result) the cost is the median of its interleaved rounds,
    with their range (``seconds_range``, ``cost_range``) and their count (``timing_samples``);
    without it, the run's own per-question seconds (one figure per method, timed minutes apart).
    """
    by = {r["method"]: r for r in summary_rows}
    origin = by.get("origin", {})
    base_acc, base_s = origin.get("accuracy"), origin.get("seconds_per_item")
    timed = (timing or {}).get("methods", {})
    rows = []
    for r in summary_rows:
        acc, secs = r.get("accuracy"), r.get("seconds_per_item")
        row = {"method": r["method"], "accuracy": acc, "ci": [r.get("ci_low"), r.get("ci_high")],
               "vs_origin": acc - base_acc if None not in (acc, base_acc) else None,
               "seconds_per_item": secs, "cost_x_origin": secs / base_s if secs is not None and base_s else None,
               "seconds_range": None, "cost_range": None, "timing_samples": 1,
               "consistency": r.get("consistency"), "echo_rate": r.get("echo_rate")}
        t = timed.get(r["method"])
        if t and t["n"]:
            row.update(seconds_per_item=t["median"], seconds_range=[t["min"], t["max"]], timing_samples=t["n"],
                       cost_x_origin=t["x_origin"]["median"], derived_from=t.get("derived_from"),
                       cost_range=[t["x_origin"]["min"], t["x_origin"]["max"]] if t["x_origin"]["n"] else None)
        rows.append(row)
    return rows


def time_demo_methods(engine, queries: Sequence, cfg: RunConfig, rounds: int = DEFAULT_ROUNDS,
                      facts: int = DEFAULT_FACTS) -> dict:
    """The demo's cost figures: every method on the first ``facts`` facts, ``rounds`` interleaved rounds
    (timing.time_methods); vote decodes nothing of its own and gets per_prompt's times."""
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.methods.registry import get_method

    derived = {m: get_method(m).derived_from for m in cfg.methods if get_method(m).derived_from in cfg.methods}
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    return time_methods(engine, cfg.methods, queries, gen, rounds=rounds, facts=facts, derived=derived)


def summarize_demo(out: Path, report_result: dict, timing: dict | None = None) -> dict:
    """demo.json: the sensitivity of the per_prompt run, the method rows, the timing and where the files are."""
    from selfensemble.store.run_store import load_run

    _, records, _ = load_run(out / "per_prompt")
    first = report_result["runs"][0] if report_result["runs"] else {}
    summary = {"model": first.get("model"), "dataset": first.get("dataset"), "n": first.get("n"),
               "num_paraphrases": first.get("num_paraphrases"), "sensitivity": sensitivity(records),
               "methods": method_rows(report_result["runs"], timing), "timing": timing,
               "files": {"runs": {m: str(out / m) for m in DEMO_METHODS if (out / m).is_dir()},
                         **{k: report_result[k] for k in ("png", "reliability_png", "json") if k in report_result},
                         "demo": str(out / "demo.json")}}
    return summary
