"""How many items a confirmatory run needs: the sample size of each family comparison, from a dev run.

The exact McNemar test's power depends on the number of items n, the discordance d (the share of
items on which the two methods disagree in correctness) and the effect Δ. A dev run gives d for
each comparison the family names; for a target effect and power, each comparison then needs

    n ≈ (z_{1−α'/2}·√d + z_{power}·√(d − Δ²))² / Δ²,    α' = α / k

(k = the family's size: Holm's first step tests the smallest p at α/k, so every test is sized for
it), and the exact n is the smallest n whose exact power (stats.mcnemar_power) reaches the target.
The run needs the largest of them. Sign tests against mean_single are not sized (family.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfensemble.analysis.family import SIGN_TEST_POWER, Family
from selfensemble.analysis.report import report
from selfensemble.analysis.stats import mcnemar_n_exact, mcnemar_n_normal, mcnemar_power
from selfensemble.errors import ConfigError


def plan_row(row: dict, effect: float, power: float, alpha_test: float) -> dict:
    """The sample size one comparison row (report.compare's) needs for ``effect`` at ``alpha_test``."""
    out: dict[str, Any] = {"model": row.get("model"), "dataset": row.get("dataset"), "method": row["method"],
                           "vs": row.get("baseline"), "n_dev": row.get("n_paired"), "discordance": row.get("discordance"),
                           "observed_diff": row.get("diff_mean"), "alpha_test": alpha_test,
                           "n_normal": None, "n_exact": None, "power_at_n_dev": None, "note": None}
    d, n_dev = row.get("discordance"), int(row.get("n_paired") or 0)
    if row.get("test") != "mcnemar":
        out["note"] = SIGN_TEST_POWER
    elif not d:
        out["note"] = "no discordant items in the dev run: the discordance cannot be estimated"
    elif effect > d:
        out["note"] = (f"the effect {effect:g} exceeds the dev discordance {d:.4f}: at this discordance no "
                       "sample shows it (a larger effect would need more disagreement)")
    else:
        out.update(n_normal=mcnemar_n_normal(d, effect, alpha_test, power),
                   n_exact=mcnemar_n_exact(d, effect, alpha_test, power),
                   power_at_n_dev=mcnemar_power(n_dev, d, effect, alpha_test))
    return out


def plan(run_dirs: Sequence[Path | str], effect: float = 0.02, power: float = 0.8,
         family: Family | Path | str | None = None, scorer: str | None = None) -> dict:
    """The items a run needs so that each family comparison detects ``effect`` (a share of items,
    e.g. .02 = 2 points) with probability ``power`` under the family's α and Holm over its k tests.

    Reads the dev run folders as `report` does (report.report: same pairing, same family). Without a
    family every McNemar comparison of the report is planned, as one family. Returns a JSON-able
    dict: the settings, one row per comparison (n_normal, n_exact, power_at_n_dev, note) and
    ``n_needed`` (the largest n_exact, None when no comparison could be sized).
    """
    if not 0 < effect < 1:
        raise ConfigError(f"effect must be a share of items in (0, 1), e.g. 0.02 for 2 points; got {effect!r}.")
    if not 0 < power < 1:
        raise ConfigError(f"power must lie in (0, 1), got {power!r}.")
    result = report(run_dirs, None, scorer=scorer, family=family)
    kind = "confirmatory" if result["families"]["confirmatory"] is not None else "exploratory"
    block = result["families"][kind]
    rows = [r for r in result["comparisons"] if r.get("family") == kind]
    k = max(1, block["k"])
    planned = [plan_row(r, effect, power, block["alpha"] / k) for r in rows]
    sized = [p["n_exact"] for p in planned if p["n_exact"] is not None]
    return {"effect": effect, "power": power, "alpha": block["alpha"], "k": block["k"], "family": kind,
            "family_source": (result["families"]["confirmatory"] or {}).get("source"),
            "missing": (result["families"]["confirmatory"] or {}).get("missing", []),
            "scorer": result["scorer"], "comparisons": planned, "n_needed": max(sized) if sized else None}
