"""The sample-size planner on crafted dev runs: its n against the formula (computed here with the
standard library's normal distribution) and against the exact power (brute force on a small case)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import pytest

from selfensemble.analysis.plan import plan
from selfensemble.analysis.stats import mcnemar_power
from selfensemble.cli import main
from selfensemble.errors import ConfigError
from selfensemble.store.run_store import RunStore
from test_power import brute_power


def _dev_runs(root, n: int, flex_only: int, origin_only: int):
    """n items; flex right and origin wrong on ``flex_only`` items, the reverse on ``origin_only``."""
    for method, right in (("origin", range(flex_only, flex_only + origin_only)), ("flex", range(flex_only))):
        with RunStore(root / method, {"method": method, "model": "m", "dataset": "toy"}) as store:
            for i in range(n):
                store.append({"id": f"q{i}", "correct": i in right})
    return root


def _formula(d: float, delta: float, alpha: float, power: float) -> int:
    z = NormalDist().inv_cdf
    return math.ceil((z(1 - alpha / 2) * math.sqrt(d) + z(power) * math.sqrt(d - delta ** 2)) ** 2 / delta ** 2)


def test_plan_n_against_the_formula_and_the_exact_power(tmp_path):
    # 400 dev items, 14 : 6 discordant -> d = .05; plan Δ = .02 under a family of 3 (α' = .05/3)
    root = _dev_runs(tmp_path / "dev", 400, 14, 6)
    fam = tmp_path / "family.json"
    fam.write_text(json.dumps({"comparisons": [["flex", "origin"], ["flex", "avg"], ["max", "origin"]]}))
    result = plan([root], effect=0.02, power=0.8, family=fam)
    assert result["k"] == 3 and result["family"] == "confirmatory"  # two declared comparisons did not run
    [row] = result["comparisons"]
    assert row["discordance"] == pytest.approx(0.05) and row["alpha_test"] == pytest.approx(0.05 / 3)
    assert row["n_normal"] == _formula(0.05, 0.02, 0.05 / 3, 0.8)
    n = row["n_exact"]
    assert mcnemar_power(n, 0.05, 0.02, 0.05 / 3) >= 0.8 > mcnemar_power(n - 1, 0.05, 0.02, 0.05 / 3)
    assert abs(n - row["n_normal"]) / row["n_normal"] < 0.1
    assert row["power_at_n_dev"] == pytest.approx(mcnemar_power(400, 0.05, 0.02, 0.05 / 3))
    assert result["n_needed"] == n


def test_plan_small_case_against_brute_force(tmp_path):
    # 20 items, 8 : 2 -> d = .5; Δ = .3 at α .05 (no family: the one McNemar comparison)
    result = plan([_dev_runs(tmp_path / "dev", 20, 8, 2)], effect=0.3, power=0.8)
    [row] = [r for r in result["comparisons"] if r["vs"] == "origin"]
    n = row["n_exact"]
    assert brute_power(n, 0.5, 0.3, 0.05) >= 0.8 > brute_power(n - 1, 0.5, 0.3, 0.05)
    assert row["n_normal"] == _formula(0.5, 0.3, 0.05, 0.8)


def test_plan_says_what_it_cannot_size(tmp_path):
    root = _dev_runs(tmp_path / "dev", 100, 1, 0)  # d = .01 < the effect
    result = plan([root], effect=0.02)
    [row] = result["comparisons"]
    assert row["n_exact"] is None and "exceeds the dev discordance" in row["note"] and result["n_needed"] is None
    with pytest.raises(ConfigError, match="effect must be a share"):
        plan([root], effect=2)


def test_cli_plan(tmp_path, capsys):
    root = _dev_runs(tmp_path / "dev", 400, 14, 6)
    main(["plan", str(root), "--effect", "0.02", "--format", "json"])
    result = json.loads(capsys.readouterr().out)
    main(["plan", str(root), "--effect", "0.02"])
    out = capsys.readouterr().out
    assert f"needed: {result['n_needed']} items per cell" in out and "n formula" in out
    assert max(len(line) for line in out.splitlines()) <= 100
