"""No-model baselines in every report, demonstration copies split, and old run folders still open."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from selfensemble.analysis.baselines import demo_copy_split, no_model_baselines
from selfensemble.analysis.render import render
from selfensemble.analysis.report import report
from selfensemble.store.run_store import RunStore

ROOT = Path(__file__).resolve().parents[1]
CONFIRM_RUNS = ROOT / "benchmarks" / "results" / "confirm" / "runs.tar.gz"

# four items; golds, the pool's majority (prior_answer), the demonstrations' answers, the model's answer
ROWS = [("q0", ["Paris"], "Paris", ["rome", "paris", "paris"], "Paris"),     # prior right, demo majority right
        ("q1", ["Rome"], "Paris", ["rome", "rome", "lyon"], "Rome"),         # prior wrong, demo majority right
        ("q2", ["Lyon"], "Paris", ["nice", "lyon"], "Nice"),                 # tie → first (nice): wrong
        ("q3", ["Dutch Language"], "Dutch", [], "Dutch")]                    # zero-shot: no demo answer; alias right


def _records(with_prior=True):
    out = []
    for rid, gold, prior, demos, pred in ROWS:
        r = {"id": rid, "prompts": ["p"], "gold": gold, "prediction": pred, "correct": pred in gold,
             "demo_answers": demos, "scoring_version": 2}
        if with_prior:
            r["prior_answer"] = prior
        out.append(r)
    return out


def test_baselines_hand_computed():
    rows, notes = no_model_baselines([({"dataset": "toy", "match": "contains"}, _records())], None)
    got = {r["name"]: (r["accuracy"], r["n"]) for r in rows}
    assert got == {"majority_answer": (pytest.approx(2 / 4), 4),  # q0 Paris, q3 Dutch (alias) right
                   "majority_demo_answer": (pytest.approx(2 / 3), 3)}  # q0, q1 right; q2 tie → nice; q3 none
    assert all(r["dataset"] == "toy" and r["scorer"] == "contains" for r in rows) and notes == []
    exact = {r["name"]: r["accuracy"] for r in no_model_baselines([({"dataset": "toy"}, _records())], "exact")[0]}
    assert exact["majority_answer"] == pytest.approx(2 / 4)


def test_old_records_without_prior_answer_get_the_demo_baseline_and_a_note():
    rows, notes = no_model_baselines([({"dataset": "toy", "match": "contains"}, _records(with_prior=False))], None)
    assert [r["name"] for r in rows] == ["majority_demo_answer"]
    assert any("no prior_answer" in n for n in notes)


def test_demo_copy_split_adds_up():
    recs = _records()  # copies: q0 (paris, right), q1 (rome, right), q2 (nice, wrong); q3 has no demos
    split = demo_copy_split(recs, None)
    assert split == {"demo_copy_right_rate": pytest.approx(2 / 4), "demo_copy_wrong_rate": pytest.approx(1 / 4)}


def _write(root: Path, method: str, records: list[dict]) -> None:
    with RunStore(root / method, {"method": method, "dataset": "toy", "match": "contains", "model": "m"}) as store:
        for r in records:
            store.append(r)


def test_report_shows_the_baselines_in_json_and_tables(tmp_path, capsys):
    _write(tmp_path, "origin", _records())
    result = report([tmp_path], None)
    assert [set(b) >= {"dataset", "name", "accuracy", "n"} for b in result["no_model_baselines"]] == [True, True]
    row = result["runs"][0]
    assert row["demo_copy_rate"] == pytest.approx(3 / 4)
    assert row["demo_copy_right_rate"] + row["demo_copy_wrong_rate"] == pytest.approx(row["demo_copy_rate"])
    md = render(result, "markdown")
    assert "No-model baselines" in md and "| toy | majority_demo_answer | 3 | 0.667 |" in md
    assert "75.0% (50.0% right)" in md
    assert json.loads(render(result, "json"))["no_model_baselines"][0]["name"] == "majority_answer"


def test_the_checked_in_confirmatory_runs_still_open_in_report(tmp_path):
    """Old run folders (flat manifests, records before prior_answer, scoring_version and N-M golds) open:
    the baselines they can give, and notes saying what they lack."""
    with tarfile.open(CONFIRM_RUNS) as tar:
        members = [m for m in tar.getmembers() if "/smollm2-135m/webqa/" in m.name and "/origin/" in m.name]
        tar.extractall(tmp_path, members=members, filter="data")
    [run] = list(tmp_path.glob("*/smollm2-135m/webqa/origin"))
    result = report([run], None)
    assert result["runs"][0]["n"] == 300
    assert [b["name"] for b in result["no_model_baselines"]] == ["majority_demo_answer"]
    assert any("no prior_answer" in n for n in result["notes"])
    assert any("before the gold alias rule" in n for n in result["notes"])  # "Dutch Language" golds rescored
    # as written 19/300 right under contains; 12 more once "X Language" also answers as "X" (docs/experiments.md)
    assert result["runs"][0]["accuracy"] == pytest.approx(31 / 300)
