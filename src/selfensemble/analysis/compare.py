"""Paired comparisons of the methods run on one (model, dataset) cell: one row per comparison.

Differences between answering methods are a few points on a few hundred items, so each comparison
pairs the two sides over the item ids both hold, with a seeded bootstrap interval (items, and whole
groups when items come in groups) and an exact paired test: McNemar's test against another run
(0/1 outcomes), the exact sign test against ``mean_single`` (each item's mean over the prompts it
was asked through alone, a fraction). A comparison whose two sides give the same answers by
construction (``per_prompt`` reports the original prompt's answer, as ``origin`` does) is shown
with its difference but never tested. Families, Holm, MDE and power come after (family.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from selfensemble.analysis.family import MEAN_SINGLE, base_name
from selfensemble.analysis.stats import cluster_bootstrap_diff, mcnemar_exact, paired_bootstrap_diff
from selfensemble.methods.registry import METHODS
from selfensemble.store.record_view import AnyRecord, RecordView
from selfensemble.store.records import nan_to_none

BOOTSTRAP_N = 1000
SEED = 0
SINGLE_PROMPT_RUN = "per_prompt"  # the method whose per-prompt answers define mean_single


def single_prompt_source(runs: Sequence[tuple[str, Sequence[AnyRecord]]],
                         scorer: str | None = None) -> tuple[str, dict[str, float]] | None:
    """(run, {id: mean_single of that item}): per item, the mean score of the prompts it was asked
    through alone (prefers the per_prompt run; vote carries the same answers)."""
    viewed = [(name, RecordView.all(recs)) for name, recs in runs]
    candidates = [(name, recs) for name, recs in viewed if any(r.per_prompt_values(scorer) for r in recs)]
    if not candidates:
        return None
    candidates.sort(key=lambda nr: base_name(nr[0]) != SINGLE_PROMPT_RUN)
    name, recs = candidates[0]
    values = {r.id: r.per_prompt_values(scorer) for r in recs}
    return name, {i: float(np.mean(v)) for i, v in values.items() if v}


def paired_fields(mine: dict[str, float], other: dict[str, float], seed: int,
                  groups: dict[str, str | None], tested: bool = True) -> dict:
    """Paired difference of two sides over their shared ids: the bootstrap interval, the exact test's
    p (``tested``), the counts of items where ``mine`` is higher (n_better) and lower (n_worse),
    and the group interval when every id has a group and there are at least two."""
    ids = [i for i in mine if i in other]
    a, b = [mine[i] for i in ids], [other[i] for i in ids]
    boot = paired_bootstrap_diff(a, b, n=BOOTSTRAP_N, seed=seed)
    exact = mcnemar_exact(a, b)
    out = {"diff_mean": boot["mean"], "diff_low": boot["low"], "diff_high": boot["high"],
           "p_value_like": boot["p_value_like"], "n_paired": len(ids), "n_better": exact["only_a"],
           "n_worse": exact["only_b"], "discordance": (exact["only_a"] + exact["only_b"]) / len(ids) if ids else None,
           "p_value": exact["p_value"] if tested and ids else None,
           "cluster_low": None, "cluster_high": None, "n_groups": None}
    labels = [groups.get(i) for i in ids]
    if ids and all(labels) and len(set(labels)) > 1:
        c = cluster_bootstrap_diff(a, b, labels, n=BOOTSTRAP_N, seed=seed)
        out.update(cluster_low=c["low"], cluster_high=c["high"], n_groups=c["n_groups"])
    return out


def _original_only(name: str) -> bool:
    spec = METHODS.get(base_name(name))
    return spec is not None and spec.reports_original_answer


def _identical(name: str, vs: str, earlier: Sequence[dict]) -> str | None:
    """Why ``name`` vs ``vs`` needs no test, or None: both sides report the original prompt's answer,
    or ``name`` does and an earlier row already tested another such method against the same ``vs``."""
    if _original_only(name) and _original_only(vs):
        return f"identical by construction: {base_name(name)} and {base_name(vs)} both report the original prompt's answer"
    twin = next((r["method"] for r in earlier if r["baseline"] == vs and r.get("test") and _original_only(name)
                 and _original_only(r["method"])), None)
    if twin is not None:
        return f"identical by construction: the same answers as {twin} vs {vs}"
    return None


def _row(name: str, vs: str, mine: dict, other: dict, seed: int, groups: dict, test: str,
         earlier: Sequence[dict]) -> dict:
    reason = _identical(name, vs, earlier)
    row: dict[str, Any] = {"method": name, "baseline": vs, "test": None if reason else test, "not_tested": reason}
    row.update(paired_fields(mine, other, seed, groups, tested=reason is None))
    return row


def compare(runs: Sequence[tuple[str, Sequence[AnyRecord]]], baseline: str = "origin", seed: int = SEED,
            scorer: str | None = None, dataset: str | None = None) -> list[dict]:
    """The comparison rows of one cell's runs ``(name, records)``, per method in run order: against
    ``baseline`` (McNemar), against mean_single (sign test; the baseline too) and against the method
    its Method names in ``compared_with`` (flex vs avg) when both ran.

    Only ids present on both sides are paired, so a run cut short by --limit or a kill is compared
    on what it finished. Rows are JSON-able; ``p_value`` is None for a comparison not tested.
    """
    viewed = [(name, RecordView.all(recs)) for name, recs in runs]
    by_name = {name: {r.id: r.value(scorer) for r in recs} for name, recs in viewed}
    groups = {r.id: r.group_in(dataset) for _, recs in viewed for r in recs}
    single = single_prompt_source(viewed, scorer)
    rows: list[dict] = []
    for name, mine in by_name.items():
        spec = METHODS.get(base_name(name))
        plan = [] if name == baseline or baseline not in by_name else [(baseline, by_name[baseline], "mcnemar")]
        if single is not None:
            plan.append((MEAN_SINGLE, single[1], "sign"))
        other = spec.compared_with if spec is not None else None
        if other is not None and other != baseline and other in by_name:
            plan.append((other, by_name[other], "mcnemar"))
        for vs, values, test in plan:
            row = _row(name, vs, mine, values, seed, groups, test, rows)
            if vs == MEAN_SINGLE:
                row["single_source"] = single[0] if single else None
            rows.append(nan_to_none(row))
    return rows
