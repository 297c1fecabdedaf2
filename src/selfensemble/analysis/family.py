"""Hypotheses fixed in advance: which comparisons a report tests as confirmatory, and Holm within
each family.

A report prints dozens of paired tests; adjusting over all of them hides a pre-registered result
and adjusting over a family chosen after seeing the data overstates it. A family file names the
comparisons before the run (``[["flex", "origin"], ["flex", "mean_single"]]``, optionally one
model/dataset cell), the scorer and α. Those comparisons are *confirmatory* and Holm-adjusted over
exactly them; every other test is *exploratory*, adjusted over its own family; a comparison that is
identical by construction is never tested. Each tested McNemar comparison also carries the
smallest difference it could detect (``mde_80``) and its power for the observed difference, at
its family's α/k (the level Holm's first step uses).

File format (JSON): ``{"comparisons": [...], "alpha": 0.05, "scorer": "contains"}``; a comparison
is ``[method, vs]`` (every cell) or ``{"method", "vs", "model"?, "dataset"?}``; ``vs`` is a
method run or ``mean_single``. A file whose top level has a ``"family"`` object (the confirm
configuration) is read from there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfensemble.analysis.stats import holm, mcnemar_mde, mcnemar_power
from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.store.records import check_scorer

MEAN_SINGLE = "mean_single"  # the per-item mean of the single prompts, as a comparison's other side
ALPHA = 0.05
POWER = 0.8
SIGN_TEST_POWER = ("not computed: the sign test against the fractional mean_single has no accuracy-scale "
                   "effect to size (see docs/statistics.md)")


@dataclass(frozen=True)
class Comparison:
    """One declared comparison: ``method`` against ``vs`` in every cell, or in the cell given."""

    method: str
    vs: str
    model: str | None = None
    dataset: str | None = None

    def matches(self, row: dict) -> bool:
        return (base_name(str(row.get("method"))) == self.method and row.get("baseline") == self.vs
                and self.in_cell(row.get("model"), row.get("dataset")))

    def in_cell(self, model: Any, dataset: Any) -> bool:
        return self.model in (None, model) and self.dataset in (None, dataset)

    def label(self, model: Any = None, dataset: Any = None) -> str:
        model, dataset = self.model or model, self.dataset or dataset
        cell = f" ({model}, {dataset})" if model or dataset else ""
        return f"{self.method} vs {self.vs}{cell}"


@dataclass(frozen=True)
class Family:
    """The confirmatory family: its comparisons, α and scorer (None: each run's own), and its file."""

    comparisons: tuple[Comparison, ...]
    alpha: float = ALPHA
    scorer: str | None = None
    source: str | None = None
    extra: dict = field(default_factory=dict, compare=False)  # the file's other keys (an "about" text), as given


def base_name(run_name: str) -> str:
    """The method of a report's run name ("flex", or "flex [folder]" when a method ran twice)."""
    return run_name.split(" [")[0]


def _comparison(entry: Any, where: str) -> Comparison:
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(x, str) for x in entry):
        return Comparison(entry[0], entry[1])
    if isinstance(entry, dict) and isinstance(entry.get("method"), str) and isinstance(entry.get("vs"), str):
        unknown = set(entry) - {"method", "vs", "model", "dataset"}
        if not unknown:
            return Comparison(entry["method"], entry["vs"], entry.get("model"), entry.get("dataset"))
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} in comparison {entry!r}.")
    raise ConfigError(f"{where}: a comparison is [method, vs] or {{\"method\", \"vs\", \"model\"?, \"dataset\"?}}, "
                      f"got {entry!r}.")


def parse_family(data: Any, source: str | None = None) -> Family:
    """A Family from a family file's parsed JSON (see the module note); ConfigError names ``source``."""
    where = source or "family"
    if isinstance(data, dict) and isinstance(data.get("family"), dict):
        data = data["family"]
    if not isinstance(data, dict) or not isinstance(data.get("comparisons"), list) or not data["comparisons"]:
        raise ConfigError(f"{where}: a family is a JSON object with a non-empty \"comparisons\" list "
                          '(e.g. {"comparisons": [["flex", "origin"]], "alpha": 0.05, "scorer": "contains"}).')
    alpha = data.get("alpha", ALPHA)
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"{where}: alpha must be a number in (0, 1), got {alpha!r}.")
    scorer = data.get("scorer")
    try:
        check_scorer(scorer)
    except SelfEnsembleError as err:
        raise ConfigError(f"{where}: {err}") from None
    comparisons = tuple(dict.fromkeys(_comparison(c, where) for c in data["comparisons"]))
    extra = {k: v for k, v in data.items() if k not in ("comparisons", "alpha", "scorer")}
    return Family(comparisons, float(alpha), scorer, source, extra)


