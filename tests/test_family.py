"""Confirmatory families: Holm over exactly the comparisons fixed in advance, exploratory tests
adjusted apart, comparisons identical by construction never tested, MDE and power per test —
on hand-made runs whose p values are worked out by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfensemble.analysis.family import load_family, parse_family
from selfensemble.analysis.report import report
from selfensemble.cli import main
from selfensemble.errors import ConfigError
from selfensemble.store.run_store import RunStore
from test_power import brute_power

ROOT = Path(__file__).resolve().parents[1]
IDS = [f"q{i}" for i in range(20)]


def _write(root: Path, method: str, right: set[int], per_prompt: list[list[bool]] | None = None) -> None:
    with RunStore(root / method, {"method": method, "model": "m", "dataset": "toy"}) as store:
        for i, q in enumerate(IDS):
            rec = {"id": q, "correct": i in right}
            if per_prompt is not None:
                rec.update(per_prompt=["a"] * len(per_prompt[i]), per_prompt_correct=per_prompt[i])
            store.append(rec)


def _runs(root: Path) -> Path:
    # origin right on none; avg on q0..q9; flex on q0..q5. McNemar (exact, by hand):
    #   avg vs origin 10 : 0 -> 2/2^10 = .001953;  flex vs origin 6 : 0 -> 2/2^6 = .03125;
    #   flex vs avg 0 : 4 -> 2/2^4 = .125
    _write(root, "origin", set())
    _write(root, "avg", set(range(10)))
    _write(root, "flex", set(range(6)))
    return root


def _family(path: Path, comparisons, **extra) -> Path:
    path.write_text(json.dumps({"comparisons": comparisons, **extra}))
    return path


def _by(result: dict) -> dict:
    return {(r["method"], r["baseline"]): r for r in result["comparisons"]}


def test_holm_over_the_declared_family_alone(tmp_path):
    fam = _family(tmp_path / "family.json", [["flex", "origin"], ["avg", "origin"]])
    result = report([_runs(tmp_path / "runs")], family=fam)
    by = _by(result)
    # confirmatory, k = 2: sorted .001953, .03125 -> 2·.001953 = .003906, max(.003906, 1·.03125) = .03125
    assert by["avg", "origin"]["p_holm"] == pytest.approx(2 * 2 / 1024)
    assert by["flex", "origin"]["p_holm"] == pytest.approx(0.03125)
    assert by["flex", "origin"]["significant"] and by["flex", "origin"]["confirmatory"]
    assert {by["avg", "origin"]["family"], by["flex", "origin"]["family"]} == {"confirmatory"}
    assert by["flex", "origin"]["family_size"] == 2
    # exploratory, adjusted apart: flex vs avg alone, k = 1 -> .125
    assert by["flex", "avg"]["family"] == "exploratory" and not by["flex", "avg"]["confirmatory"]
    assert by["flex", "avg"]["p_holm"] == pytest.approx(0.125) and by["flex", "avg"]["family_size"] == 1
    block = result["families"]
    assert block["confirmatory"]["k"] == 2 and block["exploratory"]["k"] == 1
    assert block["confirmatory"]["source"] == str(fam) and block["confirmatory"]["missing"] == []
    # without the family all three are one exploratory family: flex vs origin is 2·.03125 = .0625, not significant
    plain = _by(report([tmp_path / "runs"]))
    assert plain["flex", "origin"]["p_holm"] == pytest.approx(0.0625) and not plain["flex", "origin"]["significant"]
    assert {r["family"] for r in plain.values()} == {"exploratory"}


def test_a_declared_comparison_that_did_not_run_still_counts_in_k(tmp_path):
    fam = _family(tmp_path / "family.json", [["flex", "origin"], ["avg", "origin"], ["max", "origin"]])
    result = report([_runs(tmp_path / "runs")], family=fam)
    by = _by(result)
    # k = 3 (max vs origin counted as p = 1): 3·.001953 = .005859, 2·.03125 = .0625
    assert by["avg", "origin"]["p_holm"] == pytest.approx(3 * 2 / 1024)
    assert by["flex", "origin"]["p_holm"] == pytest.approx(0.0625) and not by["flex", "origin"]["significant"]
    assert result["families"]["confirmatory"]["missing"] == ["max vs origin (m, toy)"]
    assert any("declared but not in these runs" in n for n in result["notes"])


def test_a_comparison_identical_by_construction_is_not_tested(tmp_path):
    # per_prompt reports prompt 0's answer, as origin does: per_prompt vs origin is 0 : 0 by construction
    root = _runs(tmp_path / "runs")
    per_prompt = [[False, i < 3] for i in range(20)]  # prompt 0 = origin's (all wrong); prompt 1 right on q0..q2
    _write(root, "per_prompt", set(), per_prompt)
    fam = _family(tmp_path / "family.json", [["flex", "origin"], ["per_prompt", "origin"]])
    result = report([root], family=fam)
    by = _by(result)
    same = by["per_prompt", "origin"]
    assert same["p_value"] is None and same["p_holm"] is None and same["test"] is None
    assert same["family"] is None and "identical by construction" in same["not_tested"]
    assert same["diff_mean"] == 0.0  # still shown
    # origin vs mean_single is tested once; per_prompt vs mean_single has the same answers on both sides
    assert by["origin", "mean_single"]["test"] == "sign" and by["origin", "mean_single"]["p_value"] is not None
    assert by["per_prompt", "mean_single"]["p_value"] is None
    conf = result["families"]["confirmatory"]
    assert conf["k"] == 1 and conf["not_testable"] == ["per_prompt vs origin (m, toy)"]
    assert by["flex", "origin"]["p_holm"] == pytest.approx(0.03125)  # alone in its family
    tested = [r for r in result["comparisons"] if r["p_value"] is not None]
    assert result["families"]["exploratory"]["k"] == len(tested) - 1  # everything tested but flex vs origin


def test_mde_and_power_of_each_test_match_brute_force(tmp_path):
    fam = _family(tmp_path / "family.json", [["flex", "origin"], ["avg", "origin"]])
    by = _by(report([_runs(tmp_path / "runs")], family=fam))
    avg = by["avg", "origin"]  # 20 items, 10 : 0 -> d = .5, Δ = .5, tested at α/k = .05/2
    assert avg["alpha_test"] == pytest.approx(0.025)
    assert avg["power"] == pytest.approx(brute_power(20, 0.5, 0.5, 0.025), abs=1e-9)
    mde = avg["mde_80"]
    assert brute_power(20, 0.5, mde, 0.025) >= 0.8 > brute_power(20, 0.5, mde - 1e-4, 0.025)
    flex = by["flex", "origin"]  # 6 : 0 -> d = .3: even Δ = d reaches only ~40% power: no MDE
    assert brute_power(20, 0.3, 0.3, 0.025) < 0.8 and flex["mde_80"] is None and flex["power_note"]
    assert flex["power"] == pytest.approx(brute_power(20, 0.3, 0.3, 0.025), abs=1e-9)
    explo = by["flex", "avg"]  # exploratory, k = 1: 0 : 4 -> d = .2, Δ = -.2 at α .05
    assert explo["power"] == pytest.approx(brute_power(20, 0.2, 0.2, 0.05), abs=1e-9)


def test_family_files_and_their_errors(tmp_path):
    conf = load_family(ROOT / "benchmarks" / "results" / "confirm" / "confirm_v1.json")  # its "family" object
    assert [(c.method, c.vs) for c in conf.comparisons] == [("flex", "origin"), ("flex", "mean_single"),
                                                              ("avg", "origin")]
    assert conf.scorer == "contains" and conf.alpha == 0.05
    one_cell = parse_family({"comparisons": [{"method": "flex", "vs": "origin", "model": "m", "dataset": "toy"}],
                             "alpha": 0.01})
    assert one_cell.comparisons[0].model == "m" and one_cell.alpha == 0.01
    for bad, message in [({"comparisons": []}, "non-empty"), ({"comparisons": [["flex"]]}, "a comparison is"),
                         ({"comparisons": [["a", "b"]], "alpha": 1.5}, "alpha"),
                         ({"comparisons": [["a", "b"]], "scorer": "bleu"}, "Unknown scorer"),
                         ({"comparisons": [{"method": "a", "vs": "b", "cell": 1}]}, "unknown keys")]:
        with pytest.raises(ConfigError, match=message):
            parse_family(bad, "f.json")
    with pytest.raises(ConfigError, match="no such family file"):
        load_family(tmp_path / "missing.json")
    fam = _family(tmp_path / "family.json", [["flex", "origin"]], scorer="exact")
    with pytest.raises(ConfigError, match="fixes scorer 'exact'"):
        report([_runs(tmp_path / "runs")], family=fam, scorer="contains")
    assert report([tmp_path / "runs"], family=fam)["scorer"] == "exact"  # the family's scorer is the report's


def test_cli_report_family_flag(tmp_path, capsys):
    fam = _family(tmp_path / "family.json", [["flex", "origin"]])
    main(["report", str(_runs(tmp_path / "runs")), "--family", str(fam), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert _by(out)["flex", "origin"]["family"] == "confirmatory"
    assert all("mde_80" in r and "power" in r for r in out["comparisons"])
    main(["report", str(tmp_path / "runs"), "--family", str(fam), "--format", "markdown"])
    text = capsys.readouterr().out
    assert "| flex | origin | 20 |" in text and "| conf |" in text and "- MDE: minimum detectable effect" in text
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "runs"), "--family", str(tmp_path / "nope.json")])
    assert "no such family file" in capsys.readouterr().err