def load_family(path: Path | str) -> Family:
    """The family in a JSON file (a family file, or a configuration with a "family" object)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such family file.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err}).") from None
    return parse_family(data, str(path))


def _declared(family: Family, rows: Sequence[dict], cells: Sequence[tuple]) -> tuple[list[int], list[str], list[str]]:
    """(indices of the tested rows the family names, declared comparisons with no row here, declared
    comparisons that are identical by construction). A comparison given for every cell is declared
    once per cell of the report; one whose cell the report lacks is declared and missing."""
    chosen: list[int] = []
    missing: list[str] = []
    untestable: list[int] = []
    for c in family.comparisons:
        targets = [cell for cell in cells if c.in_cell(*cell)]
        if not targets:
            missing.append(c.label())
        for cell in targets:
            hits = [i for i, r in enumerate(rows) if c.matches(r) and (r.get("model"), r.get("dataset")) == cell]
            if not hits:
                missing.append(c.label(*cell))
            for i in hits:
                (chosen if rows[i].get("p_value") is not None else untestable).append(i)
    return sorted(set(chosen)), missing, [row_label(rows[i]) for i in sorted(set(untestable))]


def row_label(row: dict) -> str:
    return f"{row.get('method')} vs {row.get('baseline')} ({row.get('model')}, {row.get('dataset')})"


def apply_families(rows: list[dict], cells: Sequence[tuple], family: Family | None,
                   alpha: float = ALPHA) -> dict:
    """Label every comparison row, Holm-adjust within its family, and add MDE and power; returns the
    report's ``families`` block.

    Each row gets ``family`` ("confirmatory", "exploratory", or None when not tested),
    ``confirmatory``, ``family_size`` (k), ``alpha``, ``p_holm``, ``significant`` (p_holm <= α),
    ``mde_80`` and ``power``. A declared comparison with no row (a method that did not run) still
    counts in the confirmatory k, as a test that cannot reject (p = 1), so a missing run never makes
    the others easier to pass; ``cells``: the report's (model, dataset) pairs.
    """
    alpha = family.alpha if family is not None else alpha
    chosen, missing, untestable = _declared(family, rows, cells) if family is not None else ([], [], [])
    explore = [i for i, r in enumerate(rows) if r.get("p_value") is not None and i not in set(chosen)]
    for r in rows:
        r.update(family=None, confirmatory=False, family_size=None, alpha=alpha, alpha_test=None, p_holm=None,
                 significant=None, mde_80=None, power=None, power_note=None)
    for name, idxs, extra in (("confirmatory", chosen, len(missing)), ("exploratory", explore, 0)):
        k = len(idxs) + extra
        adjusted = holm([rows[i]["p_value"] for i in idxs] + [1.0] * extra)
        for i, p in zip(idxs, adjusted, strict=False):
            rows[i].update(family=name, confirmatory=name == "confirmatory", family_size=k, p_holm=p,
                           significant=p <= alpha)
            rows[i].update(_power_fields(rows[i], alpha / k))
    block: dict[str, Any] = {"exploratory": {"alpha": alpha, "k": len(explore)}, "confirmatory": None}
    if family is not None:
        block["confirmatory"] = {
            "source": family.source, "alpha": alpha, "scorer": family.scorer, "k": len(chosen) + len(missing),
            "comparisons": [[c.method, c.vs] + ([c.model, c.dataset] if c.model or c.dataset else [])
                            for c in family.comparisons],
            "tested": len(chosen), "missing": missing, "not_testable": untestable}
    return block


def _power_fields(row: dict, alpha_test: float) -> dict:
    """MDE and power of one tested row at level ``alpha_test`` (its family's α/k)."""
    if row.get("test") != "mcnemar":
        return {"mde_80": None, "power": None, "power_note": SIGN_TEST_POWER, "alpha_test": alpha_test}
    n = int(row.get("n_paired") or 0)
    better, worse = int(row.get("n_better") or 0), int(row.get("n_worse") or 0)
    if n == 0:
        return {"mde_80": None, "power": None, "power_note": "no paired items", "alpha_test": alpha_test}
    d = (better + worse) / n
    mde = mcnemar_mde(n, d, alpha_test, POWER)
    note = None if mde is not None else (f"no difference up to the discordance {d:.3f} reaches {POWER:.0%} power "
                                         f"on {n} items at alpha {alpha_test:.3g}")
    power = mcnemar_power(n, d, (better - worse) / n, alpha_test)
    return {"mde_80": mde, "power": power, "power_note": note, "alpha_test": alpha_test}
